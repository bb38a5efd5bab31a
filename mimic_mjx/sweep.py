"""Sweeps: many reward or TRPO variants trained side by side in one compiled program.

A sweep file names a base training config and a grid (or a list) of the dotted keys that
`train --set` takes, and optionally seeds. Every member gets its own policy, value function,
normaliser, RNG, reward config and TRPO leaves; their `TrainState`s are stacked along a
leading member axis and the trainer's own iteration (`train.make_iteration`) is `jax.vmap`ped
over it — one trainer, one compile. A grid axis is any number the trained state holds as a
leaf: every `reward.*` field and the float `trpo.*` fields (`sweepable_keys()`); settings
that fix shapes, loop counts or the environment are the same for all members.

Members trained on different rewards cannot be compared by their own returns, so every
`eval_every` iterations each member is also scored by `evaluate`'s yardstick (the
deepmimic_paper reward, deterministic policy, RSI off).

Sweep file (YAML, read by the same loader as a training config, so `base:`, `1e-3` and
`--set` behave the same; `SweepFile` documents every key):

    train: cpu_tiny              # base training config: preset name or path
    set: [horizon=16]            # optional overrides of the base (as `train --set`)
    grid:                        # train keys -> values; members = the product
      reward.pose_scale: [1, 2, 4]
      trpo.max_kl: [0.01, 0.05]
    # or members: [{reward.pose_scale: 1}, {reward.pose_scale: 4, reward.velocity_weight: 0}]
    seeds: [0]                   # each member is trained once per seed
    num_envs: 16                 # environments per member
    iterations: 20
    eval_every: 5
    eval_episodes: 1
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mimic_mjx import checkpoint
from mimic_mjx import compiled
from mimic_mjx import config as cfglib
from mimic_mjx import distributed
from mimic_mjx import evaluate as eval_lib
from mimic_mjx import parallel
from mimic_mjx import plot as plot_lib
from mimic_mjx import reporting
from mimic_mjx import reward as reward_lib
from mimic_mjx import runconfig, runner, train as train_lib
from mimic_mjx.errors import MimicError

YARDSTICK = "normalized_return"
# TrainConfig sections whose leaves the trained state carries per member (TrainState.trpo
# and env_state.reward_config), so a vmapped iteration can give each member its own value.
VMAPPED_SECTIONS = ("reward", "trpo")


@dataclasses.dataclass(frozen=True)
class SweepFile:
    """The keys of a sweep file; give exactly one of `grid` and `members`."""

    train: str | None = cfglib.field(None, "base training config: a preset name or a YAML path "
                                     "(relative to the sweep file); null: the preset `mimic-mjx train` picks")
    set: tuple[str, ...] = cfglib.field((), "overrides of the base, as `train --set` takes them")
    grid: dict[str, tuple[float, ...]] | None = cfglib.field(
        None, "train keys (reward.*, trpo.* numbers) -> lists of values; the members are the product")
    members: tuple[dict[str, float], ...] | None = cfglib.field(
        None, "explicit members, each a mapping of train keys (reward.*, trpo.* numbers) to values")
    seeds: tuple[int, ...] | None = cfglib.field(None, "each member trains once per seed; null: the base's seed", ge=0)
    num_envs: int | None = cfglib.field(None, "environments per member; null: the base's", ge=1)
    iterations: int | None = cfglib.field(None, "training iterations; null: the base's", ge=1)
    eval_every: int = cfglib.field(5, "score every member on the yardstick every this many iterations", ge=1)
    eval_episodes: int = cfglib.field(1, "yardstick episodes per member and evaluation", ge=1)


@dataclasses.dataclass(frozen=True)
class Member:
    index: int
    overrides: dict  # dotted train key -> value, e.g. {"reward.pose_scale": 2.0}
    seed: int

    @property
    def label(self) -> str:
        settings = " ".join(f"{k}={v:g}" for k, v in self.overrides.items())
        return f"{settings} seed={self.seed}".strip()


@dataclasses.dataclass(frozen=True)
class Sweep:
    base: runconfig.TrainConfig  # resolved base config (num_envs per member, iterations)
    members: tuple[Member, ...]
    eval_every: int
    eval_episodes: int

    def member_config(self, member: Member) -> runconfig.TrainConfig:
        """The single-run config equivalent to `member` (what `train` would run alone)."""
        config = cfglib.replace(self.base, member.overrides, f"member {member.index}")
        return config.replace(seed=member.seed)


def sweepable_keys() -> list[str]:
    """The dotted train keys a grid may vary: the float leaves of the vmapped sections."""
    keys = []
    for section in VMAPPED_SECTIONS:
        cls = cfglib.config_class(cfglib.declared_fields(runconfig.TrainConfig)[section][1])
        keys += [f"{section}.{name}" for name, (f, tp) in cfglib.declared_fields(cls).items()
                 if tp is float and f.metadata.get("pytree_node", True)]
    return keys


def _check_key(source: str, where: str, key: str) -> None:
    """A one-line error unless `key` is a sweepable train key, with the likely fix."""
    if key in sweepable_keys():
        return
    reward_fields = cfglib.declared_fields(reward_lib.RewardConfig)
    if key in reward_fields:
        raise MimicError(f"{source}: '{where}' is not a train key; name it as `train --set` does: 'reward.{key}'")
    section, _, name = key.partition(".")
    train_fields = cfglib.declared_fields(runconfig.TrainConfig)
    sub = cfglib.config_class(train_fields[section][1]) if section in train_fields else None
    if (sub is not None and name in cfglib.declared_fields(sub)) or (not name and section in train_fields):
        raise MimicError(f"{source}: '{where}' cannot vary across members: only reward.* and float trpo.* "
                         f"numbers are leaves of the trained state; '{key}' fixes shapes, loop counts or the "
                         "environment, so it is one value for the whole sweep (set it with 'set')")
    raise MimicError(f"{source}: '{where}' is not a key a sweep can vary (valid: {', '.join(sweepable_keys())})")


def load_sweep(path: str | pathlib.Path, overrides: list[str] | None = None, announce: bool = False) -> Sweep:
    """Read and validate a sweep file and `--set` overrides of its keys; every mistake is a
    one-line MimicError, raised before anything is built. `announce`: say which preset a file
    without `train` starts from, as commands without --config do."""
    path = pathlib.Path(path)
    spec = cfglib.load_config(SweepFile, path, overrides or [])
    source = str(path)
    base_name = spec.train
    if base_name is None:  # the preset train picks
        base_name = runconfig.announce_default(prefix="sweep base ") if announce else runconfig.default_config()[0]
    base_path = pathlib.Path(base_name)
    if not base_path.is_absolute() and (path.parent / base_path).exists():
        base_path = path.parent / base_path
    base_sets = list(spec.set)
    for key in ("num_envs", "iterations"):
        if getattr(spec, key) is not None:
            base_sets.append(f"{key}={getattr(spec, key)}")
    base = runconfig.resolve_defaults(runconfig.load_train_config(str(base_path), base_sets))
    if base.kl_plateau_evals:
        raise MimicError(f"{source}: kl_plateau_evals (the adaptive step) is for single runs: a sweep's members "
                         "share one host loop; set it to 0 (set: [kl_plateau_evals=0])")
    combos = _member_overrides(source, spec)
    seeds = spec.seeds if spec.seeds is not None else (base.seed,)
    if not seeds:
        raise MimicError(f"{source}: 'seeds' has no members (it must be a non-empty list of integers)")
    members = tuple(Member(i, o, seed) for i, (o, seed) in enumerate(itertools.product(combos, seeds)))
    sweep = Sweep(base=base, members=members, eval_every=spec.eval_every, eval_episodes=spec.eval_episodes)
    for m in members:  # every value against its field's declared range
        runconfig.resolve_defaults(cfglib.replace(base, m.overrides, f"{source}: member {m.index} ({m.label})"))
    return sweep


def _member_overrides(source: str, spec: SweepFile) -> list[dict]:
    if (spec.grid is None) == (spec.members is None):
        raise MimicError(f"{source}: give exactly one of 'grid' or 'members'")
    if spec.grid is not None:
        if not spec.grid:
            raise MimicError(f"{source}: 'grid' has no members (it must map train keys to lists of values)")
        axes = []
        for key, values in spec.grid.items():
            _check_key(source, f"grid.{key}", key)
            if not values:
                raise MimicError(f"{source}: 'grid.{key}' has no members (it must be a non-empty list of numbers)")
            axes.append([(key, v) for v in values])
        return [dict(combo) for combo in itertools.product(*axes)]
    if not spec.members:
        raise MimicError(f"{source}: 'members' has no members (it must be a non-empty list of mappings)")
    for i, member in enumerate(spec.members):
        for key in member:
            _check_key(source, f"members[{i}].{key}", key)
    return [dict(m) for m in spec.members]


# ---------------------------------------------------------------------- the program


def _stack(trees: list) -> Any:
    """Configs stacked along a new leading member axis (float32 leaves, as `init` stores them)."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *trees)


