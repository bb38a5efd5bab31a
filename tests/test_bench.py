"""`mimic-mjx bench`: the pure helpers, flag errors, and the JSON shape on a tiny run.

Only one test compiles anything (the physics row at batch 2: one scanned `mjx.step`); the
ratios, table and state builders are checked on hand-made inputs. No timing assertions.
"""

import argparse
import json
import subprocess
import sys

import mujoco
import pytest

from mimic_mjx import bench, brax_adapter
from mimic_mjx.bench import harness
from mimic_mjx import model as model_lib
from mimic_mjx import motion
from mimic_mjx.errors import MimicError


def _args(*argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


# ------------------------------------------------------------------------------ flags


def test_parse_batches_and_rows():
    assert bench.parse_batches("128,1024, 8192") == (128, 1024, 8192)
    # Rows come back in the canonical order, whatever order they were asked in.
    assert bench.parse_rows("native,physics") == ("physics", "native")
    assert bench.parse_steps("96") == 96
    assert bench.parse_devices("1, 1", (3, 5)) == (1,)  # repeats dropped; 1 divides every batch


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch", "abc"], "--batch 'abc': expected positive integers separated by commas"),
        (["--batch", "0"], "--batch '0': every batch size must be >= 1"),
        (["--batch", "32,"], "--batch '32,': expected positive integers"),
        (["--rows", "physics,warp"],
         "--rows 'physics,warp': unknown row warp (known: physics, native, env, policy, train, sweep, brax)"),
        (["--steps", "0"], "--steps '0': must be >= 1"),
        (["--steps", "x"], "--steps 'x': expected a positive integer"),
        (["--profile", "/dev/null/prof"], "--profile '/dev/null/prof': cannot create the folder (Not a directory)"),
        (["--physics", "warp"], "--physics 'warp': expected one or more of mjx, native, comma-separated"),
        # The test process has one CPU device (tests/test_parallel.py forces two in a subprocess).
        (["--devices", "1,2"], "--devices '1,2': 2 device(s), but JAX sees 1 here"),
        (["--devices", "0"], "--devices '0': every device count must be >= 1"),
        (["--devices", "one"], "--devices 'one': expected positive integers separated by commas"),
        (["--members", "0", "--rows", "sweep"], "--members '0': every member count must be >= 1"),
        (["--members", "2,3", "--rows", "sweep"], "--members '2,3': expected one member count"),
        (["--members", "7", "--rows", "sweep", "--batch", "64,448"],
         "--members 7: the sweep row splits each batch over the members, and 7 does not divide --batch 64"),
    ],
)
@pytest.mark.timeout(60)
def test_bad_flags_are_one_line_errors(argv, message):
    with pytest.raises(MimicError) as err:
        bench.run_cli(_args(*argv))  # validation happens before anything is built or compiled
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.timeout(120)
def test_cli_bad_batch_through_mimic_mjx():
    out = subprocess.run([sys.executable, "-m", "mimic_mjx", "bench", "--batch", "abc"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    expected = "error: --batch 'abc': expected positive integers separated by commas, e.g. 128,1024"
    assert out.stderr.strip().splitlines() == [expected]


# ------------------------------------------------------------------------ arithmetic


def test_chunk_count_rounds_up_to_whole_horizons():
    assert bench.chunk_count(96, 32) == 3
    assert bench.chunk_count(1, 32) == 1
    assert bench.chunk_count(33, 32) == 2


def test_env_physics_ratio_and_update_fraction_by_hand():
    # 1000 env steps/s x 5 substeps = 5000 physics steps/s inside the env, against 10000 raw.
    assert bench.env_physics_ratio(1000.0, 5, 10000.0) == pytest.approx(0.5)
    # Iteration: 1/800 s per env step; rollout alone: 1/1000 s. Update: 0.25 ms of 1.25 ms = 20%.
    assert bench.update_fraction(800.0, 1000.0) == pytest.approx(0.2)


def _row(name, batch, sps, physics=None):
    return {"name": name, "batch": batch, "steps_per_s": sps, "physics": physics}


def test_time_split_by_hand():
    # Per env step: physics 5 substeps / 10000 = 0.5 ms, env 1 ms, rollout 2 ms, iteration 4 ms.
    split = bench.time_split(8, 5, train_sps=250.0, policy_sps=500.0, env_sps=1000.0, physics_sps=10000.0)
    assert split == {"physics": 0.125, "env_other": 0.125, "policy": 0.25, "update": 0.5}
    assert bench.time_split(8, 5, 250.0, None, 1000.0, 10000.0) is None


def test_add_ratios_compares_backends_at_the_same_batch():
    rows = [_row(n, 8, sps, "mjx") for n, sps in (("physics", 4000.0), ("env", 500.0), ("policy", 400.0),
                                                     ("train", 200.0))]
    rows += [_row(n, 8, sps, "native") for n, sps in (("physics", 40000.0), ("env", 5000.0), ("policy", 4000.0),
                                                         ("train", 2000.0))]
    out = {(r["name"], r["physics"]): r for r in bench.add_ratios(rows, substeps=5)}
    assert out["train", "native"]["native_over_mjx"] == pytest.approx(10.0)  # 2000 / 200
    assert "native_over_mjx" not in out["train", "mjx"]
    # Each backend's split from its own rows: native physics 5/40000 of 1/2000 s = 25%.
    assert out["train", "native"]["time_split"]["physics"] == pytest.approx(0.25)
    assert out["train", "mjx"]["time_split"]["physics"] == pytest.approx(0.25)  # 5/4000 of 1/200
    assert out["env", "native"]["ratio"] == pytest.approx(5000 * 5 / 40000)


def test_add_ratios_pairs_rows_of_the_same_batch():
    rows = [
        _row("physics", 8, 10000.0), _row("native", 8, 20000.0), _row("env", 8, 1000.0),
        _row("policy", 8, 500.0), _row("train", 8, 400.0), _row("brax", 8, 200.0),
        _row("physics", 16, 30000.0), _row("train", 16, 900.0), _row("brax", 16, None),
    ]  # fmt: skip
    out = {(r["name"], r["batch"]): r for r in bench.add_ratios(rows, substeps=5)}
    assert out["env", 8]["ratio"] == pytest.approx(0.5)  # 1000 * 5 / 10000
    assert out["policy", 8]["ratio"] == pytest.approx(0.25)  # 500 * 5 / 10000
    assert out["native", 8]["ratio"] == pytest.approx(0.5)  # MJX 10000 / native 20000
    assert out["train", 8]["update_fraction"] == pytest.approx(0.2)  # 1 - 400 / 500
    assert out["brax", 8]["ratio"] == pytest.approx(2.0)  # 400 / 200
    # Batch 16 has no policy row and a skipped Brax row: nothing is paired across batches.
    assert out["train", 16]["update_fraction"] is None
    assert "ratio" not in out["brax", 16]
    assert all("ratio_of" in r for r in out.values() if "ratio" in r)


def test_add_ratios_prefers_the_interleaved_measurement():
    # The env row was timed alternating with the physics function, which then ran at 8000/s
    # (the machine got busier than during the physics row's own 10000/s).
    rows = [
        _row("physics", 8, 10000.0), {**_row("env", 8, 800.0), "paired_with": "physics", "pair_steps_per_s": 8000.0},
        _row("policy", 8, 500.0), {**_row("train", 8, 300.0), "paired_with": "policy", "pair_steps_per_s": 400.0},
    ]  # fmt: skip
    out = {r["name"]: r for r in bench.add_ratios(rows, substeps=5)}
    assert out["env"]["ratio"] == pytest.approx(0.5)  # 800 * 5 / 8000, not / 10000
    assert out["env"]["ratio_of"].endswith("(interleaved)")
    assert out["policy"]["ratio_of"].endswith("(separate runs)")
    assert out["train"]["update_fraction"] == pytest.approx(0.25)  # 1 - 300 / 400


def test_format_report_prints_rows_and_derived_lines():
    rows = bench.add_ratios([
        {**_row("physics", 8, 12345.0), "unit": "physics steps/s", "compile_s": 40.0, "peak_mem_bytes": None},
        {**_row("env", 8, 1000.0), "unit": "env steps/s", "compile_s": 90.0, "peak_mem_bytes": None},
        {**_row("brax", 8, None), "unit": "env steps/s", "compile_s": None, "peak_mem_bytes": None,
         "skipped": "brax not installed"},
    ], substeps=5)  # fmt: skip
    report = {"device": "CPU: test (2 cores)", "date": "today", "versions": {"jax": "0"},
              "settings": {"model_summary": "humanoid3d"}, "rows": rows, "notes": ["a note"]}
    text = bench.format_report(report)
    assert "12.3K" in text and "brax not installed" in text and "a note" in text
    assert "env (batch 8): env steps/s x 5 substeps / physics steps/s (separate runs) = 0.405" in text  # 1000*5/12345


def test_a_rows_call_spread_is_min_median_max_of_its_calls():
    timed = harness._Timed(compiled=None, carry=None, steps=1, durations=[0.5, 0.2, 0.9, 0.4])
    assert timed.spread() == [0.2, 0.45, 0.9]  # median of an even count: the middle two's mean
    timed.restart()
    assert (timed.seconds, timed.calls) == (0, 0)


# -------------------------------------------------------------------- initial states


@pytest.mark.timeout(120)
def test_initial_physics_states_hold_mocap_poses_above_the_floor():
    clip = motion.load_clip("walk")
    m = model_lib.load_model()
    qpos, qvel, ctrl = bench.initial_physics_states(clip, m, 6, seed=3)
    assert qpos.shape == (6, m.nq) and qvel.shape == (6, m.nv) and ctrl.shape == (6, m.nu)
    d = mujoco.MjData(m)
    for b in range(6):
        # ctrl is the PD target of each actuator's own hinge: the pose is held.
        for a in range(m.nu):
            assert ctrl[b, a] == qpos[b, m.jnt_qposadr[m.actuator_trnid[a, 0]]]
        # Plain MuJoCo: after the lift no geom is inside the floor (lowest point >= 0).
        d.qpos[:] = qpos[b]
        mujoco.mj_kinematics(m, d)
        assert motion.geom_lowest_z(m, d).min() >= -1e-9


# ------------------------------------------------------------------------- a tiny run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_json_shape_on_a_tiny_run(capsys, tmp_path):
    # One compile (the physics row); native MuJoCo needs none. --steps 1 -> one chunk of the preset's
    # horizon: cpu_tiny.yaml says `horizon: 32` (without --config, bench takes train's preset,
    # whose horizon is its own business).
    args = _args("--batch", "2", "--rows", "physics,native", "--steps", "1", "--json", "--profile", str(tmp_path),
                 "--physics", "mjx,native", "--config", "cpu_tiny")
    assert bench.run_cli(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report["device"], str) and report["device"]
    assert {"versions", "settings", "loadavg", "notes", "command"} <= set(report)
    assert report["settings"]["substeps"] == 5 and report["settings"]["control_steps_per_row"] == 32
    assert [(r["name"], r["batch"], r.get("physics")) for r in report["rows"]] == [
        ("physics", 2, "mjx"), ("physics", 2, "native"), ("native", 2, None)]
    physics, physics_native, native = report["rows"]
    assert physics_native["native_over_mjx"] == pytest.approx(
        physics_native["steps_per_s"] / physics["steps_per_s"], rel=1e-6)
    for row in report["rows"]:
        assert {"name", "batch", "steps_per_s", "compile_s", "peak_mem_bytes", "unit"} <= set(row)
        assert row["steps_per_s"] > 0 and row["unit"] == "physics steps/s"
        # 2 envs x 32 control steps x 5 substeps
        assert row["timed_steps"] == 320
    assert physics["compile_s"] > 0 and native["compile_s"] is None
    for row in (physics, physics_native):  # one timed call: its min, median and max are that call
        assert row["call_s"] == pytest.approx([row["run_s"]] * 3, abs=1e-3)
    assert physics["program_bytes"] > 0
    if report["backend"] == "cpu":
        assert physics["peak_mem_bytes"] is None
    assert native["ratio"] == pytest.approx(physics["steps_per_s"] / native["steps_per_s"], rel=1e-6)
    # --profile: a jax.profiler trace of one physics call (native has no JAX program to trace).
    assert list((tmp_path / "physics-mjx-2").rglob("*.xplane.pb"))
    assert list((tmp_path / "physics-native-2").rglob("*.xplane.pb"))
    assert not (tmp_path / "native-2").exists()


@pytest.mark.timeout(120)
@pytest.mark.skipif(brax_adapter.brax_unavailable() is None, reason="brax is installed: the row would train")
def test_brax_row_skips_with_a_reason_when_brax_is_missing():
    report = bench.run_benchmark((2,), ("brax",), steps=1)
    (row,) = report["rows"]
    assert row["steps_per_s"] is None and row["skipped"].startswith("brax not installed")


@pytest.mark.timeout(120)
def test_a_new_row_is_one_registered_function(request):
    """The harness finds a row by its registration alone: flags, run order and report."""
    from mimic_mjx.bench import harness

    request.addfinalizer(lambda: harness.REGISTRY.pop("toy", None))
    calls = []

    @harness.row("toy", unit="toys/s", per_backend=True)
    def run_toy(b, batch):
        calls.append((b.physics, batch))
        return harness.result("toy", batch, 10.0 * batch, None, 1.0, 10 * batch, physics=b.physics)

    assert bench.parse_rows("toy,native") == ("native", "toy")
    report = bench.run_benchmark((3,), ("toy",), steps=1, physics=("native",))
    assert calls == [("native", 3)]
    (row,) = report["rows"]
    assert (row["name"], row["unit"], row["steps_per_s"], row["physics"]) == ("toy", "toys/s", 30.0, "native")
    assert "toy" in bench.format_report(report)
