"""tools/gpu_check.sh: its summary on hand-made stage outputs, its time budget, and (slow) its
CPU dry run end to end, so the first run on a GPU does not turn into debugging."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
_spec = importlib.util.spec_from_file_location("gpu_check_summary", ROOT / "tools" / "gpu_check_summary.py")
summary_lib = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summary_lib)

# What the device tool returns from $OUT: at most 8 files, no deeper than $OUT/a/b/file, names
# of letters, digits, '.', '_' and '-' (its README's Limits).
MAX_FILES = 8
NAME = re.compile(r"[A-Za-z0-9._-]+")


def _check_out_dir(out: pathlib.Path) -> list[str]:
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= MAX_FILES, files
    for rel in files:
        assert len(rel.parts) <= 3 and all(NAME.fullmatch(part) for part in rel.parts), rel
        assert (out / rel).stat().st_size <= 16 * 1024 * 1024, rel
    return sorted(str(f) for f in files)


def _has_policy_export() -> bool:
    try:
        from mimic_mjx.policy import export  # noqa: F401
    except ImportError:
        return False
    return True


def _run(env_overrides: dict, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update({"JAX_PLATFORMS": "cpu", "PYTHON": sys.executable, **env_overrides})
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------ the summary


def test_partial_bench_rows_are_read_from_progress_lines():
    # What bench prints on stderr before a timeout cuts it off (bench.Bench.time_row's lines).
    text = ("[bench] batch 4096: physics: compiling ...\n"
            "[bench] batch 4096: physics: compiled in 31.5 s; warm-up call ...\n"
            "[bench] batch 4096: physics: 2,621,440 physics steps/s (1,310,720 steps in 0.50 s)\n"
            "[bench] batch 4096: env: compiled in 40.0 s; warm-up call ...\n")
    rows = {r["name"]: r for r in summary_lib.rows_from_progress(text)}
    assert rows["physics"] == {"name": "physics", "batch": 4096, "compile_s": 31.5, "steps_per_s": 2621440.0,
                               "unit": "physics steps/s", "partial": True}
    assert rows["env"] == {"name": "env", "batch": 4096, "compile_s": 40.0, "partial": True}  # no rate yet


def test_precision_cost_compares_the_same_row_and_batch():
    compact = {"bench-4096": {"rows": [{"name": "train", "batch": 4096, "steps_per_s": 200.0, "compile_s": 60.0},
                                       {"name": "env", "batch": 4096, "steps_per_s": 900.0}]},
               "precision-4096": {"rows": [{"name": "train", "batch": 4096, "steps_per_s": 250.0, "compile_s": 58.0}]}}
    (cost,) = summary_lib.precision_cost(compact)
    # 250 / 200 = 1.25: TF32 would be 25% faster on this (made-up) row.
    assert cost == {"row": "train", "batch": 4096, "highest_steps_per_s": 200.0, "default_steps_per_s": 250.0,
                    "default_over_highest": 1.25, "highest_compile_s": 60.0, "default_compile_s": 58.0}


def test_summary_of_hand_made_stage_outputs(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "logs").mkdir(parents=True)
    (work / "stages.tsv").write_text("probe\tok\t0\t3\t60\tpython probe\n"
                                     "bench-2\ttimeout\t124\t150\t150\tpython -m mimic_mjx bench\n"
                                     "train\tskipped: 20 s of the budget left\t\t0\t0\t\n")
    (work / "logs" / "bench-2.err").write_text("[bench] batch 2: env: compiled in 1.5 s; warm-up call ...\n")
    (work / "walk").mkdir()
    (work / "walk" / "metrics.jsonl").write_text(
        "".join(json.dumps({"training/iteration": i, "charts/SPS": sps}) + "\n" for i, sps in ((1, 5.0), (2, 40.0), (3, 50.0))))
    summary = summary_lib.summarize(work, out, dry_run=True, budget=540, stages="probe bench-2 train", elapsed=153)
    assert [s["status"] for s in summary["stages"]] == ["ok", "timeout", "skipped: 20 s of the budget left"]
    assert summary["stages"][1]["rc"] == 124 and summary["stages"][2]["rc"] is None
    assert summary["bench"]["bench-2"]["rows"] == [{"name": "env", "batch": 2, "compile_s": 1.5, "partial": True}]
    assert summary["train"]["iterations"] == 3
    assert summary["train"]["median_SPS_after_first"] == 50.0  # of [40, 50]: the first iteration compiles
    assert _check_out_dir(out) == ["bench.json", "summary.json", "summary.md"]
    assert "| bench-2 | timeout | 150 | 150 |" in (out / "summary.md").read_text()


# ---------------------------------------------------------------------- the script's shell


@pytest.mark.timeout(60)
def test_unknown_argument_is_refused():
    run = _run({}, "--fast")
    assert run.returncode == 2 and "unknown argument --fast" in run.stderr


@pytest.mark.timeout(120)
def test_stages_past_the_budget_are_skipped_and_recorded(tmp_path):
    # A zero budget: every stage is skipped before it starts (nothing is compiled), and the
    # summary still says so. The unknown stage name is recorded too.
    run = _run({"OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"), "GPU_CHECK_BUDGET_S": "0",
                "GPU_CHECK_STAGES": "probe bench-2 train sweep nonsense"}, "--dry-run")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status.pop("nonsense") == "skipped: unknown stage"
    assert status == dict.fromkeys(("probe", "bench-2", "train", "sweep"), "skipped: 0 s of the budget left")
    _check_out_dir(tmp_path / "out")


@pytest.mark.timeout(120)
def test_gpu_training_is_skipped_when_the_budget_cannot_hold_a_minute_of_it(tmp_path):
    # GPU mode (no --dry-run), nothing compiled: 100 s left, minus the eval stage's 90 s limit
    # and a 30 s margin, leaves under a minute to train; eval then has no checkpoint.
    run = _run({"OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"), "GPU_CHECK_BUDGET_S": "100",
                "GPU_CHECK_STAGES": "train eval"})
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (train, evaluation) = summary["stages"]
    assert re.fullmatch(r"skipped: \d+ s left, under 1 minute of training after the reserves", train["status"])
    assert evaluation["status"] == "skipped: no checkpoint in the training run"


# ------------------------------------------------------------------------ the CPU dry run


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_dry_run_runs_every_stage_on_cpu(tmp_path):
    # Every stage at tiny sizes (mimic-mjx bench's env row at batch 2, native physics; train,
    # eval and sweep of walk with 2 environments per run or member): 6.1 minutes on the 2-core
    # machine with a cold compile cache. The cache is the test suite's, so a rerun pays less.
    # The check's own budget (1500 s) ends it before this test's timeout.
    cache = os.environ.get("MIMIC_MJX_TEST_CACHE", str(pathlib.Path.home() / ".cache" / "mimic_mjx" / "jax_test_cache"))
    out = tmp_path / "out"
    run = _run({"OUT": str(out), "GPU_CHECK_WORK": str(tmp_path / "work"), "JAX_COMPILATION_CACHE_DIR": cache,
                "MIMIC_MJX_COMPILE_CACHE": cache, "GPU_CHECK_BUDGET_S": "1500"}, "--dry-run", timeout=1700)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status.pop("install") in ("ok", "skipped: no .device/whl (run tools/prepare_device.sh)")
    has_export = _has_policy_export()
    assert status.pop("export") == ("ok" if has_export else "skipped: this checkout has no mimic_mjx.policy.export")
    assert status == dict.fromkeys(("probe", "bench-2", "precision-2", "train", "eval", "sweep"), "ok"), \
        (out / "summary.md").read_text()
    assert summary["probe"]["matmul_precision"] == "highest"
    for stage in ("bench-2", "precision-2"):
        (row,) = summary["bench"][stage]["rows"]
        assert row["name"] == "env" and row["batch"] == 2 and row["steps_per_s"] > 0
    assert summary["precision_cost"][0]["row"] == "env"
    bench = json.loads((out / "bench.json").read_text())
    assert set(bench) == {"bench-2", "precision-2"}
    # The time limit (0.01 minutes) stops training after its first iteration, with a checkpoint.
    train = summary["train"]
    assert train["iterations"] == 1 and train["checkpoints"] == [1]
    assert any(line.startswith("time limit") for line in train["log"]), train["log"]
    assert 0.0 <= summary["eval"]["normalized_return"] <= 1.0
    assert summary["sweep"]["members"] == 8 and summary["sweep"]["iterations"] == 1
    files = _check_out_dir(out)
    assert {"summary.json", "summary.md", "bench.json", "logs.tgz", "walk_run.tgz", "walk_checkpoint.tgz",
            "sweep_run.tgz"} | ({"walk_policy.tgz"} if has_export else set()) == set(files)