def init_members(env, sweep: Sweep) -> train_lib.TrainState:
    """Stacked TrainState [M, ...]: member i initialised exactly as `train` would with its
    seed, its reward config and its TRPO leaves."""
    configs = [sweep.member_config(m) for m in sweep.members]
    rewards = reward_lib.stack_configs([c.reward for c in configs])
    hypers = _stack([c.trpo for c in configs])
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in sweep.members])

    def one(key, reward_config, hyper):
        return train_lib.init(env, sweep.base.replace(trpo=hyper), key, reward_config)

    return jax.jit(jax.vmap(one))(keys, rewards, hypers)


def make_programs(env, eval_env, sweep: Sweep, mesh=None, out_shardings=None):
    """(iteration, evaluation): the trainer's iteration and the yardstick, vmapped over members.

    With a `mesh` (`train.place`) the members are split over its `members` axis and each
    member's environments over its `batch` axis (parallel.py), the outputs pinned to
    `out_shardings`.
    """
    iteration = parallel.jit(parallel.vmap_members(train_lib.make_iteration(env, sweep.base, mesh), mesh),
                             out_shardings)
    score = eval_lib.make_evaluation(eval_env, sweep.base, sweep.eval_episodes)
    evaluation = jax.jit(jax.vmap(score, in_axes=(0, 0, 0, None)))
    return iteration, evaluation


