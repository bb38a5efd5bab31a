"""The trainer: one pure, jittable TRPO iteration over a vmapped environment batch.

Core (pure, jit- and vmap-able):

* `init(env, config, rng, reward_config) -> TrainState`
* `make_iteration(env, config) -> iteration(TrainState) -> (TrainState, metrics)`, built from
  the module-level pieces `rollout` (lax.scan of `horizon` policy+env steps over the batch),
  `compute_advantages` (GAE) and `update` (TRPO step, value fit, normaliser update).

Everything an iteration reads lives in `TrainState` (parameters, optimiser and normaliser
state, the batched env `State` with its reward config, the TRPO leaves, the RNG), so
`jax.vmap(iteration)` over a leading member axis trains a population with one compile and a
restored checkpoint continues exactly as the uninterrupted run would have.

Shell (host side): `train(config, out_dir)` writes `config.yaml`, `metrics.jsonl`, progress
lines, health alarms (decided by the pure helper `check_health`) and orbax checkpoints
(`checkpoint.py`); `add_arguments`/`run_cli` are the `mimic-mjx train` command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from mimic_mjx import checkpoint
from mimic_mjx import compiled
from mimic_mjx import config as cfglib
from mimic_mjx import env as env_lib
from mimic_mjx import networks as nets
from mimic_mjx import parallel
from mimic_mjx import reward as reward_lib
from mimic_mjx import trpo as trpo_lib
from mimic_mjx.errors import MimicError

# ----------------------------------------------------------------------------- config


@flax.struct.dataclass
class NetworkConfig:
    """Policy and value network shapes (static: they fix parameter shapes)."""

    # DeepMimic's actor and critic are both fc_2layers_1024units (Peng et al. 2018, Sec. 7).
    policy_hidden: tuple[int, ...] = cfglib.field((1024, 512), "policy MLP hidden widths", static=True, ge=1)
    value_hidden: tuple[int, ...] = cfglib.field((1024, 512), "value MLP hidden widths", static=True, ge=1)
    init_log_std: float = cfglib.field(-1.0, "initial log std of the Gaussian policy (action units)", static=True)


# GPU: DeepMimic-scale batches (4096 x 32 = 131k samples per update), not measured here
# (`mimic-mjx bench` does). CPU: a 2-core machine runs ~500-650 env steps/s at 16 envs
# (measured with cpu_tiny.yaml), so 16 keeps an iteration near a second.
GPU_NUM_ENVS = 4096
CPU_NUM_ENVS = 16
DEFAULT_REWARD = "deepmimic_paper"


@flax.struct.dataclass
class TrainConfig:
    """Everything a training run needs; `config.yaml` in the run directory is this, resolved."""

    env: env_lib.EnvConfig = cfglib.field(env_lib.EnvConfig(), "environment")
    # The section is the RewardConfig itself; `reward: {preset: NAME, FIELD: VALUE}` in YAML
    # (config.py, "preset sections"). Saved configs hold every resolved number.
    reward: reward_lib.RewardConfig = cfglib.field(
        reward_lib.preset(DEFAULT_REWARD), "reward: a preset plus overrides of its fields")
    trpo: trpo_lib.TrpoConfig = cfglib.field(trpo_lib.TrpoConfig(), "TRPO, GAE and value-fit hyper-parameters")
    network: NetworkConfig = cfglib.field(NetworkConfig(), "policy and value networks")
    num_envs: int | None = cfglib.field(
        None, f"parallel environments; null: {GPU_NUM_ENVS} on a GPU, {CPU_NUM_ENVS} on CPU", static=True, ge=1)
    # 32 steps ≈ 1 s at 30 Hz; with 4096 envs that is 131k samples per update.
    horizon: int = cfglib.field(32, "steps per environment per iteration (rollout length)", static=True, ge=1)
    iterations: int = cfglib.field(1000, "training iterations (TRPO updates)", static=True, ge=1)
    seed: int = cfglib.field(0, "random seed (networks, env resets, sampling)", static=True, ge=0)
    checkpoint_every: int = cfglib.field(
        50, "save a checkpoint every this many iterations (and at the end)", static=True, ge=1)
    keep_checkpoints: int = cfglib.field(3, "newest checkpoints kept in the run directory", static=True, ge=1)
    eval_every: int = cfglib.field(
        0, "score the deterministic policy (mimic-mjx eval's yardstick) into eval.jsonl every this many "
        "iterations (and at the end); 0: never", static=True, ge=0)
    # RSI off and mean actions: every episode starts at t = 0 the same way, so one is enough.
    eval_episodes: int = cfglib.field(1, "episodes per periodic evaluation", static=True, ge=1)
    eval_rsi_episodes: int = cfglib.field(
        0, "periodic evaluation also scores this many episodes from random clip times (eval --rsi), "
        "each time the same ones; the best/ policy is chosen on the mean of both returns; 0: t = 0 only",
        static=True, ge=0)
    decay_alarm_margin: float = cfglib.field(
        0.05, "the decay alarm fires when decay_alarm_evals periodic evaluations in a row score more than "
        "this below the run's best (normalised return)", static=True, gt=0)
    decay_alarm_evals: int = cfglib.field(
        3, "periodic evaluations in a row below the best by decay_alarm_margin that raise the decay alarm",
        static=True, ge=1)
    devices: int = cfglib.field(
        0, "devices the environment batch is split over (num_envs must divide evenly); 0: every device JAX "
        "sees (one CPU unless XLA_FLAGS forces more)", static=True, ge=0)
    time_limit_minutes: float | None = cfglib.field(
        None, "stop (with a checkpoint) once this much wall clock has passed since the command started, "
        "compile included; null: no limit. --resume continues a stopped run", static=True, gt=0)


def resolve_defaults(config: TrainConfig, backend: str | None = None) -> TrainConfig:
    """Fill host-dependent defaults (`num_envs: null` -> GPU or CPU batch) and validate.

    Done on the host, not in the dataclass defaults, so one YAML preset fits both machines;
    the run directory's `config.yaml` keeps the resolved numbers. Checks every declared
    range (a config built in code skips the loader's checks) and the batch-size relations.
    """
    backend = jax.default_backend() if backend is None else backend
    if config.num_envs is None:
        config = config.replace(num_envs=GPU_NUM_ENVS if backend == "gpu" else CPU_NUM_ENVS)
    cfglib.validate(config)
    samples = config.num_envs * config.horizon
    if config.trpo.value_minibatches > samples:
        raise MimicError(f"trpo.value_minibatches ({config.trpo.value_minibatches}) exceeds the batch "
                         f"num_envs * horizon = {samples}")
    return config


# ------------------------------------------------------------------------------ state


@flax.struct.dataclass
class TrainState:
    """Everything one iteration reads and writes. `B` = num_envs."""

    policy_params: Any  # PolicyNetwork params
    value_params: Any  # ValueNetwork params
    value_opt_state: Any  # Adam state of the value fit (learning rate injected)
    normalizer: nets.NormalizerState  # running observation statistics [D]
    env_state: env_lib.State  # batched [B]; carries the reward config per env
    trpo: trpo_lib.TrpoConfig  # TRPO leaves (max_kl, γ, λ, ...) as arrays, so a sweep can vmap them
    rng: jax.Array  # key for the next iteration
    iteration: jax.Array  # [] int32, iterations done
    env_steps: jax.Array  # [] int32, env steps taken (exact to 2**31)
    episode_return: jax.Array  # [B] undiscounted return of each env's current episode so far
    # Carried when no episode ends in an iteration (so the metric stays the last seen value):
    last_episode_length: jax.Array  # [] mean length (steps) of the episodes that last ended
    last_return_mean: jax.Array  # [] mean return of the episodes that last ended
    last_return_std: jax.Array  # [] their std


@flax.struct.dataclass
class Trajectory:
    """One rollout, time-major: `[T, B, ...]`. Observations are raw (not normalised)."""

    obs: jax.Array  # [T, B, D] observation each action was chosen from
    actions: jax.Array  # [T, B, A] sampled actions (before the env clips them to [-1, 1])
    rewards: jax.Array  # [T, B]
    reward_terms: dict  # name -> [T, B]
    termination: dict  # name -> [T, B] bool, why the step ended its episode (env.TERMINATIONS)
    final_obs: jax.Array  # [T, B, D] observation reached by the step, before any auto-reset
    terminated: jax.Array  # [T, B] bool, fell (no bootstrap)
    truncated: jax.Array  # [T, B] bool, time limit (bootstrap from final_obs)
    episode_length: jax.Array  # [T, B] length of the episode that ended at this step, else 0
    episode_return: jax.Array  # [T, B] return of the episode that ended at this step, else 0


def make_networks(env: env_lib.ImitationEnv, config: TrainConfig) -> tuple[nets.PolicyNetwork, nets.ValueNetwork]:
    net = config.network
    policy = nets.PolicyNetwork(action_dim=env.action_size, hidden=tuple(net.policy_hidden),
                                init_log_std=net.init_log_std)
    return policy, nets.ValueNetwork(hidden=tuple(net.value_hidden))


def _strong(tree):
    """Arrays with no weak types, so a restored checkpoint compiles to the same program."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), tree)


def init(env: env_lib.ImitationEnv, config: TrainConfig, rng: jax.Array,
         reward_config: reward_lib.RewardConfig) -> TrainState:
    """A fresh TrainState: networks, `num_envs` reset envs, a normaliser seeded with their obs.

    Pure; `jax.vmap(lambda k, rc: init(env, config, k, rc))(keys, stacked_reward_configs)`
    makes one state per sweep member.
    """
    policy, value = make_networks(env, config)
    k_policy, k_value, k_env, rng = jax.random.split(rng, 4)
    dummy = jnp.zeros((1, env.observation_size))
    value_params = value.init(k_value, dummy)
    env_state = env_lib.reset_batch(env, k_env, config.num_envs, reward_config)
    state = TrainState(
        policy_params=policy.init(k_policy, dummy),
        value_params=value_params,
        value_opt_state=trpo_lib.value_optimizer(config.trpo.value_lr).init(value_params),
        # Seeding with the reset observations keeps the first rollout's inputs near unit scale.
        normalizer=nets.update_normalizer(nets.init_normalizer(env.observation_size), env_state.obs),
        env_state=env_state,
        trpo=config.trpo,
        rng=rng,
        iteration=jnp.zeros((), jnp.int32),
        env_steps=jnp.zeros((), jnp.int32),
        episode_return=jnp.zeros((config.num_envs,), jnp.float32),
        last_episode_length=jnp.zeros((), jnp.float32),
        last_return_mean=jnp.zeros((), jnp.float32),
        last_return_std=jnp.zeros((), jnp.float32),
    )
    return _strong(state)


def with_config_leaves(state: TrainState, config: TrainConfig, reward_config: reward_lib.RewardConfig) -> TrainState:
    """`state` with the TRPO and reward leaves of `config` (e.g. after `--resume --set trpo.max_kl=...`).

    Unchanged values come back bit-identical, so resuming under the run's own config is exact.
    """
    batch = state.episode_return.shape[0]
    rewards = jax.tree.map(lambda x: jnp.full((batch,), x, jnp.float32), reward_config)
    return state.replace(trpo=_strong(config.trpo), env_state=state.env_state.replace(reward_config=rewards))


# Parts of a TrainState that a checkpoint written by older code may lack (fields added since):
# resume sets the TRPO and reward leaves from the config (`with_config_leaves`), and the
# step's outcome (errors, reward terms, termination reasons) is rewritten by the next env step.
UPGRADABLE = (("trpo",), ("env_state", "reward_config"), ("env_state", "errors"), ("env_state", "reward_terms"),
              ("env_state", "termination"))


def state_shardings(state: TrainState, mesh, members: bool = False) -> TrainState:
    """Where each leaf of a TrainState lives on `mesh`: the environments and their running
    returns split on the batch axis, networks, normaliser and TRPO leaves replicated."""
    def batched(path) -> bool:
        return getattr(path[0], "name", None) in ("env_state", "episode_return")

    return parallel.shardings(state, mesh, batched, members)


def place(state: TrainState, config: TrainConfig, members: bool = False):
    """`(state, mesh, out_shardings)`: `state` placed on `config.devices` (parallel.py), the
    mesh for `make_iteration` and the shardings to pin its outputs to. On one device the
    state is returned as it is with `(None, None)`: the program is the one before meshes."""
    mesh = parallel.make_mesh(config.devices, config.num_envs)
    if mesh.size == 1:
        return state, None, None
    placement = state_shardings(state, mesh, members)
    return jax.device_put(state, placement), mesh, (placement, parallel.replicated(mesh))


def abstract_state(env: env_lib.ImitationEnv, config: TrainConfig) -> TrainState:
    """Shapes and dtypes of `init`'s state (no compute): the template a checkpoint restores into."""
    reward_config = config.reward
    return jax.eval_shape(lambda key: init(env, config, key, reward_config), jax.random.PRNGKey(0))


# --------------------------------------------------------------------- the iteration


def rollout(env: env_lib.ImitationEnv, policy: nets.PolicyNetwork, state: TrainState, key: jax.Array,
            horizon: int, mesh=None) -> tuple[TrainState, Trajectory]:
    """`horizon` steps of the batch under the stochastic policy; returns the advanced state.

    Actions are `mean + std * noise` from the policy on normalised observations (the
    normaliser is frozen for the rollout). Finished episodes reset inside `env.step_batch`,
    which runs on each device's shard of the batch under a `mesh` (parallel.py).
    """
    step_envs = parallel.env_step(lambda s, a: env_lib.step_batch(env, s, a), mesh)

    def step(carry, step_key):
        env_state, ep_return = carry
        mean, log_std = policy.apply(state.policy_params, nets.normalize(state.normalizer, env_state.obs))
        action = mean + jnp.exp(log_std) * jax.random.normal(step_key, mean.shape)
        nxt = step_envs(env_state, action)
        done = nxt.terminated | nxt.truncated
        ep_return = ep_return + nxt.reward
        out = Trajectory(
            obs=env_state.obs,
            actions=action,
            rewards=nxt.reward,
            reward_terms=nxt.reward_terms,
            termination=nxt.termination,
            final_obs=nxt.final_obs,
            terminated=nxt.terminated,
            truncated=nxt.truncated,
            episode_length=jnp.where(done, env_state.step_count + 1, 0),
            episode_return=jnp.where(done, ep_return, 0.0),
        )
        return (nxt, jnp.where(done, 0.0, ep_return)), out

    keys = jax.random.split(key, horizon)
    (env_state, ep_return), traj = jax.lax.scan(step, (state.env_state, state.episode_return), keys)
    return state.replace(env_state=env_state, episode_return=ep_return), traj


def compute_advantages(value: nets.ValueNetwork, value_params, normalizer: nets.NormalizerState,
                       traj: Trajectory, hyper: trpo_lib.TrpoConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """GAE over the rollout: `(advantages [T, B], returns [T, B], values [T, B])`.

    Terminations do not bootstrap; truncations bootstrap from V(final_obs); a rollout's
    last step (not done) bootstraps from V(final_obs) too, the next iteration's first obs.
    A step that did not end its episode reached exactly the next step's observation
    (`final_obs[t] == obs[t + 1]`), so V(final_obs) is taken from the values already computed
    except for the last step, and over the whole rollout only when some episode was truncated
    (`lax.cond`): one value pass over the batch instead of two in most iterations.
    """
    values = value.apply(value_params, nets.normalize(normalizer, traj.obs))
    last = value.apply(value_params, nets.normalize(normalizer, traj.final_obs[-1]))
    following = jnp.concatenate([values[1:], last[None]])

    def with_truncations():
        full = value.apply(value_params, nets.normalize(normalizer, traj.final_obs))
        return jnp.where(traj.truncated, full, following)

    bootstrap = jax.lax.cond(jnp.any(traj.truncated), with_truncations, lambda: following)
    adv, returns = trpo_lib.compute_gae(traj.rewards, values, bootstrap, traj.terminated, traj.truncated,
                                    hyper.gamma, hyper.gae_lambda)
    return adv, returns, values


def update(policy: nets.PolicyNetwork, value: nets.ValueNetwork, state: TrainState, traj: Trajectory,
           advantages: jax.Array, returns: jax.Array, values: jax.Array, key: jax.Array,
           epochs: int, minibatches: int) -> tuple[TrainState, dict]:
    """TRPO policy step, value fit, then the normaliser update (after: TRPO re-evaluates the
    behaviour policy on the obs the rollout normalised). `values [T, B]` are GAE's, V(obs) before
    the fit. Returns the state and trpo.py's metrics."""
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731  [T, B, ...] -> [N, ...]
    obs = flat(nets.normalize(state.normalizer, traj.obs))
    batch = trpo_lib.TrpoBatch(obs=obs, actions=flat(traj.actions), advantages=flat(advantages))
    max_kl = trpo_lib.scheduled_max_kl(state.trpo, state.env_steps)
    policy_params, policy_metrics = trpo_lib.trpo_step(
        policy.apply, state.policy_params, batch, state.trpo.replace(max_kl=max_kl),
        trainable=trainable_policy(state.policy_params, state.trpo.learn_std))
    policy_metrics["trpo/max_kl"] = max_kl
    value_params, opt_state, value_metrics = trpo_lib.fit_value(
        value.apply, state.value_params, state.value_opt_state, trpo_lib.value_optimizer(), obs, flat(returns),
        key, epochs, minibatches, learning_rate=state.trpo.value_lr, values_before=flat(values))
    state = state.replace(
        policy_params=policy_params,
        value_params=value_params,
        value_opt_state=opt_state,
        normalizer=nets.update_normalizer(state.normalizer, traj.obs, max_samples=state.trpo.normalizer_samples),
    )
    return state, {**policy_metrics, **value_metrics}


def trainable_policy(policy_params, learn_std: jax.Array):
    """TRPO's `trainable` mask: 1 on every policy parameter, `learn_std` (0 or 1) on log_std."""
    def mask(path, leaf):
        held = any(getattr(k, "key", None) == "log_std" for k in path)
        return jnp.broadcast_to(jnp.asarray(learn_std, leaf.dtype) if held else jnp.ones((), leaf.dtype), leaf.shape)

    return jax.tree_util.tree_map_with_path(mask, policy_params)


def _episode_metrics(state: TrainState, traj: Trajectory) -> tuple[TrainState, dict]:
    """Length and return of the episodes that ended in this rollout (carried if none did)."""
    done = (traj.terminated | traj.truncated).astype(jnp.float32)
    ended = jnp.sum(done)
    any_ended = ended > 0
    denom = jnp.maximum(ended, 1.0)
    length = jnp.sum(traj.episode_length.astype(jnp.float32)) / denom
    ret_mean = jnp.sum(traj.episode_return) / denom
    ret_std = jnp.sqrt(jnp.maximum(jnp.sum(done * (traj.episode_return - ret_mean) ** 2) / denom, 0.0))
    state = state.replace(
        last_episode_length=jnp.where(any_ended, length, state.last_episode_length),
        last_return_mean=jnp.where(any_ended, ret_mean, state.last_return_mean),
        last_return_std=jnp.where(any_ended, ret_std, state.last_return_std),
    )
    return state, {
        "training/episode_length": state.last_episode_length,
        "training/return_mean": state.last_return_mean,
        "training/return_std": state.last_return_std,
        "training/episodes_ended": ended,
        "training/fall_fraction": jnp.sum(traj.terminated.astype(jnp.float32)) / denom,
    }


def rollout_metrics(traj: Trajectory, advantages: jax.Array, max_reward: jax.Array) -> dict:
    """Per-step reward statistics and raw (pre-normalisation) advantage statistics."""
    metrics = {
        "training/reward_mean": jnp.mean(traj.rewards),
        "training/reward_min": jnp.min(traj.rewards),
        "training/reward_max": jnp.max(traj.rewards),
        "training/reward_fraction_of_max": jnp.mean(traj.rewards) / jnp.where(max_reward > 0, max_reward, 1.0),
        "training/advantage_mean": jnp.mean(advantages),
        "training/advantage_std": jnp.std(advantages),
    }
    metrics.update({f"reward/{name}": jnp.mean(v) for name, v in traj.reward_terms.items()})
    metrics.update({f"termination/{name}": jnp.sum(v.astype(jnp.float32)) for name, v in traj.termination.items()})
    return metrics


def make_iteration(env: env_lib.ImitationEnv, config: TrainConfig,
                   mesh=None) -> Callable[[TrainState], tuple[TrainState, dict]]:
    """The training iteration `TrainState -> (TrainState, metrics)`: pure, to be jitted.
    With a `mesh` (parallel.make_mesh) the environment step runs on each device's shard and
    the state should be placed with `state_shardings`; the rest is partitioned by XLA.

    Metrics, a flat dict of float32 scalars (per iteration, over its `horizon x num_envs` steps):
      training/reward_mean|min|max     per-step reward under the run's reward
      training/reward_fraction_of_max  reward_mean / reward.max_reward(config)
      reward/<term>                    mean per step of each reward term (they sum to reward_mean)
      termination/<reason>             episodes that ended for each reason of env.TERMINATIONS
      training/advantage_mean|std      raw GAE advantages, before trpo_step normalises them
      training/episode_length          mean length (steps) of the episodes that ended this
                                       iteration; if none ended, the last value (0 before any)
      training/return_mean|std         undiscounted return of those episodes (carried the same way)
      training/episodes_ended          how many ended; training/fall_fraction: the share that fell
      training/nonfinite_episodes      episodes ended by non-finite physics this iteration
      losses/*, trpo/*                 from `trpo.trpo_step` and `trpo.fit_value` (kl, entropy,
                                       surrogate_before|after, value_loss, explained_variance,
                                       accepted, backtracks, cg_residual, ...)
    The host loop adds training/iteration, training/env_steps, charts/SPS, charts/wall_time_s.
    """
    policy, value = make_networks(env, config)
    horizon, num_envs = config.horizon, config.num_envs
    epochs, minibatches = config.trpo.value_epochs, config.trpo.value_minibatches

    def iteration(state: TrainState) -> tuple[TrainState, dict]:
        rng, k_rollout, k_value = jax.random.split(state.rng, 3)
        nonfinite_before = jnp.sum(state.env_state.nonfinite_count)
        state, traj = rollout(env, policy, state, k_rollout, horizon, mesh)
        adv, returns, values = compute_advantages(value, state.value_params, state.normalizer, traj, state.trpo)
        one_config = jax.tree.map(lambda x: x[0], state.env_state.reward_config)
        metrics = rollout_metrics(traj, adv, reward_lib.max_reward(one_config))
        lo, hi = trpo_lib.value_target_bounds(reward_lib.min_reward(one_config), reward_lib.max_reward(one_config),
                                              state.trpo.gamma)
        clip = state.trpo.clip_value_targets > 0
        metrics["training/value_targets_clipped"] = jnp.mean(clip & ((returns < lo) | (returns > hi)))
        returns = jnp.where(clip, jnp.clip(returns, lo, hi), returns)
        state, update_metrics = update(policy, value, state, traj, adv, returns, values, k_value, epochs, minibatches)
        state, episode = _episode_metrics(state, traj)
        state = state.replace(rng=rng, iteration=state.iteration + 1,
                              env_steps=state.env_steps + horizon * num_envs)
        nonfinite = jnp.sum(state.env_state.nonfinite_count) - nonfinite_before
        metrics.update(update_metrics)
        metrics.update(episode)
        metrics["training/nonfinite_episodes"] = nonfinite
        return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    return iteration


# ----------------------------------------------------------------------- health alarms


@dataclasses.dataclass(frozen=True)
class Health:
    """Host-side alarm memory: which alarms were printed, and the rejected-step streak."""

    raised: frozenset = frozenset()
    rejected_streak: int = 0


# Below this fraction of its maximum the reward gives TRPO nothing to climb; the same
# threshold as diagnose's warning (reward.VANISHING_FRACTION says why 1e-2).
VANISHING_REWARD_FRACTION = reward_lib.VANISHING_FRACTION
# Raw advantages this flat mean every sample scored the same (trpo.py floors std at 1e-8).
FLAT_ADVANTAGE_STD = 1e-6
# One rejected line search happens; several in a row means the policy has stopped moving.
REJECTED_STREAK = 3


def check_health(metrics: dict, health: Health, motion: str = "walk") -> tuple[Health, list[str]]:
    """Alarms for one iteration's metrics: `(new health, messages to print)`.

    Each alarm is printed once per run: symptom, likely cause, fix. Pure (no printing).
    """
    found = {}
    bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        found["nonfinite"] = (
            f"non-finite metrics ({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}): a numeric blow-up in the "
            "update or the value fit. Fix: lower trpo.max_kl or trpo.value_lr, and check training/nonfinite_episodes.")
    if metrics.get("training/nonfinite_episodes", 0.0) > 0:
        found["nonfinite_physics"] = (
            f"{metrics['training/nonfinite_episodes']:.0f} episode(s) ended with non-finite physics (reset and "
            "counted): the actions drove the simulation unstable (most likely under env.control=torque). "
            "Fix: use env.control=pd, or a smaller trpo.max_kl; watch training/nonfinite_episodes.")
    fraction = metrics.get("training/reward_fraction_of_max", 1.0)
    if math.isfinite(fraction) and fraction < VANISHING_REWARD_FRACTION:
        found["vanishing_reward"] = (
            f"reward vanishingly small: {fraction:.1e} of its maximum per step, so TRPO has no signal to climb. "
            f"Likely cause: reward scales too large for the errors this policy makes. Fix: run "
            f"`mimic-mjx diagnose --motion {motion}` and change the reward scales (--set reward.pose_scale=...); "
            "the remedies for a dead imitation reward, side by side: docs/seed_remedies.md.")
    adv_std = metrics.get("training/advantage_std", 1.0)
    if math.isfinite(adv_std) and adv_std < FLAT_ADVANTAGE_STD:
        found["flat_advantages"] = (
            f"advantage std is {adv_std:.1e} (~0): every sample scores the same, so the policy gradient is empty. "
            "Likely cause: a constant or zero reward. Fix: look at the reward/<term> metrics and the reward scales.")
    rejected = metrics.get("trpo/accepted", 1.0) < 0.5 or metrics.get("losses/kl", 1.0) == 0.0
    streak = health.rejected_streak + 1 if rejected else 0
    if streak >= REJECTED_STREAK:
        found["stalled_policy"] = (
            f"the TRPO line search rejected the step {streak} iterations in a row (KL 0): the policy is not changing. "
            "Likely cause: no signal in the advantages, or non-finite gradients (trpo/nonfinite). "
            "Fix: check the alarms above, training/advantage_std and reward/<term>; try --set trpo.max_kl=0.003.")
    new = [k for k in found if k not in health.raised]
    messages = [f"ALARM {k}: {found[k]}" for k in new]
    return Health(raised=health.raised | frozenset(new), rejected_streak=streak), messages


def check_decay(scores: list[float], margin: float, evals: int) -> str | None:
    """The decay alarm's text, or None: the last `evals` periodic evaluation scores (the
    best/ selection score, in order) all lie more than `margin` below the best score before
    them. Pure, so it is decided the same from a live run or from `eval.jsonl`."""
    if len(scores) <= evals:
        return None
    peak = max(scores[:-evals])
    recent = scores[-evals:]
    if not all(score < peak - margin for score in recent):
        return None
    at = scores.index(peak) + 1
    return (f"the policy is unlearning: the last {evals} evaluations ({', '.join(f'{x:.3f}' for x in recent)}) are "
            f"more than {margin:g} below the best, {peak:.3f} (evaluation {at}); best/ keeps that policy. "
            "Likely causes (docs/learning.md, late decay): a learned std that keeps shrinking (losses/entropy falling), "
            "an observation normaliser that keeps moving, full max_kl steps on a noisy gradient once the true one is "
            "small, the policy trading tracking for survival (episodes lengthening while reward/pose falls). "
            "Fix: more samples per update (num_envs), --set trpo.learn_std=0, trpo.normalizer_samples=1e6, "
            "a max_kl schedule (trpo.max_kl_decay_start, trpo.max_kl_decay_steps, trpo.max_kl_final_fraction).")


# ------------------------------------------------------------------------ host loop


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    history: list  # metric dicts of the iterations this call ran
    run_dir: pathlib.Path


def progress_line(m: dict, iterations: int) -> str:
    accepted = "ok" if m["trpo/accepted"] > 0.5 else "REJECTED"
    return (f"iter {m['training/iteration']:>5}/{iterations}  steps {m['training/env_steps']:>10,}  "
            f"{m['charts/SPS']:8,.0f} steps/s  reward {m['training/reward_mean']:.4f} "
            f"({100 * m['training/reward_fraction_of_max']:.1f}% of max)  ep len {m['training/episode_length']:6.1f}  "
            f"kl {m['losses/kl']:.2e}  line search {accepted}/{m['trpo/backtracks']:.0f} backtracks")


def trim_log(path: pathlib.Path, last_iteration: int) -> float:
    """Keep only the metric lines up to `last_iteration` (a crash may have left later ones);
    returns the wall clock the kept lines reached (`charts/wall_time_s`), 0 if none."""
    if not path.exists():
        return 0.0
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["training/iteration"] <= last_iteration]
    path.write_text("".join(line + "\n" for line in keep))
    return json.loads(keep[-1]).get("charts/wall_time_s", 0.0) if keep else 0.0


def _first(x) -> int:
    """An int from a scalar or from the [M] copies a sweep's members hold (all equal)."""
    return int(jax.device_get(x).reshape(-1)[0])


def host_loop(step_fn: Callable, state: TrainState, config: TrainConfig, run_dir: pathlib.Path, progress,
              *, start_time: float, wall_offset: float = 0.0, evaluate: Callable | None = None,
              eval_every: int = 0, members: list | None = None, summary: Callable | None = None):
    """The Python side of training, the same for a run and a sweep: call the compiled
    iteration, append `metrics.jsonl`, print progress, raise health alarms, checkpoint,
    evaluate, and stop at `config.iterations` or `config.time_limit_minutes`.

    `members` (a sweep's, each with a `label`): `step_fn` returns metrics with a leading
    member axis; each member gets its own metrics line (with `member`) and its own alarms, and
    `summary(rows, iterations)` gives the progress line. `evaluate(state, common)` runs every
    `eval_every` iterations, at the end and at the time limit. Returns (state, history): one
    metrics dict per iteration (a list of the members' dicts for a sweep).
    """
    metrics_path = run_dir / "metrics.jsonl"
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
        with metrics_path.open("a") as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows))
        history.append(rows[0] if members is None else rows)
        progress(progress_line(rows[0], config.iterations) if members is None else summary(rows, config.iterations))
        for i, row in enumerate(rows):
            healths[i], alarms = check_health(row, healths[i], config.env.motion)
            for message in alarms:
                progress(message if members is None else f"member {i} ({members[i].label}): {message}")
        out_of_time = (config.time_limit_minutes is not None
                       and time.perf_counter() - start_time >= 60.0 * config.time_limit_minutes)
        if done % config.checkpoint_every == 0 or done == config.iterations or out_of_time:
            checkpoint.save(run_dir, done, state, keep=config.keep_checkpoints)
        if evaluate is not None and (done % eval_every == 0 or done == config.iterations or out_of_time):
            evaluate(state, common)
        if out_of_time and done < config.iterations:
            progress(f"time limit of {config.time_limit_minutes:g} minutes reached at iteration {done}; "
                     f"checkpoint saved (continue with --resume --out {run_dir})")
            break
    return state, history


