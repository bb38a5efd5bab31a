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

Every row times whole chunks of `train.TrainConfig.horizon` control steps (physics rows: the
same simulated time, horizon × substeps physics steps), so `--steps` is rounded up to whole
chunks. Ratios must survive a shared machine, so the env and policy rows alternate their calls
with calls of the physics row's compiled function, and the train row with the policy row's
(PAIRS); a ratio then compares times taken under the same load.

Each row compiles exactly one function; the env, policy and train rows start from one
`train.init` state per batch (its compile is reported under `setup`), the physics and native
rows from mocap frames built on the host (no compile).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import resource
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mimic_mjx import brax_adapter
from mimic_mjx import env as env_lib
from mimic_mjx import physics as physics_lib
from mimic_mjx.errors import MimicError

ROWS = ("physics", "native", "env", "policy", "train", "sweep", "brax")
# The sweep row is issue 5's cost question, not a throughput row: run it with --rows.
DEFAULT_ROWS = tuple(r for r in ROWS if r != "sweep")
# The sweep row splits the batch over this many members (issue: M members x N/M envs vs N).
SWEEP_MEMBERS = 4
# The issue's sizes for one GPU; on the 2-core CPU a batch of 32 runs every row in minutes.
GPU_BATCHES = (128, 1024, 8192)
CPU_BATCHES = (32,)
# 96 control steps = 3 iterations of the default 32-step horizon: a few seconds per CPU row.
DEFAULT_STEPS = 96
# mujoco.rollout writes out every step's full state; capping envs × control steps per call at
# 1024 keeps that buffer to a few MB at any batch size.
_NATIVE_STATES_PER_CALL = 1024
UNITS = {"physics": "physics steps/s", "native": "physics steps/s"}
# Row -> the row whose compiled function it is timed interleaved with (one call of each in
# turn), so a ratio between them sees the same machine load even on a shared machine.
PAIRS = {"env": "physics", "policy": "physics", "train": "policy", "sweep": "train"}
# Rows that run once per physics backend; the others use the first backend's environment.
PER_BACKEND = ("physics", "env", "policy", "train")


# ------------------------------------------------------------------------- pure helpers


def parse_batches(text: str) -> tuple[int, ...]:
    """`"128,1024"` -> (128, 1024); MimicError for anything but positive integers."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        batches = tuple(int(p) for p in parts)
    except ValueError:
        raise MimicError(f"--batch {text!r}: expected positive integers separated by commas, e.g. 128,1024") from None
    if not batches or any(b < 1 for b in batches):
        raise MimicError(f"--batch {text!r}: every batch size must be >= 1")
    return batches


def parse_rows(text: str) -> tuple[str, ...]:
    """`"physics,native"` -> ("physics", "native") in the canonical order of ROWS."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        raise MimicError(f"--rows {text!r}: unknown row {given} (known: {', '.join(ROWS)})")
    return tuple(r for r in ROWS if r in names)


def chunk_count(steps: int, horizon: int) -> int:
    """Timed calls of a `horizon`-step chunk that cover at least `steps` control steps."""
    return max(1, math.ceil(steps / horizon))


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


def initial_physics_states(clip, mj_model: mujoco.MjModel, batch: int, seed: int = 0):
    """Mocap frames as physics states: `(qpos [B, nq], qvel [B, nv], ctrl [B, nu])`, numpy.

    Frames are drawn uniformly (RSI without interpolation), lifted out of the floor as
    `env.reset` does, and `ctrl` holds each pose with the PD actuators.
    """
    frames = np.random.default_rng(seed).integers(0, clip.num_frames, batch)
    qpos = clip.qpos[frames].copy()
    qpos[:, 2] += np.maximum(0.0, -clip.lowest_point[frames])
    act_qpos = mj_model.jnt_qposadr[mj_model.actuator_trnid[:, 0]]
    return qpos, clip.qvel[frames].copy(), qpos[:, act_qpos].copy()


