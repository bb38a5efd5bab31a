"""The bench's timing harness: what every row shares, and the row registry.

A row is one function `run(bench, batch) -> dict` registered with `@row(...)` in
`bench/rows.py`; the registry fixes the row's unit, whether it runs once per physics
backend, and the row it is timed interleaved with. Adding a row is one new function there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from typing import Any, Callable

import jax

from mimic_mjx import compiled as compiled_lib
from mimic_mjx import env as env_lib


@dataclasses.dataclass(frozen=True)
class RowSpec:
    name: str
    run: Callable  # (Bench, batch) -> row dict
    unit: str = "env steps/s"
    per_backend: bool = False  # runs once per physics backend (else on the first backend's env)
    # The row whose compiled function this one is timed interleaved with (one call of each in
    # turn), so a ratio between them sees the same machine load even on a shared machine.
    pair: str | None = None
    default: bool = True  # in `--rows`' default
    per_device: bool = False  # runs once per `--devices` count (the same global batch split over them)


REGISTRY: dict[str, RowSpec] = {}


def row(name: str, **spec) -> Callable:
    """Register `run(bench, batch) -> dict` as the bench row `name` (see RowSpec)."""
    def register(run: Callable) -> Callable:
        REGISTRY[name] = RowSpec(name, run, **spec)
        return run
    return register


def unit(name: str) -> str:
    return REGISTRY[name].unit if name in REGISTRY else "env steps/s"


def pairs() -> dict[str, str]:
    """Row -> the row it is timed interleaved with."""
    return {n: s.pair for n, s in REGISTRY.items() if s.pair}


def chunk_count(steps: int, horizon: int) -> int:
    """Timed calls of a `horizon`-step chunk that cover at least `steps` control steps."""
    return max(1, math.ceil(steps / horizon))


@dataclasses.dataclass
class Bench:
    """What every row shares: the env, the default training config, chunking, progress."""

    envs: dict  # physics backend -> env_lib.ImitationEnv
    train_config: Any  # runconfig.TrainConfig
    steps: int
    progress: Callable[[str], Any]
    profile_dir: str | None = None  # --profile: one extra call of each row under jax.profiler
    _setup: dict = dataclasses.field(default_factory=dict)
    setup_log: list = dataclasses.field(default_factory=list)
    kept: dict = dataclasses.field(default_factory=dict)  # (row, batch, physics) -> _Timed, for the rows paired with it
    physics: str = ""  # the backend the per-backend rows run on now
    devices: int | None = None  # the per-device rows' device count now (--devices); None: the config's
    members: int = 4  # the sweep row's members (--members), each with batch / members envs

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
        from mimic_mjx import runconfig

        config = self.train_config.replace(num_envs=batch)
        if self.devices is not None:
            config = config.replace(devices=self.devices)
        return runconfig.resolve_defaults(config.replace(env=config.env.replace(physics=self.env.physics.backend)))

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

    def time_row(self, name: str, batch: int, fn, carry, steps_per_call: int, out_shardings=None) -> dict:
        """Compile `fn: carry -> (carry, out)`, run it once, then time `self.chunks` chained calls,
        each preceded by one call of the function of the row it is paired with (`RowSpec.pair`) when that row ran at this batch.
        `out_shardings`: where the outputs must stay over several devices (as the trainer pins
        them: `train.place`), so each call's carry is placed as the compiled program expects."""
        backend = self.env.physics.backend
        on = "" if self.devices is None else f" on {self.devices} device(s)"
        tag = f"[bench] batch {batch}: {name} ({backend}{on}):"
        self.progress(f"{tag} compiling ...")
        start = time.perf_counter()
        jitted = jax.jit(fn) if out_shardings is None else jax.jit(fn, out_shardings=out_shardings)
        compiled = jitted.lower(carry).compile()
        compile_s = time.perf_counter() - start
        self.progress(f"{tag} compiled in {compile_s:.1f} s; warm-up call ...")
        own = _Timed(compiled, carry, steps_per_call * batch)
        own.call()
        own.restart()
        pair = self.kept.get((pairs().get(name), batch, backend))
        if pair is not None:
            pair.restart()
        for _ in range(self.chunks):
            if pair is not None:
                pair.call()
            own.call()
        if name in pairs().values():
            self.kept[name, batch, backend] = own
        total = steps_per_call * batch * self.chunks
        spread = own.spread()
        self.progress(f"{tag} {total / own.seconds:,.0f} {unit(name)} ({total:,} steps in {own.seconds:.2f} s; "
                      f"a call {spread[1]:.3f} s median, {spread[0]:.3f}-{spread[2]:.3f})")
        if self.profile_dir:  # a traced call is slower: outside the timing, carry not advanced
            suffix = "" if self.devices is None else f"-{self.devices}dev"
            trace = os.path.join(self.profile_dir, f"{name}-{backend}-{batch}{suffix}")
            with jax.profiler.trace(trace):
                jax.block_until_ready(compiled(own.carry))
            self.progress(f"{tag} profile of one call in {trace}")
        extra = {}
        if pair is not None:
            extra = {"paired_with": pairs()[name], "pair_steps_per_s": round(pair.steps_per_s, 1)}
        return result(name, batch, total / own.seconds, compile_s, own.seconds, total, physics=backend, call_s=spread,
                    peak_mem_bytes=compiled_lib.peak_device_bytes(), program_bytes=compiled_lib.program_bytes(compiled), **extra)


