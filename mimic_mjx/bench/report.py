"""The bench report: cross-row ratios, the machine and versions, the settings, the table."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import resource

import jax
import mujoco

def env_physics_ratio(env_steps_per_s: float, substeps: int, physics_steps_per_s: float) -> float:
    """env steps/s × substeps ÷ physics steps/s: 1.0 if the env cost nothing beyond physics."""
    return env_steps_per_s * substeps / physics_steps_per_s


def time_split(batch: int, substeps: int, train_sps, policy_sps, env_sps, physics_sps) -> dict | None:
    """Shares of one iteration's time: physics, the rest of the env step (reward, observation,
    resets), policy inference (and storing the trajectory) and the update (GAE, TRPO, value
    fit), from the steps/s of the physics, env, policy and train rows of one backend."""
    if not all((train_sps, policy_sps, env_sps, physics_sps)):
        return None
    per_step = {"physics": substeps / physics_sps, "env": 1.0 / env_sps, "policy": 1.0 / policy_sps,
                "train": 1.0 / train_sps}  # seconds per env step (batch cancels)
    shares = {"physics": per_step["physics"], "env_other": per_step["env"] - per_step["physics"],
              "policy": per_step["policy"] - per_step["env"], "update": per_step["train"] - per_step["policy"]}
    return {k: round(v / per_step["train"], 3) for k, v in shares.items()}


def update_fraction(train_steps_per_s: float, rollout_steps_per_s: float) -> float:
    """Fraction of an iteration outside its rollout: 1 - (rollout time / iteration time)."""
    return 1.0 - train_steps_per_s / rollout_steps_per_s


def add_ratios(rows: list[dict], substeps: int) -> list[dict]:
    """Cross-row numbers, per batch: env/policy vs physics, MJX vs native, update fraction, vs Brax."""
    by, by_devices = {}, {}
    for r in rows:  # the first row of a name wins: under --devices 1,2 that is the first count's
        if r.get("steps_per_s"):
            by.setdefault((r["name"], r["batch"], r.get("physics")), r)
            by_devices.setdefault((r["name"], r["batch"], r.get("physics"), r.get("devices", 1)), r)
    out = []
    for r in rows:
        r = dict(r)

        def get(name, physics=r.get("physics")):  # interleaved when this row has one, else the other row's
            if r.get("paired_with") == name and r.get("pair_steps_per_s") and physics == r.get("physics"):
                return r["pair_steps_per_s"]
            row = by.get((name, r["batch"], physics)) or by.get((name, r["batch"], "mjx")) or by.get(
                (name, r["batch"], None))
            return (row or {}).get("steps_per_s")

        mjx_row = by_devices.get((r["name"], r["batch"], "mjx", r.get("devices", 1)))
        one = by_devices.get((r["name"], r["batch"], r.get("physics"), 1))
        if r["name"] == "train" and r.get("devices", 1) > 1 and r.get("steps_per_s") and one:
            # Same global batch on more devices: what splitting it (and its collectives) buys or costs.
            r["over_one_device"] = r["steps_per_s"] / one["steps_per_s"]
        if r.get("physics") == "native" and r.get("steps_per_s") and mjx_row:
            r["native_over_mjx"] = r["steps_per_s"] / mjx_row["steps_per_s"]
        if r["name"] == "train" and r.get("steps_per_s"):
            r["time_split"] = time_split(r["batch"], substeps, r["steps_per_s"], get("policy"), get("env"),
                                         get("physics"))

        sps = r.get("steps_per_s")
        when = " (interleaved)" if r.get("paired_with") else " (separate runs)"
        if r["name"] in ("env", "policy") and sps and get("physics"):
            r["ratio"] = env_physics_ratio(sps, substeps, get("physics"))
            r["ratio_of"] = f"{r['name']} steps/s x {substeps} substeps / physics steps/s" + when
        elif r["name"] == "native" and sps and get("physics", "mjx"):
            r["ratio"] = get("physics", "mjx") / sps
            r["ratio_of"] = "MJX physics steps/s / native MuJoCo physics steps/s (separate runs)"
        elif r["name"] == "train" and sps:
            r["update_fraction"] = update_fraction(sps, get("policy")) if get("policy") else None
        elif r["name"] == "sweep" and sps and get("train"):
            # Both advance batch x horizon env steps per call, so this is the time ratio.
            r["ratio"] = get("train") / sps
            r["ratio_of"] = (f"sweep ({r.get('members')} members x {r['batch'] // max(r.get('members', 1), 1)} envs) "
                             f"iteration time / one run ({r['batch']} envs) iteration time" + when)
        elif r["name"] == "brax" and sps and get("train"):
            r["ratio"] = get("train") / sps
            r["ratio_of"] = "our train env steps/s / Brax PPO env steps/s (separate runs)"
        out.append(r)
    return out


def _si(x) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_report(report: dict) -> str:
    """The terminal table and the derived lines."""
    lines = [f"device: {report['device']}   {report['date']}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             f"model: {report['settings']['model_summary']}",
             f"XLA_FLAGS: {report.get('xla_flags') or '(none)'}", ""]
    header = (f"{'row':<8} {'physics':<7} {'batch':>6} {'dev':>3} {'steps/s':>9} {'unit':<16} {'compile s':>9} "
              f"{'peak mem':>9} {'program':>9}  notes")
    lines += [header, "-" * len(header)]
    for r in report["rows"]:
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        notes = r.get("skipped") or r.get("notes", "")
        lines.append(f"{r['name']:<8} {r.get('physics') or '-':<7} {r['batch']:>6} {r.get('devices', 1):>3} "
                     f"{_si(r['steps_per_s']):>9} "
                     f"{r['unit']:<16} {compile_s:>9} {_si(r['peak_mem_bytes']):>9} {_si(r.get('program_bytes')):>9}  "
                     f"{notes}")
    lines.append("")
    for r in report["rows"]:
        if r.get("native_over_mjx") is not None:
            lines.append(f"{r['name']} (batch {r['batch']}): native / mjx steps/s = {r['native_over_mjx']:.3g}")
        if r.get("over_one_device") is not None:
            lines.append(f"train (batch {r['batch']}, {r['physics']}): {r['devices']} devices / 1 device steps/s = "
                         f"{r['over_one_device']:.3g} ({r['layout']})")
        if r.get("time_split"):
            split = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["time_split"].items())
            lines.append(f"train (batch {r['batch']}, {r['physics']}): iteration time: {split}")
        if r.get("ratio") is not None:
            lines.append(f"{r['name']} (batch {r['batch']}): {r['ratio_of']} = {r['ratio']:.3g}")
        if r.get("update_fraction") is not None:
            when = "interleaved" if r.get("paired_with") else "separate runs"
            lines.append(f"train (batch {r['batch']}): update fraction = 1 - train / policy (rollout) steps/s "
                         f"({when}) = {r['update_fraction']:.3f}")
    lines += ["", *report["notes"]]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_description() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU: {_cpu_model()} ({os.cpu_count()} cores)"
    return (f"{dev.platform.upper()}: {dev.device_kind} x{jax.device_count()}; "
            f"host CPU {_cpu_model()} ({os.cpu_count()} cores)")


def library_versions() -> dict:
    versions = {}
    for name in ("jax", "jaxlib", "mujoco", "mujoco-mjx", "flax", "brax"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def settings(bench) -> dict:
    m = bench.env.mj_model
    integrator = mujoco.mjtIntegrator(m.opt.integrator).name.removeprefix("mjINT_").lower()
    solver = mujoco.mjtSolver(m.opt.solver).name.removeprefix("mjSOL_")
    return {
        "model": "humanoid3d", "motion": bench.env.clip.name, "timestep": float(m.opt.timestep),
        "integrator": integrator, "solver": solver, "iterations": int(m.opt.iterations),
        "ls_iterations": int(m.opt.ls_iterations), "substeps": bench.env.substeps, "horizon": bench.horizon,
        "control_steps_per_row": bench.chunks * bench.horizon,
        "model_summary": (f"humanoid3d, timestep {m.opt.timestep:.4g} s ({bench.env.substeps} substeps per 30 Hz "
                          f"control step), {integrator}, {solver} {m.opt.iterations} iterations / "
                          f"{m.opt.ls_iterations} line search; {bench.chunks * bench.horizon} control steps per row"),
    }  # fmt: skip


def notes(backend: str) -> list[str]:
    notes = []
    if backend == "cpu":
        notes.append("peak_mem_bytes is null on CPU: JAX keeps no device memory statistics there; "
                      "program_bytes is XLA's static size of each compiled program's buffers, "
                      "process_max_rss_bytes the whole process's peak resident memory.")
    else:
        notes.append("peak_mem_bytes: jax.devices()[0].memory_stats()['peak_bytes_in_use'] after the row "
                     "(process-wide peak so far, so it never decreases from row to row).")
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        notes.append(f"JAX's persistent compilation cache is on ({cache}): compile_s may be a cache load, "
                     "not a compile.")
    return notes



def assemble(bench, results: list[dict], command: str, load_start) -> dict:
    """The JSON report of one run (BENCHMARKS.md documents the keys)."""
    backend = jax.default_backend()
    return {
        "device": device_description(),
        "backend": backend,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": library_versions(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": command,
        "loadavg": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "settings": settings(bench),
        "setup": bench.setup_log,
        "rows": add_ratios(results, bench.env.substeps),
        "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "notes": notes(backend),
    }