def _yardstick(evaluation, state, rng) -> list[dict]:
    # On host copies, so the yardstick is this process's own program (runner._periodic_evaluation
    # says why); every environment of a member holds its reward leaves: the first local one.
    reward_config = jax.tree.map(lambda x: parallel.local_copy(x)[:, 0], state.env_state.reward_config)
    params, normalizer = jax.tree.map(parallel.local_copy, (state.policy_params, state.normalizer))
    metrics = jax.device_get(evaluation(params, normalizer, reward_config, rng))
    n = len(next(iter(metrics.values())))
    return [{k: float(v[i]) for k, v in metrics.items()} for i in range(n)]


def run(sweep: Sweep, out_dir: str | pathlib.Path, progress: Callable[[str], Any] = print,
        resume: bool = False, progress_fns=(), tensorboard: str | None = None) -> dict:
    """Train every member for `base.iterations`, scoring them on the yardstick; write out_dir.

    The iterations run in the trainer's own host loop (`runner.host_loop`): the same metrics
    lines (one per member, with `member`), health alarms per member, checkpoints, time limit
    and `resume=True`, which continues the latest checkpoint bit-for-bit; the sweep must be the
    one out_dir holds (members and base config; `iterations` and `time_limit_minutes` may grow).
    `progress_fns` and `tensorboard` as in `runner.train` (each member's rows; TensorBoard
    folders member_<i>).

    out_dir: `sweep.json` (members and settings), `base_config.yaml`, `metrics.jsonl`,
    `eval.jsonl` (yardstick per member per evaluation), `checkpoints/` (the stacked state),
    `results.md`, `yardstick.png`. Returns {"compiles": how many programs the jitted
    iteration compiled (its jit cache size: 1 however many members), "results": [...],
    "state": the stacked state}.
    """
    start_time = time.perf_counter()
    out = runner.check_run_dir(out_dir, resume=resume, what="sweep")
    if resume:  # before anything is built
        check_same_sweep(sweep, load_saved(out), out)
    writer, progress = runner.writer_progress(out, progress)  # over several processes, process 0 writes
    env, _ = train_lib.build_env(sweep.base)
    eval_env = eval_lib.eval_env(sweep.base)
    m_count = len(sweep.members)
    if resume:
        state, step = checkpoint.restore_newest(out, jax.eval_shape(lambda: init_members(env, sweep)),
                                                report=progress, set_aside=writer)
        wall_offset = runner.trim_logs(out, step) if writer else 0.0
        progress(f"resumed sweep {out} at iteration {step}")
    else:
        if writer:
            out.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.jsonl", "eval.jsonl"):
                (out / name).write_text("")
        wall_offset = 0.0
        progress(f"sweep of {m_count} members x {sweep.base.num_envs} envs on '{env.clip.name}'; initialising ...")
        state = init_members(env, sweep)
    if writer:
        cfglib.save_config(sweep.base, out / "base_config.yaml")
        (out / "sweep.json").write_text(json.dumps(
            {"members": [{"member": m.index, "overrides": m.overrides, "seed": m.seed} for m in sweep.members],
             "eval_every": sweep.eval_every, "eval_episodes": sweep.eval_episodes}, indent=2))  # fmt: skip
    state, mesh, out_shardings = train_lib.place(state, sweep.base, members=m_count)
    if mesh is not None:
        progress(f"{m_count} members on {mesh.size} devices: {parallel.describe(mesh, sweep.base.num_envs)}")
    iteration, evaluation = make_programs(env, eval_env, sweep, mesh, out_shardings)
    progress("compiling the vmapped training iteration (first call) ...")
    if jax.process_count() > 1:  # compile before the first step's collectives (distributed.barrier says why)
        iteration.lower(state).compile()
        distributed.barrier("mimic_mjx compiled")

    def evaluate(state, common):
        scores = _yardstick(evaluation, state, jax.random.PRNGKey(0))
        with (out / "eval.jsonl").open("a") as f:
            for i, s in enumerate(scores):
                f.write(json.dumps({"member": i, "training/iteration": common["training/iteration"],
                                    "training/env_steps": common["training/env_steps"], **s}) + "\n")
        best = max(range(m_count), key=lambda i: scores[i][YARDSTICK])
        worst = min(range(m_count), key=lambda i: scores[i][YARDSTICK])
        progress(f"eval {common['training/iteration']:>4}  {YARDSTICK} best #{best} {scores[best][YARDSTICK]:.3f} "
                 f"({sweep.members[best].label})  worst #{worst} {scores[worst][YARDSTICK]:.3f} "
                 f"({sweep.members[worst].label})")  # fmt: skip

    state, _ = runner.host_loop(iteration, state, sweep.base, out, progress, start_time=start_time,
                                wall_offset=wall_offset, evaluate=evaluate if writer else None,
                                eval_every=sweep.eval_every, members=list(sweep.members),
                                progress_fns=runner.reporters(out, progress, sweep.base.iterations, tensorboard=tensorboard,
                                                              members=m_count, extra=progress_fns))
    if not writer:
        return {"compiles": iteration._cache_size(), "results": [], "state": state}
    evals = read_evals(out / "eval.jsonl", m_count)
    results = _results(sweep, evals[-1][2]) if evals else []
    (out / "results.md").write_text(results_table(results))
    plotted = plot(sweep, evals, out / "yardstick.png")
    progress(results_table(results))
    progress(f"wrote {out}/results.md" + (f" and {out}/yardstick.png" if plotted else " (install matplotlib for the plot)"))
    return {"compiles": iteration._cache_size(), "results": results, "state": state}


