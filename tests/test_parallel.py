"""One run over several devices (parallel.py), on forced CPU devices.

XLA's device count is fixed when JAX starts, so each case runs in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=2`. The expected values are the same run
on one device: splitting the batch changes only the order of XLA's sums, so metrics agree
to float32 rounding of those sums, not bit for bit.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import pytest

import mimic_mjx

from mimic_mjx import parallel
from mimic_mjx.errors import MimicError

pytestmark = [pytest.mark.timeout(1800), pytest.mark.slow]

# Tolerances, measured on the 2-core AMD EPYC (2026-12-07). The policy's matmuls at 8 rows per
# device round differently from 16 rows on one (~1e-7), and the humanoid's contacts amplify that
# within one rollout (observations 0.03 apart after a step in one environment), so the first
# iteration's metrics agree to 6e-3 (advantage std, value loss) and 1e-4 for the sweep. The
# TRPO update then starts from slightly different advantages, and later iterations part further
# (1-3% at iteration 2, 20% at 3): past the first update a 2-device run is another run of the
# same distribution, not the same run, so only iteration 1 is compared across layouts.
RTOL = 2e-2
ATOL = 1e-5
# Resuming on another device count continues the same state: the iteration run on 1 device
# from the 2-device checkpoint agrees with the one run on 2 to the rollout's rounding (9e-6).
RTOL_RESUME = 1e-4
KEYS = ("training/reward_mean", "training/advantage_std", "losses/kl", "losses/entropy", "losses/value_loss",
        "training/episode_length", "losses/surrogate_after")

SCRIPT = textwrap.dedent(r"""
    import json, pathlib, sys
    import jax
    from mimic_mjx import config as cfglib, runconfig, runner, train
    physics, out, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    # The tests' compile cache serves the MJX member's resumed halves (native programs hold a
    # host callback, which JAX never persists: they compile each time).
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    TINY = ["num_envs=16", "horizon=16", "network.policy_hidden=[32,32]", "network.value_hidden=[32,32]",
            "trpo.value_minibatches=4", "trpo.fvp_subsample=1", "checkpoint_every=2", f"env.physics={physics}",
            "env.physics_threads=1"]
    def run(name, devices, iterations, resume=False):
        config = cfglib.load_config(runconfig.TrainConfig, None, TINY + [f"devices={devices}", f"iterations={iterations}"])
        result = runner.train(config, f"{out}/{name}", resume=resume, progress=lambda line: None)
        placed[name] = len(result.state.env_state.obs.devices())
        return [{k: h[k] for k in h if isinstance(h[k], float)} for h in result.history]
    placed = {}
    runs = {"one": run("one", 1, 3), "two": run("two", 2, 3)}
    if physics == "mjx":  # MJX compiles for minutes on a CPU: the layouts once, the resume and sweep with native
        print(json.dumps({**runs, "devices": placed}))
        sys.exit(0)
    first_two = run("switch", 2, 2)
    import shutil
    shutil.copytree(f"{out}/switch", f"{out}/switch4")  # the same 2-device checkpoint, resumed on 4
    runs["two_then_one"] = first_two + run("switch", 1, 3, resume=True)
    runs["two_then_four"] = first_two + run("switch4", 4, 3, resume=True)
    # A 4-member sweep (2 reward scales x 2 seeds) of the same tiny run, on 1 and on 2 devices.
    from mimic_mjx import sweep as sweep_lib
    (pathlib.Path(out) / "base.yaml").write_text(
        f"num_envs: 16\nhorizon: 16\ncheckpoint_every: 2\nenv: {{physics: {physics}, physics_threads: 1, episode_seconds: 0.5}}\n"
        "network: {policy_hidden: [32, 32], value_hidden: [32, 32]}\ntrpo: {value_minibatches: 4, fvp_subsample: 1}\n")
    for devices in (1, 2):
        (pathlib.Path(out) / f"sweep{devices}.yaml").write_text(
            f"train: {out}/base.yaml\nset: [devices={devices}]\ngrid: {{reward.pose_scale: [2.0, 8.0]}}\n"
            "seeds: [0, 1]\niterations: 2\neval_every: 2\n")
        result = sweep_lib.run(sweep_lib.load_sweep(f"{out}/sweep{devices}.yaml"), f"{out}/s{devices}",
                               progress=lambda line: None)
        runs[f"sweep{devices}"] = [json.loads(line) for line in open(f"{out}/s{devices}/metrics.jsonl")]
        placed[f"sweep{devices}"] = len(result["state"].env_state.obs.devices())
    # 3 members on 2 devices (gcd 1): each member's environments split over both devices.
    (pathlib.Path(out) / "sweep3.yaml").write_text(
        f"train: {out}/base.yaml\nset: [devices=2]\ngrid: {{reward.pose_scale: [2.0, 8.0, 32.0]}}\n"
        "seeds: [0]\niterations: 1\neval_every: 1\n")
    result = sweep_lib.run(sweep_lib.load_sweep(f"{out}/sweep3.yaml"), f"{out}/s3", progress=lambda line: None)
    runs["sweep3"] = [json.loads(line) for line in open(f"{out}/s3/metrics.jsonl")]
    placed["sweep3"] = len(result["state"].env_state.obs.devices())
    from mimic_mjx import parallel
    try:
        parallel.make_mesh(2, 15, members=3)
    except Exception as e:
        refusal = str(e)
    print(json.dumps({**runs, "devices": placed, "refusal": refusal,
                      "meshes": {name: dict(parallel.make_mesh(2, 16, members=m).shape) for name, m in
                                 (("sweep2", 4), ("sweep3", 3))},
                      "spec3": list(result["state"].env_state.obs.sharding.spec)}))