@dataclasses.dataclass
class _Timed:
    """A compiled `carry -> (carry, out)` with its current carry and the time its calls took."""

    compiled: Any
    carry: Any
    steps: int  # env or physics steps one call advances (all envs)
    durations: list = dataclasses.field(default_factory=list)  # seconds of each call

    def call(self) -> None:
        start = time.perf_counter()
        self.carry, out = self.compiled(self.carry)
        jax.block_until_ready((self.carry, out))
        self.durations.append(time.perf_counter() - start)

    def restart(self) -> None:
        """Forget the calls so far (the warm-up); the carry goes on."""
        self.durations = []

    @property
    def seconds(self) -> float:
        return sum(self.durations)

    @property
    def calls(self) -> int:
        return len(self.durations)

    def spread(self) -> list:
        """`[min, median, max]` seconds of one call: on a shared or virtual machine the calls of
        one row can differ by tens of percent, which the row's mean alone hides."""
        d = self.durations
        return [round(min(d), 4), round(statistics.median(d), 4), round(max(d), 4)]

    @property
    def steps_per_s(self) -> float:
        return self.calls * self.steps / self.seconds


def result(name, batch, steps_per_s, compile_s, run_s, timed_steps, **extra) -> dict:
    row = {"name": name, "batch": batch, "unit": unit(name),
           "steps_per_s": None if steps_per_s is None else round(steps_per_s, 1),
           "compile_s": None if compile_s is None else round(compile_s, 2),
           "peak_mem_bytes": None, "run_s": None if run_s is None else round(run_s, 3), "timed_steps": timed_steps,
           # Rows run on one device unless they say otherwise (the train row splits its batch
           # over the config's devices, as the trainer does).
           "devices": 1, "layout": f"{batch} envs on one device"}
    row.update(extra)
    return row


def skipped(name: str, batch: int, reason: str) -> dict:
    return result(name, batch, None, None, None, 0, skipped=reason)


def build(steps: int, progress, profile_dir: str | None = None, physics=("mjx",), config=None) -> Bench:
    from mimic_mjx import runconfig, train

    config = runconfig.TrainConfig() if config is None else config
    envs = {p: train.build_env(config.replace(env=config.env.replace(physics=p)))[0] for p in physics}
    return Bench(envs=envs, train_config=config, steps=steps, progress=progress, profile_dir=profile_dir)