def add_ratios(rows: list[dict], substeps: int) -> list[dict]:
    """Cross-row numbers, per batch: env/policy vs physics, MJX vs native, update fraction, vs Brax."""
    by = {(r["name"], r["batch"], r.get("physics")): r for r in rows if r.get("steps_per_s")}
    out = []
    for r in rows:
        r = dict(r)

        def get(name, physics=r.get("physics")):  # interleaved when this row has one, else the other row's
            if r.get("paired_with") == name and r.get("pair_steps_per_s") and physics == r.get("physics"):
                return r["pair_steps_per_s"]
            row = by.get((name, r["batch"], physics)) or by.get((name, r["batch"], "mjx")) or by.get(
                (name, r["batch"], None))
            return (row or {}).get("steps_per_s")

        mjx_row = by.get((r["name"], r["batch"], "mjx"))
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
    header = (f"{'row':<8} {'physics':<7} {'batch':>6} {'steps/s':>9} {'unit':<16} {'compile s':>9} "
              f"{'peak mem':>9} {'program':>9}  notes")
    lines += [header, "-" * len(header)]
    for r in report["rows"]:
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        notes = r.get("skipped") or r.get("notes", "")
        lines.append(f"{r['name']:<8} {r.get('physics') or '-':<7} {r['batch']:>6} {_si(r['steps_per_s']):>9} "
                     f"{r['unit']:<16} {compile_s:>9} {_si(r['peak_mem_bytes']):>9} {_si(r.get('program_bytes')):>9}  "
                     f"{notes}")
    lines.append("")
    for r in report["rows"]:
        if r.get("native_over_mjx") is not None:
            lines.append(f"{r['name']} (batch {r['batch']}): native / mjx steps/s = {r['native_over_mjx']:.3g}")
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


# ---------------------------------------------------------------- machine and versions


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


def _peak_device_bytes():
    """Process-wide peak device memory so far (GPU); None where JAX keeps no stats (CPU)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _program_bytes(compiled) -> int | None:
    """XLA's static size of a compiled program's buffers: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


# ------------------------------------------------------------------------------ rows


@dataclasses.dataclass
class Bench:
    """What every row shares: the env, the default training config, chunking, progress."""

    envs: dict  # physics backend -> env_lib.ImitationEnv
    train_config: Any  # train.TrainConfig
    steps: int
    progress: Callable[[str], Any]
    profile_dir: str | None = None  # --profile: one extra call of each row under jax.profiler
    _setup: dict = dataclasses.field(default_factory=dict)
    setup_log: list = dataclasses.field(default_factory=list)
    kept: dict = dataclasses.field(default_factory=dict)  # (row, batch, physics) -> _Timed, for PAIRS
    physics: str = ""  # the backend the per-backend rows run on now

    @property
    def env(self) -> env_lib.ImitationEnv:
        return self.envs[self.physics or next(iter(self.envs))]

    @property
    def horizon(self) -> int:
        return self.train_config.horizon

    @property
    def chunks(self) -> int:
        return chunk_count(self.steps, self.horizon)

    def config_for(self, batch: int):
        from mimic_mjx import train

        config = self.train_config.replace(num_envs=batch)
        return train.resolve_defaults(config.replace(env=config.env.replace(physics=self.env.physics.backend)))

    def setup(self, batch: int):
        """`train.init` state for `batch` envs, compiled and run once per batch."""
        if (batch, self.env.physics.backend) not in self._setup:
            from mimic_mjx import train

            config = self.config_for(batch)
            reward_config = config.reward
            self.progress(f"[bench] batch {batch}: compiling the shared setup (train.init: reset_batch + networks) ...")
            start = time.perf_counter()
            compiled = jax.jit(lambda key: train.init(self.env, config, key, reward_config)).lower(
                jax.random.PRNGKey(0)).compile()
            compile_s = time.perf_counter() - start
            self._setup[batch, self.env.physics.backend] = jax.block_until_ready(compiled(jax.random.PRNGKey(0)))
            self.setup_log.append({"batch": batch, "physics": self.env.physics.backend,
                                   "what": "train.init (reset_batch + network init)", "compile_s": round(compile_s, 2)})
        return self._setup[batch, self.env.physics.backend]

    def time_row(self, name: str, batch: int, fn, carry, steps_per_call: int) -> dict:
        """Compile `fn: carry -> (carry, out)`, run it once, then time `self.chunks` chained calls,
        each preceded by one call of the PAIRS row's function when that row ran at this batch."""
        backend = self.env.physics.backend
        tag = f"[bench] batch {batch}: {name} ({backend}):"
        self.progress(f"{tag} compiling ...")
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(carry).compile()
        compile_s = time.perf_counter() - start
        self.progress(f"{tag} compiled in {compile_s:.1f} s; warm-up call ...")
        own = _Timed(compiled, carry, steps_per_call * batch)
        own.call()
        own.seconds, own.calls = 0.0, 0
        pair = self.kept.get((PAIRS.get(name), batch, backend))
        if pair is not None:
            pair.seconds, pair.calls = 0.0, 0
        for _ in range(self.chunks):
            if pair is not None:
                pair.call()
            own.call()
        if name in PAIRS.values():
            self.kept[name, batch, backend] = own
        total = steps_per_call * batch * self.chunks
        self.progress(f"{tag} {total / own.seconds:,.0f} {UNITS.get(name, 'env steps/s')} "
                      f"({total:,} steps in {own.seconds:.2f} s)")
        if self.profile_dir:  # a traced call is slower: outside the timing, carry not advanced
            trace = os.path.join(self.profile_dir, f"{name}-{backend}-{batch}")
            with jax.profiler.trace(trace):
                jax.block_until_ready(compiled(own.carry))
            self.progress(f"{tag} profile of one call in {trace}")
        extra = {}
        if pair is not None:
            extra = {"paired_with": PAIRS[name], "pair_steps_per_s": round(pair.steps_per_s, 1)}
        return _row(name, batch, total / own.seconds, compile_s, own.seconds, total, physics=backend,
                    peak_mem_bytes=_peak_device_bytes(), program_bytes=_program_bytes(compiled), **extra)


