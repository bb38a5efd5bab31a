"""tools/gpu_check.sh's reporting: the probe of the machine, and the summary of a check.

    python tools/gpu_check_summary.py --probe PROBE.json
        versions, devices, XLA flags and matmul precision as `mimic_mjx` sets them (imports
        mimic_mjx, jax, mujoco: a failure here means the rest of the check cannot run)
    python tools/gpu_check_summary.py --work WORK --out OUT [--dry-run 0/1 --budget S --stages "..."]
        reads WORK (stages.tsv, probe.json, bench-*.json / precision-*.json, logs/, walk/,
        eval.json, sweep/) and writes OUT/summary.json, OUT/summary.md and OUT/bench.json

The summary part uses the standard library only, so it still reports when the project or JAX
cannot be imported. A bench stage that timed out has no JSON; its finished rows are read back
from the progress lines it printed on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re
import sys

# Bench numbers kept per row in the summary (the full reports go to bench.json).
ROW_KEYS = ("name", "batch", "steps_per_s", "unit", "compile_s", "peak_mem_bytes", "program_bytes", "ratio",
            "ratio_of", "update_fraction", "skipped")
# Training metrics kept from the first and last iteration.
TRAIN_KEYS = ("training/iteration", "training/env_steps", "charts/SPS", "charts/wall_time_s",
              "training/reward_mean", "training/reward_fraction_of_max", "training/episode_length",
              "training/fall_fraction", "losses/kl", "losses/explained_variance", "trpo/accepted")
_PROGRESS_RATE = re.compile(r"\[bench\] batch (\d+): (\w+): ([\d,]+) ([a-z ]+steps/s)")
_PROGRESS_COMPILE = re.compile(r"\[bench\] batch (\d+): (\w+): compiled in ([\d.]+) s")


def probe(path: pathlib.Path) -> None:
    import importlib.metadata as md
    import os
    import platform

    import mimic_mjx  # first: it sets XLA_FLAGS and the matmul precision
    import jax
    import mujoco
    from mujoco import mjx  # noqa: F401  (the import that needs jax + mujoco together)

    versions = {}
    for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "chex",
                 "orbax-checkpoint", "numpy", "scipy", "pyyaml", "mujoco", "mujoco-mjx", "brax"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    devices = jax.devices()
    out = {
        "python": platform.python_version(), "versions": versions, "mujoco_import": mujoco.__version__,
        "backend": jax.default_backend(), "devices": [f"{d.platform}: {d.device_kind}" for d in devices],
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "mimic_mjx_cpu_xla_flags": mimic_mjx.CPU_XLA_FLAGS,
        "matmul_precision": jax.config.jax_default_matmul_precision,
        "JAX_DEFAULT_MATMUL_PRECISION": os.environ.get("JAX_DEFAULT_MATMUL_PRECISION"),
        "cpu_count": os.cpu_count(),
    }
    stats = devices[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        out["device_memory_limit_bytes"] = stats["bytes_limit"]
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


# ------------------------------------------------------------------------------ summary


def _read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_stages(work: pathlib.Path) -> list[dict]:
    stages = []
    path = work / "stages.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, rc, wall, limit, command = (line.split("\t") + [""] * 6)[:6]
        stages.append({"name": name, "status": status, "rc": int(rc) if rc else None, "wall_s": int(wall or 0),
                       "limit_s": int(limit or 0), "command": command})
    return stages


def rows_from_progress(text: str) -> list[dict]:
    """Rows a bench printed before it was stopped: `[bench] batch B: ROW: N unit` lines."""
    rows: dict[tuple, dict] = {}
    for batch, name, seconds in _PROGRESS_COMPILE.findall(text):
        rows.setdefault((name, int(batch)), {"name": name, "batch": int(batch)})["compile_s"] = float(seconds)
    for batch, name, rate, unit in _PROGRESS_RATE.findall(text):
        row = rows.setdefault((name, int(batch)), {"name": name, "batch": int(batch)})
        row.update(steps_per_s=float(rate.replace(",", "")), unit=unit.strip())
    return [dict(r, partial=True) for r in rows.values()]


def bench_results(work: pathlib.Path) -> tuple[dict, dict]:
    """(full reports by stage, compact rows by stage) for every bench-* and precision-* stage."""
    reports, compact = {}, {}
    for path in sorted(work.glob("logs/*.err")):
        stage = path.stem
        if not re.fullmatch(r"(bench|precision)-\d+", stage):
            continue
        report = _read_json(work / f"{stage}.json")
        if report is not None:
            reports[stage] = report
            rows = [{k: r[k] for k in ROW_KEYS if r.get(k) is not None} for r in report["rows"]]
            compact[stage] = {"rows": rows, "setup": report.get("setup"), "xla_flags": report.get("xla_flags")}
        else:
            compact[stage] = {"rows": rows_from_progress(path.read_text(errors="replace")),
                              "note": "no JSON report (stopped or failed): rows read from its progress lines"}
    return reports, compact


def precision_cost(compact: dict) -> list[dict]:
    """steps/s with JAX's default precision (TF32) / with "highest", row by row, same batch."""
    out = []
    for stage, result in compact.items():
        if not stage.startswith("precision-"):
            continue
        highest = {(r["name"], r["batch"]): r for r in compact.get("bench-" + stage.split("-", 1)[1], {}).get("rows", [])}
        for r in result["rows"]:
            h = highest.get((r["name"], r["batch"]))
            if h and h.get("steps_per_s") and r.get("steps_per_s"):
                out.append({"row": r["name"], "batch": r["batch"], "highest_steps_per_s": h["steps_per_s"],
                            "default_steps_per_s": r["steps_per_s"],
                            "default_over_highest": round(r["steps_per_s"] / h["steps_per_s"], 3),
                            "highest_compile_s": h.get("compile_s"), "default_compile_s": r.get("compile_s")})
    return out


