"""The host side of training: the loop around the compiled iteration, and `mimic-mjx train`.

`train(config, out_dir)` writes `config.yaml`, `metrics.jsonl`, progress lines, health alarms
(decided by the pure rules in health.py), periodic evaluations into
`eval.jsonl` with the best policy in `best/`, and orbax checkpoints (`checkpoint.py`).
`host_loop` is shared with sweeps; `add_arguments`/`run_cli` are the `mimic-mjx train` command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
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
from mimic_mjx import policy as policy_lib
from mimic_mjx import reporting
from mimic_mjx.errors import MimicError
from mimic_mjx.health import Health, check_decay, check_health, plateau_fraction
from mimic_mjx.runconfig import (DEFAULT_CONFIG, DEFAULT_CONFIG_CPU, TrainConfig, announce_default, load_train_config,
                                  resolve_defaults)
from mimic_mjx.train import (UPGRADABLE, TrainState, abstract_state, build_env, init, make_iteration, place,
                             with_config_leaves)


def eval_scores(run_dir: pathlib.Path) -> list[float]:
    """The selection score of every periodic evaluation in `run_dir/eval.jsonl`, in order."""
    path = run_dir / "eval.jsonl"
    rows = [json.loads(row) for row in path.read_text().splitlines() if row.strip()] if path.exists() else []
    return [row.get("eval/selection_score", row["eval/normalized_return"]) for row in rows]


def kl_fraction(config: TrainConfig, scores: list[float]) -> float:
    """The adaptive step's fraction of trpo.max_kl after these evaluation scores, by config."""
    return plateau_fraction(scores, config.kl_plateau_evals, config.kl_plateau_factor, config.kl_plateau_floor,
                            config.kl_plateau_min_score)


def with_kl_fraction(state: TrainState, config: TrainConfig, fraction: float) -> TrainState:
    """`state` with its max_kl leaf at `fraction` of the config's, on the leaf's own device(s)
    and dtype, so the compiled iteration takes it unchanged."""
    old = state.trpo.max_kl
    new = jax.device_put(jnp.asarray(config.trpo.max_kl * fraction, old.dtype), old.sharding)
    return state.replace(trpo=state.trpo.replace(max_kl=new))


# ------------------------------------------------------------------------ host loop


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    history: list  # metric dicts of the iterations this call ran
    run_dir: pathlib.Path


def trim_log(path: pathlib.Path, last_iteration: int) -> float:
    """Keep only the metric lines up to `last_iteration` (a crash may have left later ones);
    returns the wall clock the kept lines reached (`charts/wall_time_s`), 0 if none."""
    if not path.exists():
        return 0.0
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["training/iteration"] <= last_iteration]
    path.write_text("".join(line + "\n" for line in keep))
    return json.loads(keep[-1]).get("charts/wall_time_s", 0.0) if keep else 0.0


def trim_logs(run_dir: pathlib.Path, step: int) -> float:
    """A resumed run's `metrics.jsonl` and `eval.jsonl` cut back to checkpoint `step`;
    returns the wall clock the metrics reached (`trim_log`)."""
    trim_log(run_dir / "eval.jsonl", step)
    return trim_log(run_dir / "metrics.jsonl", step)


def silent(line: str) -> None:
    """The progress of processes other than 0: process 0 speaks for the run."""


def writer_progress(run_dir: pathlib.Path, progress: Callable[[str], Any]) -> tuple[bool, Callable[[str], Any]]:
    """`(whether this process writes run_dir, its progress callback)`: process 0 keeps
    `progress`; over several processes the others say once who writes, then stay silent."""
    if distributed.is_writer():
        return True, progress
    progress(f"process {jax.process_index()} of {jax.process_count()}: training with the others; "
             f"process 0 writes {run_dir}")
    return False, silent


def _first(x) -> int:
    """An int from a scalar or from the [M] copies a sweep's members hold (all equal)."""
    return int(jax.device_get(x).reshape(-1)[0])