@dataclasses.dataclass
class _Timed:
    """A compiled `carry -> (carry, out)` with its current carry and the time its calls took."""

    compiled: Any
    carry: Any
    steps: int  # env or physics steps one call advances (all envs)
    seconds: float = 0.0
    calls: int = 0

    def call(self) -> None:
        start = time.perf_counter()
        self.carry, out = self.compiled(self.carry)
        jax.block_until_ready((self.carry, out))
        self.seconds += time.perf_counter() - start
        self.calls += 1

    @property
    def steps_per_s(self) -> float:
        return self.calls * self.steps / self.seconds


def _row(name, batch, steps_per_s, compile_s, run_s, timed_steps, **extra) -> dict:
    row = {"name": name, "batch": batch, "unit": UNITS.get(name, "env steps/s"),
           "steps_per_s": None if steps_per_s is None else round(steps_per_s, 1),
           "compile_s": None if compile_s is None else round(compile_s, 2),
           "peak_mem_bytes": None, "run_s": None if run_s is None else round(run_s, 3), "timed_steps": timed_steps}
    row.update(extra)
    return row


def _skipped(name: str, batch: int, reason: str) -> dict:
    return _row(name, batch, None, None, None, 0, skipped=reason)


def physics_chunk(physics: physics_lib.Physics, length: int):
    """`data [B] -> (data [B], None)`: `length` batched control steps (`Physics.step`) in one `lax.scan`."""
    step = jax.vmap(physics.step)

    def run(data):
        data, _ = jax.lax.scan(lambda d, _: (step(d)[0], None), data, None, length=length)
        return data, None

    return run


def env_chunk(env: env_lib.ImitationEnv, length: int):
    """`(state [B], key) -> ((state, key), None)`: `length` env steps under uniform random actions."""

    def body(carry, _):
        state, key = carry
        key, sub = jax.random.split(key)
        actions = jax.random.uniform(sub, (state.time.shape[0], env.action_size), minval=-1.0, maxval=1.0)
        return (jax.vmap(env.step)(state, actions), key), None

    def run(carry):
        carry, _ = jax.lax.scan(body, carry, None, length=length)
        return carry, None

    return run


def run_physics(bench: Bench, batch: int) -> dict:
    env = bench.env
    qpos, qvel, ctrl = initial_physics_states(env.clip, env.mj_model, batch)
    data = jax.vmap(env.physics.put)(jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32),
                                     jnp.asarray(ctrl, jnp.float32))
    length = bench.horizon
    row = bench.time_row("physics", batch, physics_chunk(env.physics, length), data, length * env.substeps)
    how = "vmap(mjx.step)" if env.physics.backend == "mjx" else "pure_callback(mujoco.rollout)"
    row["notes"] = f"{how} in lax.scan({length} control steps x {env.substeps}); PD holding mocap poses"
    return row