def build_env(config: TrainConfig) -> tuple[env_lib.ImitationEnv, reward_lib.RewardConfig]:
    reward_config = reward_lib.validate(config.reward)
    return env_lib.ImitationEnv(config.env, reward_config=reward_config), reward_config


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
    from mimic_mjx import evaluate as eval_lib  # evaluate imports this module
    from mimic_mjx import policy as policy_lib  # so does policy

    env = eval_lib.eval_env(config)
    score = jax.jit(eval_lib.make_evaluation(env, config, config.eval_episodes))
    full = eval_lib.full_episode_steps(env)
    score_rsi = None
    if config.eval_rsi_episodes > 0:
        score_rsi = jax.jit(eval_lib.make_evaluation(eval_lib.eval_env(config, rsi=True), config,
                                                     config.eval_rsi_episodes))

    alarmed: list = []

    def run(state: TrainState, metrics: dict) -> None:
        reward_config = jax.tree.map(lambda x: x[0], state.env_state.reward_config)
        args = (state.policy_params, state.normalizer, reward_config, jax.random.PRNGKey(0))
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
        scores = [json.loads(row).get("eval/selection_score", json.loads(row)["eval/normalized_return"])
                  for row in (run_dir / "eval.jsonl").read_text().splitlines() if row.strip()]
        decay = check_decay(scores, config.decay_alarm_margin, config.decay_alarm_evals)
        if selection > best_score(run_dir):
            policy_lib.write(run_dir / BEST_DIR, config, state.policy_params, state.normalizer,
                             {"run": str(run_dir), "iteration": line["training/iteration"],
                              "env_steps": line["training/env_steps"], "score": selection,
                              **{k: v for k, v in line.items() if k.startswith("eval")}})
            text += "  (best so far: saved to best/)"
        progress(text)
        if decay is not None and not alarmed:
            alarmed.append(True)  # once per command: the run keeps going, best/ keeps the peak
            progress(f"ALARM decay: {decay}")

    return run