def reporters(run_dir: pathlib.Path, progress, iterations: int, *, tensorboard: str | None = None,
              members: int = 0, extra=()) -> list:
    """The host loop's `progress_fn(step, rows)` callbacks (reporting.py): the progress line,
    then, on the writing process, `metrics.jsonl` and the TensorBoard files; then `extra`.
    `members`: a sweep's member count (0: a run)."""
    fns = [reporting.printer(progress, iterations, sweep=members > 0)]
    if distributed.is_writer():
        fns.append(reporting.jsonl_writer(run_dir / "metrics.jsonl"))
        if tensorboard:
            fns.append(reporting.tensorboard_writer(tensorboard, members))
    return fns + list(extra)


def host_loop(step_fn: Callable, state: TrainState, config: TrainConfig, run_dir: pathlib.Path, progress,
              *, start_time: float, wall_offset: float = 0.0, evaluate: Callable | None = None,
              eval_every: int = 0, members: list | None = None, progress_fns=()):
    """The Python side of training, the same for a run and a sweep: call the compiled
    iteration, report it to every `progress_fns(step, rows)` (`reporters`: the progress
    line, `metrics.jsonl`, TensorBoard), raise health alarms, checkpoint, evaluate, and stop
    at `config.iterations` or `config.time_limit_minutes`.

    `members` (a sweep's, each with a `label`): `step_fn` returns metrics with a leading
    member axis; each member gets its own row (with `member`) and its own alarms.
    `evaluate(state, common)` runs every `eval_every` iterations, at the end and at the time
    limit; a state it returns replaces the loop's (None: unchanged). Returns (state, history):
    one metrics dict per iteration (a list of the members' dicts for a sweep).
    """
    count = 1 if members is None else len(members)
    healths, history = [Health()] * count, []
    samples = count * config.num_envs * config.horizon
    done = _first(state.iteration)
    while done < config.iterations:
        t0 = time.perf_counter()
        state, metrics = step_fn(state)
        metrics = jax.device_get(metrics)
        done = _first(state.iteration)
        elapsed = time.perf_counter() - t0
        common = {"training/iteration": done, "training/env_steps": _first(state.env_steps),
                  "charts/SPS": samples / elapsed, "charts/iteration_s": elapsed,
                  # Wall clock of the whole run, setup and compiles included, summed over resumes.
                  "charts/wall_time_s": wall_offset + time.perf_counter() - start_time}
        if members is None:
            rows = [{**{k: float(v) for k, v in metrics.items()}, **common}]
        else:
            rows = [{**{k: float(v[i]) for k, v in metrics.items()}, "member": i, **common} for i in range(count)]
        history.append(rows[0] if members is None else rows)
        for report in progress_fns:
            report(done, rows)
        for i, row in enumerate(rows):
            healths[i], alarms = check_health(row, healths[i], config.env.motion)
            for message in alarms:
                progress(message if members is None else f"member {i} ({members[i].label}): {message}")
        out_of_time = distributed.agree(config.time_limit_minutes is not None
                                        and time.perf_counter() - start_time >= 60.0 * config.time_limit_minutes)
        if done % config.checkpoint_every == 0 or done == config.iterations or out_of_time:
            checkpoint.save(run_dir, done, state, keep=config.keep_checkpoints)
        if eval_every and (done % eval_every == 0 or done == config.iterations or out_of_time):
            if evaluate is not None:  # process 0's alone over several processes
                # It may hand back the state with new TRPO leaves (the adaptive step).
                state = evaluate(state, common) or state
            distributed.barrier(f"mimic_mjx evaluated {done}")  # the others wait for it
        if out_of_time and done < config.iterations:
            progress(f"time limit of {config.time_limit_minutes:g} minutes reached at iteration {done}; "
                     f"checkpoint saved (continue with --resume --out {run_dir})")
            break
    for report in progress_fns:
        getattr(report, "close", lambda: None)()
    return state, history


BEST_DIR = "best"


def best_score(run_dir: pathlib.Path) -> float:
    """The selection score of the policy in `run_dir/best/` (-inf when there is none)."""
    meta = run_dir / BEST_DIR / "meta.json"
    return json.loads(meta.read_text())["score"] if meta.exists() else -math.inf


