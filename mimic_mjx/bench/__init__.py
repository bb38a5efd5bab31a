"""`mimic-mjx bench`: throughput of physics, environment and training on humanoid3d.

Rows (each compiled once, run once to warm up, then timed; `--rows` picks them):

* `physics`: `Physics.step` (one 30 Hz control step) vmapped over the batch inside
  `lax.scan`; physics steps/s.
* `native`: the same model, states and controls through `mujoco.rollout` on every CPU core,
  called from Python: the ceiling of the native backend, without JAX around it.
* `env`: `ImitationEnv.step` (physics substeps, reward, observation, auto-reset) with
  uniform random actions; env steps/s.
* `policy`: the trainer's rollout (`train.rollout`: PolicyNetwork (1024, 512) inference on
  normalised observations, Gaussian sampling, env step, trajectory stored).
* `train`: full training iterations (`train.make_iteration`: rollout + GAE + TRPO + value fit).
  `update_fraction = 1 - train steps/s ÷ rollout steps/s`: the policy row's function is
  exactly the iteration's rollout (same batch and horizon), so the rest of the iteration's
  time is the update.
* `brax`: Brax PPO (`brax.training.agents.ppo.train`) on the same environment wrapped in
  Brax's `Env` interface (`brax_adapter.py`), same batch, horizon, network widths;
  `ratio` = our train ÷ Brax.

The physics, env, policy and train rows run once per physics backend of `--physics`
(`mjx`, `native`; both by default on CPU, `mjx` on an accelerator); each row says its
backend, `native_over_mjx` on a native row is its steps/s over the MJX row's at the same
batch, and the train row splits its iteration time into physics, the rest of the env step,
policy inference and the update (`time_split`) from the rows of its backend.

`sweep` (M members × N/M envs against one run of N) runs only when `--rows` names it.
`--profile DIR` records one extra, untimed call of each compiled row (all but native and
brax) with `jax.profiler`, in DIR/<row>-<batch>.

Every row times whole chunks of `runconfig.TrainConfig.horizon` control steps (physics rows: the
same simulated time, horizon × substeps physics steps), so `--steps` is rounded up to whole
chunks. Ratios must survive a shared machine, so the env and policy rows alternate their calls
with calls of the physics row's compiled function, and the train row with the policy row's
(each row's `pair` in the registry, `bench/harness.py`); a ratio then compares times taken under the same load.

Each row compiles exactly one function; the env, policy and train rows start from one
`train.init` state per batch (its compile is reported under `setup`), the physics and native
rows from mocap frames built on the host (no compile).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import jax

from mimic_mjx import physics as physics_lib
from mimic_mjx.bench import rows as _rows  # noqa: F401  (registers the rows)
from mimic_mjx.bench.harness import REGISTRY, Bench, build, chunk_count
from mimic_mjx.bench.report import add_ratios, assemble, env_physics_ratio, format_report, time_split, update_fraction
from mimic_mjx.bench.rows import SWEEP_MEMBERS, env_chunk, initial_physics_states, physics_chunk
from mimic_mjx.errors import MimicError

ROWS = tuple(REGISTRY)
DEFAULT_ROWS = tuple(n for n, s in REGISTRY.items() if s.default)
# The sizes for one GPU; on the 2-core CPU a batch of 32 runs every row in minutes.
GPU_BATCHES = (128, 1024, 8192)
CPU_BATCHES = (32,)
# 96 control steps, rounded up to whole horizons (walk_cpu: 2 chunks of 64): a few seconds per CPU row.
DEFAULT_STEPS = 96

__all__ = ["Bench", "ROWS", "DEFAULT_ROWS", "add_arguments", "add_ratios",
           "chunk_count", "env_chunk", "env_physics_ratio", "format_report", "initial_physics_states",
           "parse_batches", "parse_devices", "parse_physics", "parse_rows", "parse_steps", "physics_chunk", "run_benchmark",
           "run_cli", "time_split", "update_fraction"]


def run_benchmark(batches, rows, steps: int, progress: Callable[[str], Any] = lambda msg: None,
                  command: str = "", profile_dir: str | None = None, physics=("mjx",), config=None,
                  devices: tuple[int, ...] = (), members: int = SWEEP_MEMBERS) -> dict:
    """Run `rows` at each batch size, the per-backend rows (`RowSpec.per_backend`) once per
    `physics` backend and the per-device rows (`RowSpec.per_device`: train) once per count in
    `devices` (empty: the config's), the sweep row with `members` members; the JSON report
    (see BENCHMARKS.md for the keys)."""
    load_start = os.getloadavg()
    bench = build(steps, progress, profile_dir, physics, config)
    bench.members = members
    results = []
    for batch in batches:
        for backend in physics:
            bench.physics = backend
            for name in rows:
                spec = REGISTRY[name]
                if spec.per_backend:
                    for count in (devices if spec.per_device and devices else (None,)):
                        bench.devices = count
                        results.append(spec.run(bench, batch))
            bench.devices = None
        bench.physics = physics[0]
        results += [REGISTRY[name].run(bench, batch) for name in rows if not REGISTRY[name].per_backend]
        bench.kept.clear()  # free the kept states before the next (bigger) batch
        bench._setup.clear()
    return assemble(bench, results, command, load_start)


def _positive_ints(text: str, flag: str, example: str, what: str) -> tuple[int, ...]:
    """`"128,1024"` -> (128, 1024) for `flag`; one-line MimicError for anything but integers >= 1."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise MimicError(f"{flag} {text!r}: expected positive integers separated by commas, e.g. {example}") from None
    if not values or any(v < 1 for v in values):
        raise MimicError(f"{flag} {text!r}: every {what} must be >= 1")
    return values


def parse_batches(text: str) -> tuple[int, ...]:
    """`"128,1024"` -> (128, 1024); MimicError for anything but positive integers."""
    return _positive_ints(text, "--batch", "128,1024", "batch size")


def parse_rows(text: str) -> tuple[str, ...]:
    """`"physics,native"` -> ("physics", "native") in the registry's order (ROWS plus any row
    registered since)."""
    known = tuple(REGISTRY)
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        raise MimicError(f"--rows {text!r}: unknown row {given} (known: {', '.join(known)})")
    return tuple(r for r in known if r in names)


def parse_physics(text: str) -> tuple[str, ...]:
    """`"mjx,native"` -> ("mjx", "native"): physics backends (physics.BACKEND_CLASSES);
    MimicError for anything else."""
    known = tuple(physics_lib.BACKEND_CLASSES)
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    if not names or any(n not in known for n in names):
        raise MimicError(f"--physics {text!r}: expected one or more of {', '.join(known)}, comma-separated")
    return names


def default_physics() -> tuple[str, ...]:
    """Every backend on a CPU (to compare them); on an accelerator, those that run on it
    (`on_device`: not MuJoCo C, which steps on the host)."""
    names = tuple(physics_lib.BACKEND_CLASSES)
    if jax.default_backend() == "cpu":
        return names
    return tuple(n for n, cls in physics_lib.BACKEND_CLASSES.items() if cls.on_device)


def parse_devices(text: str, batches: tuple[int, ...]) -> tuple[int, ...]:
    """`"1,2"` -> (1, 2): device counts this machine has and every batch splits over."""
    counts = tuple(dict.fromkeys(_positive_ints(text, "--devices", "1,2", "device count")))
    available = jax.device_count()
    for count in counts:
        if count > available:
            raise MimicError(f"--devices {text!r}: {count} device(s), but JAX sees {available} here "
                             "(on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)")
        for batch in batches:
            if batch % count:
                raise MimicError(f"--devices {text!r}: batch {batch} does not split evenly over {count} devices")
    return counts


def parse_members(text: str, batches: tuple[int, ...]) -> int:
    """`"7"` -> 7: the sweep row's member count, which must divide every batch in `batches`."""
    counts = _positive_ints(text, "--members", "4", "member count")
    if len(counts) != 1:
        raise MimicError(f"--members {text!r}: expected one member count, e.g. 4")
    members = counts[0]
    bad = [b for b in batches if b % members]
    if bad:
        raise MimicError(f"--members {members}: the sweep row splits each batch over the members, and "
                         f"{members} does not divide --batch {','.join(map(str, bad))}")
    return members


def parse_steps(text: str) -> int:
    try:
        steps = int(text)
    except (TypeError, ValueError):
        raise MimicError(f"--steps {text!r}: expected a positive integer") from None
    if steps < 1:
        raise MimicError(f"--steps {text!r}: must be >= 1")
    return steps


def add_arguments(parser) -> None:
    """`mimic-mjx bench` flags."""
    parser.add_argument("--batch", default=None, metavar="B1,B2",
                        help=f"batch sizes (default: {','.join(map(str, GPU_BATCHES))} on a GPU, "
                             f"{','.join(map(str, CPU_BATCHES))} on CPU)")
    parser.add_argument("--steps", default=str(DEFAULT_STEPS), metavar="N",
                        help=f"timed control steps per environment per row, rounded up to whole chunks of the "
                             f"preset's horizon (default {DEFAULT_STEPS}; physics rows: the same simulated time)")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), metavar="R1,R2",
                        help=f"rows to run, of {','.join(ROWS)} (default: {','.join(DEFAULT_ROWS)})")
    parser.add_argument("--config", default=None, metavar="PRESET",
                        help="training preset or YAML whose networks, horizon, reward and env the rows use "
                             "(default: the preset `mimic-mjx train` picks, walk_cpu on a CPU); --batch still sets the batch")
    parser.add_argument("--physics", default=None, metavar="P1,P2",
                        help="physics backends of the physics, env, policy and train rows, of "
                             f"{','.join(physics_lib.BACKEND_CLASSES)} (default: all of them on CPU, "
                             "the accelerator's own (mjx) on an accelerator)")
    parser.add_argument("--devices", default=None, metavar="D1,D2",
                        help="device counts the train row runs at, the same global batch split over them, "
                             "e.g. 1,2 (default: the preset's devices, 0: every device JAX sees)")
    parser.add_argument("--members", default=str(SWEEP_MEMBERS), metavar="M",
                        help=f"members of the sweep row, each with batch / M envs (default {SWEEP_MEMBERS}); "
                             "the batch must be a multiple of M")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="also record one call of each row with jax.profiler into DIR/<row>-<batch> "
                             "(open with TensorBoard's profile plugin or Perfetto)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_cli(args) -> int:
    """Run `mimic-mjx bench` from parsed `args`; bad flags raise MimicError (one line)."""
    rows = parse_rows(args.rows)
    steps = parse_steps(args.steps)
    if args.profile:
        try:
            os.makedirs(args.profile, exist_ok=True)
        except OSError as e:
            raise MimicError(f"--profile {args.profile!r}: cannot create the folder ({e.strerror})") from None
    batches = parse_batches(args.batch) if args.batch is not None else (
        CPU_BATCHES if jax.default_backend() == "cpu" else GPU_BATCHES)
    physics = parse_physics(args.physics) if getattr(args, "physics", None) else default_physics()
    devices = parse_devices(args.devices, batches) if getattr(args, "devices", None) else ()
    members = parse_members(getattr(args, "members", SWEEP_MEMBERS), batches if "sweep" in rows else ())
    from mimic_mjx import runconfig

    # After the flags are checked; the preset train would run, said on stderr so --json's
    # stdout stays one report.
    preset = getattr(args, "config", None) or runconfig.announce_default(stream=sys.stderr)
    config = runconfig.load_train_config(preset, [])
    command = (f"mimic-mjx bench --batch {','.join(map(str, batches))} --steps {steps} --rows {','.join(rows)}"
               f" --physics {','.join(physics)} --config {preset}"
               + (f" --devices {','.join(map(str, devices))}" if devices else "")
               + (f" --members {members}" if "sweep" in rows else "")
               + (f" --profile {args.profile}" if args.profile else "") + (" --json" if args.json else ""))
    report = run_benchmark(batches, rows, steps, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                           command=command, profile_dir=args.profile, physics=physics, config=config,
                           devices=devices, members=members)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