""")


def _forced(args, devices=2, timeout=1700):
    # A user's XLA_FLAGS replace mimic_mjx's CPU flags (mimic_mjx/__init__.py), so add them back.
    flags = f"{mimic_mjx.CPU_XLA_FLAGS} --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags.strip())
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _close(a: dict, b: dict, rtol: float = RTOL) -> list[str]:
    """The KEYS on which `a` and `b` differ by more than the tolerance (empty: they agree)."""
    return [f"{k}: {a[k]} vs {b[k]}" for k in KEYS if abs(a[k] - b[k]) > ATOL + rtol * abs(b[k])]


@pytest.mark.parametrize("physics", ["native", "mjx"])
def test_two_devices_train_as_one_and_resume_on_one(tmp_path, physics):
    # Four forced devices: the runs name their own count (1, 2, or 4 for the second resume).
    out = _forced(["-c", SCRIPT, physics, str(tmp_path), jax.config.jax_compilation_cache_dir or str(tmp_path / "cache")],
                  devices=4)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(runs["one"]) == len(runs["two"]) == 3
    assert not _close(runs["two"][0], runs["one"][0]), _close(runs["two"][0], runs["one"][0])
    assert all(math.isfinite(v) for run in (runs["one"], runs["two"]) for row in run for v in row.values())
    if physics == "mjx":
        assert runs["devices"] == {"one": 1, "two": 2}
        return
    # Checkpointed at iteration 2 on 2 devices, resumed and finished on 1: the first two
    # iterations are the 2-device run's own, the third agrees with its third.
    for switch in (runs["two_then_one"], runs["two_then_four"]):  # ... and on 4
        assert [{k: r[k] for k in KEYS} for r in switch[:2]] == [{k: r[k] for k in KEYS} for r in runs["two"][:2]]
        assert not _close(switch[2], runs["two"][2], RTOL_RESUME), _close(switch[2], runs["two"][2], RTOL_RESUME)
    # The sweep's members, one metrics line each per iteration, on 2 devices as on 1.
    assert len(runs["sweep2"]) == len(runs["sweep1"]) == 8
    for a, b in zip(runs["sweep2"], runs["sweep1"]):
        assert (a["member"], a["training/iteration"]) == (b["member"], b["training/iteration"])
        if a["training/iteration"] == 1:
            assert not _close(a, b), _close(a, b)
    # The environments really were split: the last state of each run lives on this many devices.
    assert runs["devices"] == {"one": 1, "two": 2, "switch": 1, "switch4": 4, "sweep1": 1, "sweep2": 2, "sweep3": 2}
    # The sweep's layouts, by hand: 4 members on 2 devices, gcd 2: one member group per device,
    # environments whole; 3 members, gcd 1: one group, each member's environments over both.
    assert runs["meshes"] == {"sweep2": {"members": 2, "batch": 1}, "sweep3": {"members": 1, "batch": 2}}
    assert runs["spec3"] == ["members", "batch"]
    # Members 0 and 1 of the 3-member sweep (pose_scale 2 and 8, seed 0) are the 4-member
    # sweep's members 0 and 2 (grid x seeds, seeds fastest): their first iteration agrees.
    first = {r["member"]: r for r in runs["sweep1"] if r["training/iteration"] == 1}
    for r in runs["sweep3"]:
        if r["member"] < 2:
            assert not _close(r, first[2 * r["member"]]), _close(r, first[2 * r["member"]])
    assert runs["refusal"] == ("num_envs = 15 does not split evenly over the 2 devices each member gets "
                               "(3 members on 2 devices: 1 group(s) of 2); choose a multiple of 2")


def test_a_layout_this_machine_cannot_run_is_one_line():
    with pytest.raises(MimicError, match=r"^devices = 3, but JAX sees 1 CPU device\(s\) here$"):
        parallel.make_mesh(3, 16)
    out = _forced(["-m", "mimic_mjx", "train", "--config", "cpu_tiny", "--set", "devices=2", "--set", "num_envs=15",
                   "--out", "unused"], timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: num_envs = 15 does not split evenly over 2 devices (devices = 2); choose a multiple of 2"]


def test_bench_times_the_train_row_on_one_and_two_devices(tmp_path):
    # The same global batch (4 envs) on 1 and on 2 forced devices, in one bench run.
    out = _forced(["-m", "mimic_mjx", "bench", "--config", "cpu_tiny", "--rows", "train", "--physics", "native",
                   "--batch", "4", "--steps", "1", "--devices", "1,2", "--json"], timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    one, two = report["rows"]
    assert [(r["name"], r["batch"], r["devices"]) for r in (one, two)] == [("train", 4, 1), ("train", 4, 2)]
    assert one["layout"] == "4 envs on one device" and two["layout"] == "2 envs on each of 2 device(s)"
    assert two["over_one_device"] == pytest.approx(two["steps_per_s"] / one["steps_per_s"], rel=1e-6)
    assert "--devices 1,2" in report["command"]