def _periodic_evaluation(config: TrainConfig, run_dir: pathlib.Path, progress) -> Callable:
    """`(state, metrics) -> None`: score the policy with `mimic-mjx eval`'s yardstick (mean
    actions, the paper reward) from t = 0 and, with `eval_rsi_episodes`, from random clip
    times; append one line to `run_dir/eval.jsonl`; and write the policy to `run_dir/best/`
    when its score (the t = 0 return, or the mean of both returns) beats every earlier one.

    Why keep the best: a run's return can peak and then decay while training reward still
    rises (walk_cpu run 2: 0.82 at iteration 2,300, 0.585 at the end), and the newest
    checkpoints alone would have lost the peak.
    """
    env = eval_lib.eval_env(config)
    score = jax.jit(eval_lib.make_evaluation(env, config, config.eval_episodes))
    full = eval_lib.full_episode_steps(env)
    score_rsi = None
    if config.eval_rsi_episodes > 0:
        score_rsi = jax.jit(eval_lib.make_evaluation(eval_lib.eval_env(config, rsi=True), config,
                                                     config.eval_rsi_episodes))

    alarmed: list = []

    def run(state: TrainState, metrics: dict) -> None:
        # Host copies, so the evaluation is this process's own program on its own device (over
        # several processes, a jit of the global arrays would need every process to join it).
        # Every environment of a run holds the same reward leaves: take the first local one.
        reward_config = jax.tree.map(lambda x: parallel.local_copy(x)[0], state.env_state.reward_config)
        args = (*jax.device_get((state.policy_params, state.normalizer)), reward_config, jax.random.PRNGKey(0))
        line = {"training/iteration": metrics["training/iteration"], "training/env_steps": metrics["training/env_steps"],
                "charts/wall_time_s": metrics["charts/wall_time_s"],
                **{f"eval/{k}": float(v) for k, v in jax.device_get(score(*args)).items()}}
        selection = line["eval/normalized_return"]
        if score_rsi is not None:
            line.update({f"eval_rsi/{k}": float(v) for k, v in jax.device_get(score_rsi(*args)).items()})
            selection = 0.5 * (selection + line["eval_rsi/normalized_return"])
        line["eval/selection_score"] = selection
        with (run_dir / "eval.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        text = (f"eval  {line['training/iteration']:>5}  normalized return {line['eval/normalized_return']:.3f}  "
                f"episode {line['eval/episode_length_mean']:.0f}/{full} steps  fall rate {line['eval/fall_rate']:.2f}  "
                f"root drift {line['eval/root_drift_m']:.2f} m")
        if score_rsi is not None:
            text += (f"  | rsi return {line['eval_rsi/normalized_return']:.3f}  "
                     f"fall rate {line['eval_rsi/fall_rate']:.2f}")
        scores = eval_scores(run_dir)
        decay = check_decay(scores, config.decay_alarm_margin, config.decay_alarm_evals)
        if selection > best_score(run_dir):
            policy_lib.write(run_dir / BEST_DIR, config, args[0], args[1],
                             {"run": str(run_dir), "iteration": line["training/iteration"],
                              "env_steps": line["training/env_steps"], "score": selection,
                              **{k: v for k, v in line.items() if k.startswith("eval")}})
            text += "  (best so far: saved to best/)"
        progress(text)
        if decay is not None and not alarmed:
            alarmed.append(True)  # once per command: the run keeps going, best/ keeps the peak
            progress(f"ALARM decay: {decay}")
        if config.kl_plateau_evals:
            fraction = kl_fraction(config, scores)
            if fraction != kl_fraction(config, scores[:-1]):
                n = config.kl_plateau_evals
                progress(f"adaptive step: {n} evaluation{'s' if n != 1 else ''} without a new best; trpo.max_kl "
                         f"now {fraction:g} x {config.trpo.max_kl:g} (floor {config.kl_plateau_floor:g} x)")
                return with_kl_fraction(state, config, fraction)
        return None

    return run