def train(config: TrainConfig, out_dir: str | pathlib.Path, resume: bool = False,
          progress: Callable[[str], Any] = print) -> TrainResult:
    """Train for `config.iterations` (total, counting resumed ones) and write the run directory.

    `out_dir/config.yaml` (resolved config), `metrics.jsonl` (one JSON object per iteration),
    `checkpoints/<iteration>/`. `resume=True` restores the latest checkpoint and continues
    bit-for-bit as an uninterrupted run would on the same machine.
    """
    config = resolve_defaults(config)
    command_start = time.perf_counter()
    run_dir = check_run_dir(out_dir, resume)
    metrics_path = run_dir / "metrics.jsonl"
    env, reward_config = build_env(config)
    if resume:
        state, step = checkpoint.restore_newest(run_dir, abstract_state(env, config), report=progress, set_aside=True,
                                                fillable=UPGRADABLE)
        state = with_config_leaves(state, config, reward_config)
        progress(f"resumed {run_dir} at iteration {step}")
        wall_offset = trim_log(metrics_path, step)
        trim_log(run_dir / "eval.jsonl", step)
    else:
        if checkpoint.latest_step(run_dir) is not None:
            raise MimicError(f"{run_dir}: already holds a training run; pass --resume or choose another --out")
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
    cfglib.save_config(config, run_dir / "config.yaml")

    if int(state.iteration) >= config.iterations:
        progress(f"nothing to do: {run_dir} has reached iterations = {config.iterations}")
        return TrainResult(state=state, history=[], run_dir=run_dir)
    state, mesh, out_shardings = place(state, config)
    if mesh is not None:
        progress(f"{config.num_envs} environments split over {mesh.size} devices "
                 f"({config.num_envs // mesh.size} each): {', '.join(str(d) for d in mesh.devices)}")
    progress("compiling the training iteration (first call) ...")
    start = time.perf_counter()
    step_fn = compiled.compile_fresh(make_iteration(env, config, mesh), state, out_shardings=out_shardings)
    progress(f"compiled in {time.perf_counter() - start:.1f} s")

    evaluate = _periodic_evaluation(config, run_dir, progress) if config.eval_every > 0 else None
    state, history = host_loop(step_fn, state, config, run_dir, progress, start_time=command_start,
                               wall_offset=wall_offset, evaluate=evaluate, eval_every=config.eval_every)
    return TrainResult(state=state, history=history, run_dir=run_dir)