def run_native(bench: Bench, batch: int) -> dict:
    """`mujoco.rollout` of the physics row's states and controls, one thread per CPU core."""
    from mujoco import rollout

    env, m = bench.env, bench.env.mj_model
    qpos, qvel, ctrl = initial_physics_states(env.clip, m, batch)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.empty((batch, mujoco.mj_stateSize(m, spec)))
    d = mujoco.MjData(m)
    for b in range(batch):
        d.qpos[:], d.qvel[:] = qpos[b], qvel[b]
        mujoco.mj_getState(m, d, state[b], spec)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Control steps per call: bounded so the per-step state output stays small at big batches.
    per_call = max(1, min(bench.horizon, _NATIVE_STATES_PER_CALL // batch))
    nstep = per_call * env.substeps
    calls = math.ceil(bench.chunks * bench.horizon / per_call)
    control = np.repeat(ctrl[:, None, :], nstep, axis=1)
    out = np.empty((batch, nstep, state.shape[1]))
    datas = [mujoco.MjData(m) for _ in range(threads)]
    bench.progress(f"[bench] batch {batch}: native: mujoco.rollout on {threads} threads ...")
    with rollout.Rollout(nthread=threads if threads > 1 else 0) as pool:
        pool.rollout(m, datas, state, control, nstep=nstep, state=out)  # warm-up: starts the pool
        state = out[:, -1].copy()
        start = time.perf_counter()
        for _ in range(calls):
            pool.rollout(m, datas, state, control, nstep=nstep, state=out)
            state[:] = out[:, -1]
        run_s = time.perf_counter() - start
    total = calls * nstep * batch
    bench.progress(f"[bench] batch {batch}: native: {total / run_s:,.0f} physics steps/s")
    return _row("native", batch, total / run_s, None, run_s, total, threads=threads,
                notes=f"mujoco.rollout, {threads} threads, {nstep} steps per call (warm start reset per call)")


def run_env(bench: Bench, batch: int) -> dict:
    env_state = bench.setup(batch).env_state
    row = bench.time_row("env", batch, env_chunk(bench.env, bench.horizon), (env_state, jax.random.PRNGKey(1)),
                         bench.horizon)
    row["notes"] = "env.step: physics, reward, obs, auto-reset; uniform random actions"
    return row


def run_policy(bench: Bench, batch: int) -> dict:
    from mimic_mjx import train

    config = bench.config_for(batch)
    policy, _ = train.make_networks(bench.env, config)

    def run(state):
        rng, key = jax.random.split(state.rng)
        state, traj = train.rollout(bench.env, policy, state, key, config.horizon)
        return state.replace(rng=rng), traj

    row = bench.time_row("policy", batch, run, bench.setup(batch), config.horizon)
    row["notes"] = f"train.rollout: policy {tuple(config.network.policy_hidden)} sampling + env.step"
    return row


def run_train(bench: Bench, batch: int) -> dict:
    from mimic_mjx import train

    config = bench.config_for(batch)
    row = bench.time_row("train", batch, train.make_iteration(bench.env, config), bench.setup(batch), config.horizon)
    row["notes"] = f"train.make_iteration: rollout({config.horizon}) + GAE + TRPO + value fit"
    return row


def run_sweep(bench: Bench, batch: int) -> dict:
    """SWEEP_MEMBERS members with batch / SWEEP_MEMBERS envs each, the vmapped iteration of
    `mimic-mjx sweep`; timed interleaved with the train row's single run of `batch` envs."""
    from mimic_mjx import reward as reward_lib
    from mimic_mjx import train

    members = SWEEP_MEMBERS
    if batch % members:
        return _skipped("sweep", batch, f"batch {batch} is not a multiple of {members} members")
    config = bench.config_for(batch // members)
    base = config.reward
    # Different pose scales, as a sweep would have; the cost does not depend on the values.
    rewards = reward_lib.stack_configs(
        [reward_lib.with_overrides(base, {"pose_scale": float(base.pose_scale) * 2.0**i}) for i in range(members)])
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(members)])
    bench.progress(f"[bench] batch {batch}: sweep: initialising {members} members ...")
    state = jax.jit(jax.vmap(lambda k, rc: train.init(bench.env, config, k, rc)))(keys, rewards)
    row = bench.time_row("sweep", batch, jax.vmap(train.make_iteration(bench.env, config)), state, config.horizon)
    row["members"] = members
    row["notes"] = f"sweep: vmap(train.make_iteration) over {members} members x {batch // members} envs"
    return row


def run_row(bench: Bench, name: str, batch: int) -> dict:
    return {"physics": run_physics, "native": run_native, "env": run_env, "policy": run_policy,
            "train": run_train, "sweep": run_sweep, "brax": run_brax}[name](bench, batch)


# ------------------------------------------------------------------------------- Brax


def run_brax(bench: Bench, batch: int) -> dict:
    """Brax PPO, two epochs of `chunks` iterations: the first compiles, the second is timed.

    Matched to our trainer: `batch` envs × `horizon` steps per update, (1024, 512) ReLU policy
    and value nets, a Gaussian policy with our initial std (MJX's solver stops early once
    converged, so the action distribution changes the physics cost), normalised observations,
    γ and λ from TrpoConfig, and the SGD work of our value fit (value_epochs passes over
    value_minibatches minibatches).
    """
    reason = brax_adapter.brax_unavailable()
    if reason:
        bench.progress(f"[bench] batch {batch}: brax: skipped: {reason}")
        return _skipped("brax", batch, reason)
    import flax.linen as nn
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    config = bench.config_for(batch)
    hidden = tuple(config.network.policy_hidden)
    minibatches = math.gcd(batch, config.trpo.value_minibatches)
    epochs = []
    brax_adapter.restore_device_put_replicated()
    bench.progress(f"[bench] batch {batch}: brax: PPO, compiling + 2 epochs of {bench.chunks} iterations ...")
    try:
        ppo.train(
            environment=brax_adapter.brax_env(bench.env), num_timesteps=2 * bench.chunks * batch * config.horizon,
            num_evals=3, run_evals=False, wrap_env=False, num_envs=batch, num_eval_envs=batch,
            episode_length=bench.env.max_steps, unroll_length=config.horizon, batch_size=batch // minibatches,
            num_minibatches=minibatches, num_updates_per_batch=config.trpo.value_epochs,
            normalize_observations=True, discounting=float(config.trpo.gamma), gae_lambda=float(config.trpo.gae_lambda),
            learning_rate=3e-4, seed=0,
            network_factory=functools.partial(
                ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=hidden,
                value_hidden_layer_sizes=tuple(config.network.value_hidden), activation=nn.relu,
                distribution_type="normal", noise_std_type="log", init_noise_std=math.exp(config.network.init_log_std)),
            progress_fn=lambda step, m: epochs.append((float(m["training/sps"]), float(m["training/walltime"]))),
        )  # fmt: skip
    except Exception as e:  # a peer's failure is reported, not fatal to the other rows
        reason = f"Brax PPO failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        bench.progress(f"[bench] batch {batch}: brax: {reason}")
        return _skipped("brax", batch, reason)
    (_, wall1), (sps, wall2) = epochs[-2:]
    run_s = wall2 - wall1
    bench.progress(f"[bench] batch {batch}: brax: {sps:,.0f} env steps/s")
    return _row("brax", batch, sps, wall1 - run_s, run_s, bench.chunks * batch * config.horizon,
                peak_mem_bytes=_peak_device_bytes(),
                notes=f"ppo.train; compile_s = first epoch - second; {minibatches} minibatches x "
                      f"{config.trpo.value_epochs} epochs")


# ------------------------------------------------------------------------- the report


def _build(steps: int, progress, profile_dir: str | None = None, physics=("mjx",), config=None) -> Bench:
    from mimic_mjx import train

    config = train.TrainConfig() if config is None else config
    envs = {p: train.build_env(config.replace(env=config.env.replace(physics=p)))[0] for p in physics}
    return Bench(envs=envs, train_config=config, steps=steps, progress=progress, profile_dir=profile_dir)


def _settings(bench: Bench) -> dict:
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


def _notes(backend: str) -> list[str]:
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


def run_benchmark(batches, rows, steps: int, progress: Callable[[str], Any] = lambda msg: None,
                  command: str = "", profile_dir: str | None = None, physics=("mjx",), config=None) -> dict:
    """Run `rows` at each batch size, the PER_BACKEND rows once per `physics` backend; the
    JSON report (see BENCHMARKS.md for the keys)."""
    load_start = os.getloadavg()
    bench = _build(steps, progress, profile_dir, physics, config)
    results = []
    for batch in batches:
        for backend in physics:
            bench.physics = backend
            results += [run_row(bench, name, batch) for name in rows if name in PER_BACKEND]
        bench.physics = physics[0]
        results += [run_row(bench, name, batch) for name in rows if name not in PER_BACKEND]
        bench.kept.clear()  # free the kept states before the next (bigger) batch
        bench._setup.clear()
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
        "settings": _settings(bench),
        "setup": bench.setup_log,
        "rows": add_ratios(results, bench.env.substeps),
        "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "notes": _notes(backend),
    }