def read_evals(path: pathlib.Path, members: int) -> list[tuple[int, int, list[dict]]]:
    """eval.jsonl as [(iteration, env steps per member, [scores of member 0..M-1])]."""
    by_iteration: dict[int, dict] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            row = json.loads(line)
            by_iteration.setdefault(row["training/iteration"], {})[row["member"]] = row
    return [(it, rows[0]["training/env_steps"], [rows[i] for i in range(members)])
            for it, rows in sorted(by_iteration.items()) if len(rows) == members]


def load_saved(sweep_dir: pathlib.Path) -> Sweep:
    """The sweep a sweep directory holds (sweep.json and base_config.yaml)."""
    info_path = sweep_dir / "sweep.json"
    if not info_path.exists():
        raise MimicError(f"{sweep_dir}: not a sweep directory (no sweep.json)")
    info = json.loads(info_path.read_text())
    base = cfglib.load_config(runconfig.TrainConfig, sweep_dir / "base_config.yaml", [])
    return Sweep(base=base, members=tuple(_member_from_json(m) for m in info["members"]),
                 eval_every=info["eval_every"], eval_episodes=info["eval_episodes"])


# What a resumed sweep may change: how long it runs, not what it trains.
_RESUMABLE = {"iterations": 0, "time_limit_minutes": None}


def check_same_sweep(sweep: Sweep, saved: Sweep, sweep_dir: pathlib.Path) -> None:
    """A one-line MimicError unless `sweep` continues the one in `sweep_dir`."""
    if [(m.overrides, m.seed) for m in sweep.members] != [(m.overrides, m.seed) for m in saved.members]:
        raise MimicError(f"--resume: the sweep's members differ from those in {sweep_dir}/sweep.json")
    keys = cfglib.differences(sweep.base.replace(**_RESUMABLE), saved.base.replace(**_RESUMABLE))
    if keys:
        raise MimicError(f"--resume: the base config differs from {sweep_dir}/base_config.yaml in "
                         f"{', '.join(keys)} (only iterations and time_limit_minutes may change)")


def _results(sweep: Sweep, scores: list[dict]) -> list[dict]:
    rows = [{"member": m.index, "overrides": m.overrides, "seed": m.seed, **scores[m.index]} for m in sweep.members]
    return sorted(rows, key=lambda r: -r[YARDSTICK])