# ------------------------------------------------------------------------------- CLI

# The presets ship inside the package (mimic_mjx/configs is a link to the repository's
# configs/, copied into wheels), so a non-editable install finds them too.
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = "walk"
# What `mimic-mjx train` with no --config runs: a preset that learns on the machine it runs on.
DEFAULT_CONFIG_CPU = "walk_cpu"


def default_config(backend: str | None = None, motion: str | None = None) -> tuple[str, str]:
    """`(preset, why)` for a command given no --config (train, diagnose, config): from JAX's
    default backend and, for `--motion CLIP`, the clip's own preset where one ships
    (`configs/<clip>_cpu.yaml` on a CPU, `configs/<clip>.yaml` on an accelerator)."""
    backend = jax.default_backend() if backend is None else backend
    clip = motion if motion and pathlib.Path(motion).name == motion and not pathlib.Path(motion).suffix else None
    if backend == "cpu":
        if clip and (CONFIG_DIR / f"{clip}_cpu.yaml").exists():
            return f"{clip}_cpu", (f"JAX's default device is a CPU: {clip}'s CPU preset, walk_cpu's recipe with "
                                   "DeepMimic's per-clip settings (native MuJoCo physics, 256 environments)")
        return DEFAULT_CONFIG_CPU, ("JAX's default device is a CPU: native MuJoCo physics, 256 environments; "
                                    "the GPU preset would run 16 MJX environments and learn nothing in hours")
    if clip and (CONFIG_DIR / f"{clip}.yaml").exists():
        return clip, f"JAX's default device is a {backend.upper()}: {clip}'s preset, MJX physics, 4096 environments"
    return DEFAULT_CONFIG, f"JAX's default device is a {backend.upper()}: MJX physics, 4096 environments"


