"""The bench rows, each one function registered with `@row` (see `bench/harness.py`), in
the order the report lists them. The package docstring says what each row times."""

from __future__ import annotations

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mimic_mjx import batch as batch_lib
from mimic_mjx import brax_adapter
from mimic_mjx import compiled as compiled_lib
from mimic_mjx import env as env_lib
from mimic_mjx import parallel
from mimic_mjx import physics as physics_lib
from mimic_mjx.bench.harness import Bench, result, row, skipped

# The sweep row splits the batch over this many members (M members x N/M envs vs N) unless
# --members says otherwise.
SWEEP_MEMBERS = 4
# mujoco.rollout writes out every step's full state; capping envs × control steps per call at
# 1024 keeps that buffer to a few MB at any batch size.
_NATIVE_STATES_PER_CALL = 1024


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
        return (batch_lib.step_batch(env, state, actions), key), None

    def run(carry):
        carry, _ = jax.lax.scan(body, carry, None, length=length)
        return carry, None

    return run


@row("physics", unit="physics steps/s", per_backend=True)
def run_physics(bench: Bench, batch: int) -> dict:
    env = bench.env
    qpos, qvel, ctrl = initial_physics_states(env.clip, env.mj_model, batch)
    data = jax.vmap(env.physics.put)(jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32),
                                     jnp.asarray(ctrl, jnp.float32))
    length = bench.horizon
    row = bench.time_row("physics", batch, physics_chunk(env.physics, length), data, length * env.substeps)
    how = env.physics.how
    row["notes"] = f"{how} in lax.scan({length} control steps x {env.substeps}); PD holding mocap poses"
    return row


@row("native", unit="physics steps/s")
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
    return result("native", batch, total / run_s, None, run_s, total, threads=threads,
                notes=f"mujoco.rollout, {threads} threads, {nstep} steps per call (warm start reset per call)")


@row("env", per_backend=True, pair="physics")
def run_env(bench: Bench, batch: int) -> dict:
    env_state = bench.setup(batch).env_state
    row = bench.time_row("env", batch, env_chunk(bench.env, bench.horizon), (env_state, jax.random.PRNGKey(1)),
                         bench.horizon)
    row["notes"] = "batch.step_batch: physics, reward, obs, auto-reset; uniform random actions"
    return row


@row("policy", per_backend=True, pair="physics")
def run_policy(bench: Bench, batch: int) -> dict:
    from mimic_mjx import train

    config = bench.config_for(batch)
    policy, _ = train.make_networks(bench.env, config)

    def run(state):
        rng, key = jax.random.split(state.rng)
        state, traj = train.rollout(bench.env, policy, state, key, config.horizon)
        return state.replace(rng=rng), traj

    row = bench.time_row("policy", batch, run, bench.setup(batch), config.horizon)
    row["notes"] = f"train.rollout: policy {tuple(config.network.policy_hidden)} sampling + batch.step_batch"
    return row


@row("train", per_backend=True, pair="policy", per_device=True)
def run_train(bench: Bench, batch: int) -> dict:
    from mimic_mjx import train

    config = bench.config_for(batch)
    # The trainer's own layout: the batch split over config.devices (0: every device JAX sees).
    carry, mesh, out_shardings = train.place(bench.setup(batch), config)
    row = bench.time_row("train", batch, train.make_iteration(bench.env, config, mesh), carry, config.horizon,
                         out_shardings)
    count = 1 if mesh is None else mesh.size
    row.update(devices=count, layout=f"{batch} envs on one device" if mesh is None else parallel.describe(mesh, batch))
    row["notes"] = f"train.make_iteration: rollout({config.horizon}) + GAE + TRPO + value fit"
    return row


# The sweep row is the sweep's cost question, not a throughput row: run it with --rows.
@row("sweep", pair="train", default=False)
def run_sweep(bench: Bench, batch: int) -> dict:
    """`bench.members` members (--members, default SWEEP_MEMBERS) with batch / members envs
    each, the vmapped iteration of `mimic-mjx sweep`; timed interleaved with the train row's
    single run of `batch` envs."""
    from mimic_mjx import reward as reward_lib
    from mimic_mjx import train

    members = bench.members
    if batch % members:
        return skipped("sweep", batch, f"batch {batch} is not a multiple of {members} members")
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


@row("brax")
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
        return skipped("brax", batch, reason)
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
        return skipped("brax", batch, reason)
    (_, wall1), (sps, wall2) = epochs[-2:]
    run_s = wall2 - wall1
    bench.progress(f"[bench] batch {batch}: brax: {sps:,.0f} env steps/s")
    return result("brax", batch, sps, wall1 - run_s, run_s, bench.chunks * batch * config.horizon,
                peak_mem_bytes=compiled_lib.peak_device_bytes(),
                notes=f"ppo.train; compile_s = first epoch - second; {minibatches} minibatches x "
                      f"{config.trpo.value_epochs} epochs")