def train_result(work: pathlib.Path) -> dict | None:
    run = work / "walk"
    if not run.exists():
        return None
    lines = []
    metrics_path = run / "metrics.jsonl"
    for line in metrics_path.read_text().splitlines() if metrics_path.exists() else []:
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    log = (work / "logs" / "train.out").read_text(errors="replace") if (work / "logs" / "train.out").exists() else ""
    keep = [line for line in log.splitlines()
            if line.startswith(("config", "initialised", "compiled", "time limit")) or "alarm" in line.lower()]
    checkpoints = sorted(int(p.name) for p in (run / "checkpoints").glob("*") if p.name.isdigit())
    result = {"iterations": len(lines), "checkpoints": checkpoints, "log": keep}
    if lines:
        result["first"] = {k: lines[0][k] for k in TRAIN_KEYS if k in lines[0]}
        result["last"] = {k: lines[-1][k] for k in TRAIN_KEYS if k in lines[-1]}
        steady = [m["charts/SPS"] for m in lines[1:] if "charts/SPS" in m]
        if steady:
            result["median_SPS_after_first"] = sorted(steady)[len(steady) // 2]
    return result


def sweep_result(work: pathlib.Path) -> dict | None:
    sweep = work / "sweep"
    if not sweep.exists():
        return None
    rows = []
    path = sweep / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    log = (work / "logs" / "sweep.out").read_text(errors="replace") if (work / "logs" / "sweep.out").exists() else ""
    first = re.search(r"first iteration \(compile \+ run\) took ([\d.]+) s", log)
    results = sweep / "results.md"
    return {"members": len({r.get("member") for r in rows}), "iterations": max((r.get("training/iteration", 0) for r in rows), default=0),
            "first_iteration_s": float(first.group(1)) if first else None,
            "last_iteration_SPS_all_members": rows[-1].get("charts/SPS") if rows else None,
            "results_md": results.read_text() if results.exists() else None}


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(x) >= scale:
                return f"{x / scale:.{digits}g}{unit}"
        return f"{x:.{digits}g}"
    return str(x)


def markdown(summary: dict) -> str:
    p = summary.get("probe") or {}
    lines = [f"# gpu_check {'(dry run) ' if summary['dry_run'] else ''}{summary['date']}", "",
             f"device: {', '.join(p.get('devices', ['?']))}; backend {p.get('backend', '?')}; "
             f"python {p.get('python', '?')}; " + ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items()),
             f"XLA_FLAGS: {p.get('xla_flags') or '(none)'}; matmul precision: {p.get('matmul_precision')}",
             f"wall: {summary['elapsed_s']} s of a {summary['budget_s']} s budget", "",
             "| stage | status | wall s | limit s |", "|---|---|---|---|"]
    for s in summary["stages"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['wall_s']} | {s['limit_s']} |")
    lines += ["", "| stage | row | batch | steps/s | unit | compile s | peak mem | ratio / update fraction |",
              "|---|---|---|---|---|---|---|---|"]
    for stage, result in summary["bench"].items():
        for r in result["rows"]:
            derived = r.get("update_fraction", r.get("ratio"))
            lines.append(f"| {stage} | {r['name']} | {r['batch']} | {_fmt(r.get('steps_per_s'))} | {r.get('unit', '')} | "
                         f"{_fmt(r.get('compile_s'))} | {_fmt(float(r['peak_mem_bytes'])) + 'B' if r.get('peak_mem_bytes') else '-'} | "
                         f"{_fmt(derived)}{' (partial)' if r.get('partial') else ''}{' ' + r['skipped'] if r.get('skipped') else ''} |")
    if summary["precision_cost"]:
        lines += ["", "matmul precision, steps/s with JAX's default (TF32 on NVIDIA GPUs) / with 'highest':"]
        lines += [f"- {c['row']} at {c['batch']}: {c['default_over_highest']} ({_fmt(c['default_steps_per_s'])} vs "
                  f"{_fmt(c['highest_steps_per_s'])})" for c in summary["precision_cost"]]
    t = summary.get("train")
    if t:
        lines += ["", f"train: {t['iterations']} iterations, checkpoints {t['checkpoints']}, median SPS "
                      f"{_fmt(t.get('median_SPS_after_first'))}"]
        lines += [f"- {line}" for line in t["log"]]
        for which in ("first", "last"):
            if which in t:
                lines.append(f"- {which}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in t[which].items()))
    if summary.get("eval"):
        lines += ["", "eval: " + ", ".join(f"{k} {_fmt(v)}" for k, v in summary["eval"].items())]
    s = summary.get("sweep")
    if s:
        lines += ["", f"sweep: {s['members']} members, {s['iterations']} iteration(s), first iteration "
                      f"{_fmt(s['first_iteration_s'])} s (compile + run), last iteration "
                      f"{_fmt(s['last_iteration_SPS_all_members'])} env steps/s (all members)"]
        if s.get("results_md"):
            lines += ["", s["results_md"]]
    return "\n".join(lines) + "\n"


def summarize(work: pathlib.Path, out: pathlib.Path, dry_run: bool, budget: int, stages: str, elapsed: int) -> dict:
    stage_rows = read_stages(work)
    reports, compact = bench_results(work)
    summary = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "dry_run": dry_run, "budget_s": budget, "planned_stages": stages.split(),
        "elapsed_s": elapsed,
        "probe": _read_json(work / "probe.json"), "stages": stage_rows, "bench": compact,
        "precision_cost": precision_cost(compact), "train": train_result(work), "eval": _read_json(work / "eval.json"),
        "sweep": sweep_result(work),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    (out / "bench.json").write_text(json.dumps(reports, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", type=pathlib.Path, help="write the machine probe to this JSON file")
    parser.add_argument("--work", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--dry-run", default="0")
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--stages", default="")
    parser.add_argument("--elapsed", type=int, default=0, help="seconds since the check started")
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe)
        return 0
    if not (args.work and args.out):
        parser.error("give --probe, or --work and --out")
    summarize(args.work, args.out, args.dry_run == "1", args.budget, args.stages, args.elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