def announce_default(motion: str | None = None, stream=None, prefix: str = "") -> str:
    """`default_config`'s preset, said in one line on `stream` (stdout by default) so a user
    sees which config a command without --config runs; every such command calls this."""
    name, why = default_config(motion=motion)
    print(f"{prefix}config: {name} ({why}; choose another with --config)", file=stream, flush=True)
    return name


def find_config(name_or_path: str) -> pathlib.Path:
    """A YAML path as given, or a preset name (`walk`) looked up in the shipped `configs/`."""
    path = pathlib.Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    presets = ", ".join(known) or "none found"
    raise MimicError(f"config '{name_or_path}' not found: not a file, nor a preset ({presets})")


def load_train_config(path: str | pathlib.Path | None, overrides: list[str]) -> TrainConfig:
    """TrainConfig from a YAML file (or preset name) and `--set` overrides; MimicError on mistakes."""
    path = find_config(str(path)) if path is not None else None
    return cfglib.load_config(TrainConfig, path, overrides)


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
    parallel.make_mesh(config.devices, config.num_envs)  # a layout this machine cannot run: one line now
    out = args.out or str(pathlib.Path("runs") / pathlib.Path(config.env.motion).stem)
    check_run_dir(out, args.resume)
    check_clip(config)
    return config, out


def run_cli(args) -> int:
    """Run `mimic-mjx train` from parsed `args`; MimicError propagates to the CLI's one-line handler."""
    config, out = config_from_args(args)
    compiled.enable_compile_cache()
    train(config, out, resume=args.resume, progress=lambda line: print(line, flush=True))
    return 0