def train(config: TrainConfig, out_dir: str | pathlib.Path, resume: bool = False,
          progress: Callable[[str], Any] = print, progress_fns=(), tensorboard: str | None = None) -> TrainResult:
    """Train for `config.iterations` (total, counting resumed ones) and write the run directory.

    `out_dir/config.yaml` (resolved config), `metrics.jsonl` (one JSON object per iteration),
    `checkpoints/<iteration>/`. `resume=True` restores the latest checkpoint and continues
    bit-for-bit as an uninterrupted run would on the same machine. `progress` gets the text
    lines; each of `progress_fns` gets `(iteration, [metrics])` after every iteration
    (reporting.py); `tensorboard`: a folder for TensorBoard event files.
    """
    config = resolve_defaults(config)
    if config.kl_plateau_evals and not config.eval_every:
        raise MimicError(f"kl_plateau_evals = {config.kl_plateau_evals} needs the periodic evaluation: "
                         "set eval_every > 0")
    if config.kl_plateau_evals and jax.process_count() > 1:
        raise MimicError("kl_plateau_evals: the adaptive step runs in single-process training only")
    command_start = time.perf_counter()
    run_dir = check_run_dir(out_dir, resume)
    writer, progress = writer_progress(run_dir, progress)
    metrics_path = run_dir / "metrics.jsonl"
    env, reward_config = build_env(config)
    if resume:
        state, step = checkpoint.restore_newest(run_dir, abstract_state(env, config), report=progress,
                                                set_aside=writer, fillable=UPGRADABLE)
        state = with_config_leaves(state, config, reward_config)
        progress(f"resumed {run_dir} at iteration {step}")
        wall_offset = trim_logs(run_dir, step) if writer else 0.0
    else:
        if checkpoint.latest_step(run_dir) is not None:
            raise MimicError(f"{run_dir}: already holds a training run; pass --resume or choose another --out")
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            metrics_path.write_text("")
            (run_dir / "eval.jsonl").unlink(missing_ok=True)
            shutil.rmtree(run_dir / BEST_DIR, ignore_errors=True)
        wall_offset = 0.0
        start = time.perf_counter()
        # Reward and TRPO leaves are arguments, not constants, so runs that differ only in
        # those numbers share one compiled program (and its persistent-cache entry).
        init_fn = compiled.compile_fresh(lambda key, rc, hyper: init(env, config.replace(trpo=hyper), key, rc),
                                         jax.random.PRNGKey(config.seed), reward_config, config.trpo)
        state = init_fn(jax.random.PRNGKey(config.seed), reward_config, config.trpo)
        progress(f"initialised {config.num_envs} environments in {time.perf_counter() - start:.1f} s")
    if writer:
        cfglib.save_config(config, run_dir / "config.yaml")

    if int(state.iteration) >= config.iterations:
        progress(f"nothing to do: {run_dir} has reached iterations = {config.iterations}")
        return TrainResult(state=state, history=[], run_dir=run_dir)
    state, mesh, out_shardings = place(state, config)
    if resume and config.kl_plateau_evals:  # the adaptive step where the run left it (eval.jsonl, trimmed)
        fraction = kl_fraction(config, eval_scores(run_dir))
        if fraction != 1.0:
            state = with_kl_fraction(state, config, fraction)
            progress(f"adaptive step: trpo.max_kl resumes at {fraction:g} x {config.trpo.max_kl:g}")
    if mesh is not None:
        progress(f"{config.num_envs} environments split over {mesh.size} devices "
                 f"({config.num_envs // mesh.size} each): {', '.join(str(d) for d in mesh.devices)}")
    progress("compiling the training iteration (first call) ...")
    start = time.perf_counter()
    step_fn = compiled.compile_fresh(make_iteration(env, config, mesh), state, out_shardings=out_shardings)
    progress(f"compiled in {time.perf_counter() - start:.1f} s")
    distributed.barrier("mimic_mjx compiled")  # the first step's collectives start together

    evaluate = _periodic_evaluation(config, run_dir, progress) if config.eval_every > 0 and writer else None
    fns = reporters(run_dir, progress, config.iterations, tensorboard=tensorboard, extra=progress_fns)
    state, history = host_loop(step_fn, state, config, run_dir, progress, start_time=command_start,
                               wall_offset=wall_offset, evaluate=evaluate, eval_every=config.eval_every,
                               progress_fns=fns)
    return TrainResult(state=state, history=history, run_dir=run_dir)


# ------------------------------------------------------------------------------- CLI