# -------------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    """`mimic-mjx bench` flags."""
    parser.add_argument("--batch", default=None, metavar="B1,B2",
                        help=f"batch sizes (default: {','.join(map(str, GPU_BATCHES))} on a GPU, "
                             f"{','.join(map(str, CPU_BATCHES))} on CPU)")
    parser.add_argument("--steps", default=str(DEFAULT_STEPS), metavar="N",
                        help=f"timed control steps per environment per row, rounded up to whole 32-step "
                             f"chunks (default {DEFAULT_STEPS}; physics rows: the same simulated time)")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), metavar="R1,R2",
                        help=f"rows to run, of {','.join(ROWS)} (default: {','.join(DEFAULT_ROWS)})")
    parser.add_argument("--config", default=None, metavar="PRESET",
                        help="training preset or YAML whose networks, horizon, reward and env the rows use "
                             "(default: TrainConfig's defaults, the GPU walk preset); --batch still sets the batch")
    parser.add_argument("--physics", default=None, metavar="P1,P2",
                        help="physics backends of the physics, env, policy and train rows, of mjx,native "
                             "(default: mjx,native on CPU, mjx on an accelerator)")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="also record one call of each row with jax.profiler into DIR/<row>-<batch> "
                             "(open with TensorBoard's profile plugin or Perfetto)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_physics(text: str) -> tuple[str, ...]:
    """`"mjx,native"` -> ("mjx", "native"); MimicError for anything else."""
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    if not names or any(n not in ("mjx", "native") for n in names):
        raise MimicError(f"--physics {text!r}: expected mjx, native or mjx,native")
    return names


