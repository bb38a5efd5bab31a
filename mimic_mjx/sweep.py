"""Reward-scale sweeps: many reward variants trained side by side in one compiled program.

A sweep file names a base training config and a grid (or a list) of `RewardConfig` fields,
and optionally seeds. Every member gets its own policy, value function, normaliser, RNG and
reward config; their `TrainState`s are stacked along a leading member axis and the trainer's
own iteration (`train.make_iteration`) is `jax.vmap`ped over it — one trainer, one compile.

Members trained on different rewards cannot be compared by their own returns, so every
`eval_every` iterations each member is also scored by `evaluate`'s yardstick (the
deepmimic_paper reward, deterministic policy, RSI off).

Sweep file (YAML):

    train: cpu_tiny              # base training config: preset name or path
    set: [horizon=16]            # optional overrides of the base (as `train --set`)
    grid:                        # reward fields -> values; members = the product
      pose_scale: [1, 2, 4]
      end_effector_scale: [10, 40]
    # or members: [{pose_scale: 1}, {pose_scale: 4, velocity_weight: 0}]
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
import numpy as np
import yaml

from mimic_mjx import checkpoint
from mimic_mjx import config as cfglib
from mimic_mjx import evaluate as eval_lib
from mimic_mjx import reward as reward_lib
from mimic_mjx import train as train_lib
from mimic_mjx.errors import MimicError

_KEYS = {"train", "set", "grid", "members", "seeds", "num_envs", "iterations", "eval_every", "eval_episodes"}
YARDSTICK = "normalized_return"


@dataclasses.dataclass(frozen=True)
class Member:
    index: int
    reward_overrides: dict  # RewardConfig field -> value
    seed: int

    @property
    def label(self) -> str:
        settings = " ".join(f"{k}={v:g}" for k, v in self.reward_overrides.items())
        return f"{settings} seed={self.seed}".strip()


@dataclasses.dataclass(frozen=True)
class Sweep:
    base: train_lib.TrainConfig  # resolved base config (num_envs per member, iterations)
    members: tuple[Member, ...]
    eval_every: int
    eval_episodes: int

    def member_config(self, member: Member) -> train_lib.TrainConfig:
        """The single-run config equivalent to `member` (what `train` would run alone)."""
        reward = self.base.reward.replace(**member.reward_overrides)
        return self.base.replace(reward=reward, seed=member.seed)


def load_sweep(path: str | pathlib.Path, overrides: list[str] | None = None) -> Sweep:
    """Read and validate a sweep file; every mistake is a one-line MimicError naming it."""
    path = pathlib.Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MimicError(f"{path}: sweep file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MimicError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(spec, dict):
        raise MimicError(f"{path}: a sweep file is a mapping with keys {', '.join(sorted(_KEYS))}")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise MimicError(f"{path}: unknown key '{unknown[0]}' (valid: {', '.join(sorted(_KEYS))})")
    for key, value in cfglib.parse_overrides(overrides or []).items():
        spec[key] = value
    if "train" not in spec:
        raise MimicError(f"{path}: 'train' (the base training config) is missing")
    base_path = pathlib.Path(spec["train"])
    if not base_path.is_absolute() and (path.parent / base_path).exists():
        base_path = path.parent / base_path
    base_sets = [str(s) for s in spec.get("set", [])]
    for key in ("num_envs", "iterations"):
        if key in spec:
            base_sets.append(f"{key}={spec[key]}")
    base = train_lib.resolve_defaults(train_lib.load_train_config(str(base_path), base_sets))
    grids = _member_overrides(path, spec)
    seeds = spec.get("seeds", [base.seed])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise MimicError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    members = tuple(
        Member(i, overrides, seed) for i, (overrides, seed) in enumerate(itertools.product(grids, seeds))
    )
    sweep = Sweep(base=base, members=members, eval_every=_positive(path, spec, "eval_every", 5),
                  eval_episodes=_positive(path, spec, "eval_episodes", 1))  # fmt: skip
    for m in members:
        sweep.member_config(m).reward.resolve()  # validates every value
    return sweep


def _positive(path, spec, key, default) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MimicError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    return value


def _member_overrides(path, spec) -> list[dict]:
    fields = set(reward_lib.RewardConfig.__dataclass_fields__)
    if ("grid" in spec) == ("members" in spec):
        raise MimicError(f"{path}: give exactly one of 'grid' or 'members'")
    if "grid" in spec:
        grid = spec["grid"]
        if not isinstance(grid, dict) or not grid:
            raise MimicError(f"{path}: 'grid' has no members (it must map reward fields to lists of values)")
        axes = []
        for key, values in grid.items():
            _check_field(path, f"grid.{key}", key, fields)
            if not isinstance(values, list) or not values:
                raise MimicError(f"{path}: 'grid.{key}' has no members (it must be a non-empty list of numbers)")
            axes.append([(key, _number(path, f"grid.{key}", v)) for v in values])
        return [dict(combo) for combo in itertools.product(*axes)]
    members = spec["members"]
    if not isinstance(members, list) or not members:
        raise MimicError(f"{path}: 'members' has no members (it must be a non-empty list of mappings)")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict):
            raise MimicError(f"{path}: 'members[{i}]' must map reward fields to numbers")
        for key in m:
            _check_field(path, f"members[{i}].{key}", key, fields)
        out.append({k: _number(path, f"members[{i}].{k}", v) for k, v in m.items()})
    return out


def _check_field(path, where, key, fields):
    if key not in fields:
        raise MimicError(f"{path}: '{where}' is not a RewardConfig field (valid: {', '.join(sorted(fields))})")


def _number(path, where, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MimicError(f"{path}: '{where}' must be a number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------- the program


def init_members(env, sweep: Sweep) -> train_lib.TrainState:
    """Stacked TrainState [M, ...]: member i initialised exactly as `train` would with its seed."""
    configs = [sweep.member_config(m).reward.resolve() for m in sweep.members]
    stacked = reward_lib.stack_configs(configs)
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in sweep.members])
    return jax.jit(jax.vmap(lambda k, rc: train_lib.init(env, sweep.base, k, rc)))(keys, stacked)


def make_programs(env, eval_env, sweep: Sweep):
    """(iteration, evaluation): the trainer's iteration and the yardstick, vmapped over members."""
    iteration = jax.jit(jax.vmap(train_lib.make_iteration(env, sweep.base)))
    score = eval_lib.make_evaluation(eval_env, sweep.base, sweep.eval_episodes)
    evaluation = jax.jit(jax.vmap(score, in_axes=(0, 0, 0, None)))
    return iteration, evaluation