def results_table(results: list[dict]) -> str:
    """Markdown table sorted by the yardstick (best first)."""
    lines = ["| member | settings | seed | normalized return | episode length | joint angle error (rad) "
             "| end-effector error (m) | fall rate |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        settings = ", ".join(f"{k}={v:g}" for k, v in r["overrides"].items()) or "(base)"
        lines.append(f"| {r['member']} | {settings} | {r['seed']} | {r['normalized_return']:.3f} | "
                     f"{r['episode_length_mean']:.1f} | {r['joint_angle_error_rad']:.3f} | "
                     f"{r['end_effector_error_m']:.3f} | {r['fall_rate']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(sweep: Sweep, evals: list, path: pathlib.Path) -> bool:
    """Yardstick curves of every member against env steps; False when matplotlib is absent."""
    curves = {f"#{m.index} {m.label}": [scores[m.index][YARDSTICK] for _, _, scores in evals] for m in sweep.members}
    return plot_lib.plot_curves([s for _, s, _ in evals], curves, path, xlabel="env steps per member",
                                ylabel="normalized return (deepmimic_paper reward, deterministic)",
                                title=f"reward sweep on {sweep.base.env.motion}")


def extract(sweep_dir: str | pathlib.Path, member: int, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Write member `member` of a sweep as an ordinary run directory (config + checkpoint).

    `mimic-mjx eval OUT` and `mimic-mjx train --resume --out OUT` then work on it.
    """
    sweep_dir = pathlib.Path(sweep_dir)
    out = runner.check_run_dir(out_dir, resume=False, can_resume=False)
    sweep = load_saved(sweep_dir)
    base = sweep.base
    if not 0 <= member < len(sweep.members):
        raise MimicError(f"--member {member}: the sweep has members 0..{len(sweep.members) - 1}")
    env, _ = train_lib.build_env(base)
    template = jax.eval_shape(lambda: init_members(env, sweep))
    state, step = checkpoint.restore(sweep_dir, template)
    single = jax.tree.map(lambda x: x[member], state)
    config = sweep.member_config(sweep.members[member])
    out.mkdir(parents=True, exist_ok=True)
    cfglib.save_config(config, out / "config.yaml")
    lines = [line for line in (sweep_dir / "metrics.jsonl").read_text().splitlines()
             if line and json.loads(line)["member"] == member]  # fmt: skip
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    checkpoint.save(out, step, single, keep=base.keep_checkpoints)
    return out


def _member_from_json(m: dict) -> Member:
    """A member as sweep.json stores it; sweeps written before grids took train keys stored
    bare reward fields under "reward"."""
    overrides = m["overrides"] if "overrides" in m else {f"reward.{k}": v for k, v in m["reward"].items()}
    return Member(m["member"], overrides, m["seed"])


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="sweep file (YAML), e.g. configs/sweep_reward_scales.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a sweep-file key, e.g. iterations=10, num_envs=8 or "
                             "grid.trpo.max_kl=[0.01,0.05] (repeatable)")
    parser.add_argument("--out", default=None, help="sweep directory (default: runs/sweep_<file name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest checkpoint in --out (the same sweep file; iterations may grow)")
    runner.add_tensorboard_argument(parser)
    distributed.add_arguments(parser)


def run_cli(args) -> int:
    # Before anything asks JAX for devices: the mesh then spans every process's devices.
    distributed.initialize(distributed.settings_from_args(args))
    # Every input is checked here, before an environment is built or a program compiled.
    sweep = load_sweep(args.config, args.overrides, announce=True)
    out = args.out or str(pathlib.Path("runs") / f"sweep_{pathlib.Path(args.config).stem}")
    runner.check_run_dir(out, resume=args.resume, what="sweep")
    runner.check_clip(sweep.base)
    distributed.check_devices(sweep.base.devices)
    parallel.make_mesh(sweep.base.devices, sweep.base.num_envs, len(sweep.members))  # a layout this machine cannot run: one line now
    compiled.enable_compile_cache()
    if args.tensorboard:
        reporting.check_tensorboard()
    run(sweep, out, progress=lambda line: print(line, flush=True), resume=args.resume, tensorboard=args.tensorboard)
    return 0


def add_extract_arguments(parser) -> None:
    parser.add_argument("sweep_dir", help="a sweep directory written by `mimic-mjx sweep`")
    parser.add_argument("--member", type=int, required=True, help="member index (see results.md)")
    parser.add_argument("--out", required=True, help="new run directory for the member")


def run_extract_cli(args) -> int:
    out = extract(args.sweep_dir, args.member, args.out)
    print(f"wrote member {args.member} to {out}: `mimic-mjx eval {out}` or `mimic-mjx train --resume --out {out}`")
    return 0