def parse_steps(text: str) -> int:
    try:
        steps = int(text)
    except (TypeError, ValueError):
        raise MimicError(f"--steps {text!r}: expected a positive integer") from None
    if steps < 1:
        raise MimicError(f"--steps {text!r}: must be >= 1")
    return steps


def run_cli(args) -> int:
    """Run `mimic-mjx bench` from parsed `args`; bad flags raise MimicError (one line)."""
    rows = parse_rows(args.rows)
    steps = parse_steps(args.steps)
    config = None
    if getattr(args, "config", None):
        from mimic_mjx import train

        config = train.load_train_config(args.config, [])
    if args.profile:
        try:
            os.makedirs(args.profile, exist_ok=True)
        except OSError as e:
            raise MimicError(f"--profile {args.profile!r}: cannot create the folder ({e.strerror})") from None
    batches = parse_batches(args.batch) if args.batch is not None else (
        CPU_BATCHES if jax.default_backend() == "cpu" else GPU_BATCHES)
    physics = parse_physics(args.physics) if getattr(args, "physics", None) else (
        ("mjx", "native") if jax.default_backend() == "cpu" else ("mjx",))
    command = (f"mimic-mjx bench --batch {','.join(map(str, batches))} --steps {steps} --rows {','.join(rows)}"
               f" --physics {','.join(physics)}" + (f" --config {args.config}" if config is not None else "")
               + (f" --profile {args.profile}" if args.profile else "") + (" --json" if args.json else ""))
    report = run_benchmark(batches, rows, steps, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                           command=command, profile_dir=args.profile, physics=physics, config=config)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