def check_run_dir(run_dir: str | pathlib.Path, resume: bool, what: str = "training run",
                  can_resume: bool = True) -> pathlib.Path:
    """Refuse an output directory that cannot be used, before any environment is built:
    a path that is (or lies under) a file, a run to resume that has no checkpoint, or a
    fresh run into a directory that already holds one."""
    run_dir = pathlib.Path(run_dir)
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == run_dir else f"lies under {path}, which is a file"
                raise MimicError(f"--out {run_dir}: {where}, not a directory; choose another --out")
            break
    has_checkpoint = checkpoint.latest_step(run_dir) is not None
    if resume and not has_checkpoint:
        raise MimicError(f"--out {run_dir}: no checkpoint to resume (start it without --resume)")
    if not resume and has_checkpoint:
        hint = "pass --resume or choose another --out" if can_resume else "choose another --out"
        raise MimicError(f"--out {run_dir}: already holds a {what}; {hint}")
    return run_dir


def check_clip(config: TrainConfig) -> None:
    """Find and parse `env.motion` (a few milliseconds) so a bad clip is refused before the
    environment is built; MimicError says where the lookup looked."""
    from mimic_mjx import clipstore, motion

    motion.parse_clip_file(clipstore.find_clip(config.env.motion))


def add_arguments(parser) -> None:
    """`mimic-mjx train` flags."""
    parser.add_argument("--config", default=None,
                        help=f"YAML file or preset name in configs/ (default: {DEFAULT_CONFIG_CPU} on a CPU, {DEFAULT_CONFIG} on a GPU; "
                             "with --resume: the run's config.yaml)")
    parser.add_argument("--motion", default=None, help="clip name or path (sets env.motion)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, e.g. trpo.max_kl=0.02 (repeatable)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<motion>)")
    parser.add_argument("--resume", action="store_true", help="continue the latest checkpoint in --out")
    add_tensorboard_argument(parser)
    distributed.add_arguments(parser)


def add_tensorboard_argument(parser) -> None:
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also write the metrics as TensorBoard event files into DIR "
                             "(needs the tensorboard extra: pip install 'mimic_mjx[tensorboard]')")


def config_from_args(args) -> tuple[TrainConfig, str]:
    """`mimic-mjx train`'s resolved config and run directory from parsed `args`, every input
    checked (MimicError) before an environment is built or a program compiled."""
    overrides = ([f"env.motion={args.motion}"] if args.motion else []) + list(args.overrides)
    path = args.config
    if path is None:
        saved = pathlib.Path(args.out) / "config.yaml" if args.out else None
        if args.resume and saved is not None and saved.exists():
            path = saved
        else:
            path = announce_default(args.motion)
    if args.resume and args.out is None:
        raise MimicError("--resume needs --out, the run directory to continue")
    config = resolve_defaults(load_train_config(path, overrides))
    distributed.check_devices(config.devices)
    parallel.make_mesh(config.devices, config.num_envs)  # a layout this machine cannot run: one line now
    out = args.out or str(pathlib.Path("runs") / pathlib.Path(config.env.motion).stem)
    check_run_dir(out, args.resume)
    if args.resume and args.config is not None:
        check_resume_config(config, pathlib.Path(out) / "config.yaml", overrides, args.config)
    check_clip(config)
    return config, out


def check_resume_config(config: TrainConfig, saved: pathlib.Path, overrides: list[str], given: str) -> None:
    """Refuse `--resume --config FILE` when FILE is not the run's own config: config leaves
    replace on resume, so another preset would silently change the seed, the terminations or
    the TRPO numbers under the checkpoint. `--set` is the route for a deliberate change."""
    if not saved.exists():
        return
    differ = cfglib.differences(resolve_defaults(load_train_config(saved, overrides)), config)
    if not differ:
        return
    shown = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in list(differ.items())[:4]) + (", ..." if len(differ) > 4 else "")
    raise MimicError(f"--resume --config {given}: differs from {saved} ({shown}); resume without --config "
                     "to continue the run as it was, and change a setting with --set")


def run_cli(args) -> int:
    """Run `mimic-mjx train` from parsed `args`; MimicError propagates to the CLI's one-line handler."""
    # Before anything asks JAX for devices: the mesh then spans every process's devices.
    distributed.initialize(distributed.settings_from_args(args))
    config, out = config_from_args(args)
    if args.tensorboard:
        reporting.check_tensorboard()
    compiled.enable_compile_cache()
    train(config, out, resume=args.resume, progress=lambda line: print(line, flush=True), tensorboard=args.tensorboard)
    return 0