def _yardstick(evaluation, state, rng) -> list[dict]:
    reward_config = jax.tree.map(lambda x: x[:, 0], state.env_state.reward_config)
    metrics = jax.device_get(evaluation(state.policy_params, state.normalizer, reward_config, rng))
    n = len(next(iter(metrics.values())))
    return [{k: float(v[i]) for k, v in metrics.items()} for i in range(n)]


def run(sweep: Sweep, out_dir: str | pathlib.Path, progress: Callable[[str], Any] = print) -> dict:
    """Train every member for `base.iterations`, scoring them on the yardstick; write out_dir.

    out_dir: `sweep.json` (members and settings), `metrics.jsonl` (one line per member per
    iteration, with `member`), `eval.jsonl` (yardstick per member per evaluation),
    `checkpoints/` (the stacked state), `results.md`, `yardstick.png` (if matplotlib is
    installed). Returns {"compiles": how many programs the jitted iteration compiled (its jit
    cache size: 1 however many members), "results": [...], "state": the stacked state}.
    """
    out = pathlib.Path(out_dir)
    if checkpoint.latest_step(out) is not None:
        raise MimicError(f"{out}: already holds a sweep; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    env, _ = train_lib.build_env(sweep.base)
    eval_env = eval_lib.eval_env(sweep.base)
    cfglib.save_config(sweep.base, out / "base_config.yaml")
    (out / "sweep.json").write_text(json.dumps(
        {"members": [{"member": m.index, "reward": m.reward_overrides, "seed": m.seed} for m in sweep.members],
         "eval_every": sweep.eval_every, "eval_episodes": sweep.eval_episodes}, indent=2))  # fmt: skip
    m_count = len(sweep.members)
    progress(f"sweep of {m_count} members x {sweep.base.num_envs} envs on '{env.clip.name}'; initialising ...")
    state = init_members(env, sweep)
    iteration, evaluation = make_programs(env, eval_env, sweep)
    progress("compiling the vmapped training iteration (first call) ...")
    metrics_file, eval_file = (out / "metrics.jsonl").open("w"), (out / "eval.jsonl").open("w")
    wall0, evals = time.perf_counter(), []
    for it in range(1, sweep.base.iterations + 1):
        t0 = time.perf_counter()
        state, metrics = iteration(state)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - t0
        if it == 1:
            progress(f"first iteration (compile + run) took {seconds:.1f} s")
        steps = int(state.env_steps[0])
        for i in range(m_count):
            row = {k: float(v[i]) for k, v in metrics.items()}
            row.update({"member": i, "training/iteration": it, "training/env_steps": steps,
                        "charts/SPS": m_count * sweep.base.num_envs * sweep.base.horizon / seconds,
                        "charts/iteration_s": seconds, "charts/wall_time_s": time.perf_counter() - wall0})
            metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        if it % sweep.eval_every == 0 or it == sweep.base.iterations:
            scores = _yardstick(evaluation, state, jax.random.PRNGKey(0))
            for i, s in enumerate(scores):
                eval_file.write(json.dumps({"member": i, "training/iteration": it, "training/env_steps": steps, **s}) + "\n")
            eval_file.flush()
            evals.append((it, steps, scores))
            best = max(range(m_count), key=lambda i: scores[i][YARDSTICK])
            worst = min(range(m_count), key=lambda i: scores[i][YARDSTICK])
            progress(f"iter {it:>4}/{sweep.base.iterations} steps/member {steps:>9,} {seconds:6.2f} s/iter  "
                     f"best #{best} {scores[best][YARDSTICK]:.3f} ({sweep.members[best].label})  "
                     f"worst #{worst} {scores[worst][YARDSTICK]:.3f} ({sweep.members[worst].label})")  # fmt: skip
        else:
            r = metrics["training/reward_fraction_of_max"]
            progress(f"iter {it:>4}/{sweep.base.iterations} steps/member {steps:>9,} {seconds:6.2f} s/iter  "
                     f"reward fraction best {np.max(r):.3f} worst {np.min(r):.3f}")
        if it % sweep.base.checkpoint_every == 0 or it == sweep.base.iterations:
            checkpoint.save(out, it, state, keep=sweep.base.keep_checkpoints)
    metrics_file.close()
    eval_file.close()
    results = _results(sweep, evals[-1][2])
    (out / "results.md").write_text(results_table(results))
    plotted = plot(sweep, evals, out / "yardstick.png")
    progress(results_table(results))
    progress(f"wrote {out}/results.md" + (f" and {out}/yardstick.png" if plotted else " (install matplotlib for the plot)"))
    return {"compiles": iteration._cache_size(), "results": results, "state": state}


def _results(sweep: Sweep, scores: list[dict]) -> list[dict]:
    rows = [{"member": m.index, "reward": m.reward_overrides, "seed": m.seed, **scores[m.index]} for m in sweep.members]
    return sorted(rows, key=lambda r: -r[YARDSTICK])


def results_table(results: list[dict]) -> str:
    """Markdown table sorted by the yardstick (best first)."""
    lines = ["| member | reward settings | seed | normalized return | episode length | joint angle error (rad) "
             "| end-effector error (m) | fall rate |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        settings = ", ".join(f"{k}={v:g}" for k, v in r["reward"].items()) or "(base)"
        lines.append(f"| {r['member']} | {settings} | {r['seed']} | {r['normalized_return']:.3f} | "
                     f"{r['episode_length_mean']:.1f} | {r['joint_angle_error_rad']:.3f} | "
                     f"{r['end_effector_error_m']:.3f} | {r['fall_rate']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(sweep: Sweep, evals: list, path: pathlib.Path) -> bool:
    """Yardstick curves of every member against env steps; False when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    steps = [s for _, s, _ in evals]
    for m in sweep.members:
        ax.plot(steps, [scores[m.index][YARDSTICK] for _, _, scores in evals], marker="o", label=f"#{m.index} {m.label}")
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("normalized return (deepmimic_paper reward, deterministic)")
    ax.set_title(f"reward sweep on {sweep.base.env.motion}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def extract(sweep_dir: str | pathlib.Path, member: int, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Write member `member` of a sweep as an ordinary run directory (config + checkpoint).

    `mimic-mjx eval OUT` and `mimic-mjx train --resume --out OUT` then work on it.
    """
    sweep_dir, out = pathlib.Path(sweep_dir), pathlib.Path(out_dir)
    info_path = sweep_dir / "sweep.json"
    if not info_path.exists():
        raise MimicError(f"{sweep_dir}: not a sweep directory (no sweep.json)")
    info = json.loads(info_path.read_text())
    if not 0 <= member < len(info["members"]):
        raise MimicError(f"--member {member}: the sweep has members 0..{len(info['members']) - 1}")
    base = cfglib.load_config(train_lib.TrainConfig, sweep_dir / "base_config.yaml", [])
    spec = info["members"][member]
    sweep = Sweep(base=base, members=tuple(Member(m["member"], m["reward"], m["seed"]) for m in info["members"]),
                  eval_every=info["eval_every"], eval_episodes=info["eval_episodes"])  # fmt: skip
    env, _ = train_lib.build_env(base)
    template = jax.eval_shape(lambda: init_members(env, sweep))
    state, step = checkpoint.restore(sweep_dir, template)
    single = jax.tree.map(lambda x: x[member], state)
    config = sweep.member_config(Member(member, spec["reward"], spec["seed"]))
    if checkpoint.latest_step(out) is not None:
        raise MimicError(f"{out}: already holds a training run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    cfglib.save_config(config, out / "config.yaml")
    lines = [line for line in (sweep_dir / "metrics.jsonl").read_text().splitlines()
             if line and json.loads(line)["member"] == member]  # fmt: skip
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    checkpoint.save(out, step, single, keep=base.keep_checkpoints)
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="sweep file (YAML), e.g. configs/sweep_reward_scales.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a sweep-file key, e.g. iterations=10 or num_envs=8 (repeatable)")
    parser.add_argument("--out", default=None, help="sweep directory (default: runs/sweep_<file name>)")


def run_cli(args) -> int:
    sweep = load_sweep(args.config, args.overrides)
    train_lib.enable_compile_cache()
    out = args.out or str(pathlib.Path("runs") / f"sweep_{pathlib.Path(args.config).stem}")
    run(sweep, out, progress=lambda line: print(line, flush=True))
    return 0


def add_extract_arguments(parser) -> None:
    parser.add_argument("sweep_dir", help="a sweep directory written by `mimic-mjx sweep`")
    parser.add_argument("--member", type=int, required=True, help="member index (see results.md)")
    parser.add_argument("--out", required=True, help="new run directory for the member")


def run_extract_cli(args) -> int:
    out = extract(args.sweep_dir, args.member, args.out)
    print(f"wrote member {args.member} to {out}: `mimic-mjx eval {out}` or `mimic-mjx train --resume --out {out}`")
    return 0
