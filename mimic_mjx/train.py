"""The trainer: one pure, jittable TRPO iteration over a vmapped environment batch.

* `init(env, config, rng, reward_config) -> TrainState`
* `make_iteration(env, config) -> iteration(TrainState) -> (TrainState, metrics)`, built from
  the module-level pieces `rollout` (lax.scan of `horizon` policy+env steps over the batch),
  `compute_advantages` (GAE) and `update` (TRPO step, value fit, normaliser update).

Everything an iteration reads lives in `TrainState` (parameters, optimiser and normaliser
state, the batched env `State` with its reward config, the TRPO leaves, the RNG), so
`jax.vmap(iteration)` over a leading member axis trains a population with one compile and a
restored checkpoint continues exactly as the uninterrupted run would have.

The run config is `runconfig.py`; the host side (the loop, alarms, periodic evaluation,
checkpoints, `mimic-mjx train`) is `runner.py`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from mimic_mjx import batch as batch_lib
from mimic_mjx import critic
from mimic_mjx import distributed
from mimic_mjx import env as env_lib
from mimic_mjx import networks as nets
from mimic_mjx import parallel
from mimic_mjx import reward as reward_lib
from mimic_mjx import trpo as trpo_lib
from mimic_mjx.runconfig import TrainConfig

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
    explored: jax.Array  # [T, B] bool, the action carried noise (trpo.explore_rate); else it is the mean
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
    env_state = batch_lib.reset_batch(env, k_env, config.num_envs, reward_config)
    state = TrainState(
        policy_params=policy.init(k_policy, dummy),
        value_params=value_params,
        value_opt_state=critic.value_optimizer(config.trpo.value_lr).init(value_params),
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


def place(state: TrainState, config: TrainConfig, members: int = 0):
    """`(state, mesh, out_shardings)`: `state` placed on `config.devices` (parallel.py), the
    mesh for `make_iteration` and the shardings to pin its outputs to; `members`: a sweep's
    member count (its state has a leading members axis). On one device the state is
    returned as it is with `(None, None)`: the program is the one before meshes."""
    mesh = parallel.make_mesh(config.devices, config.num_envs, members)
    if mesh.size == 1:
        return state, None, None
    placement = state_shardings(state, mesh, members > 0)
    distributed.barrier("mimic_mjx place")  # device_put checks every process holds the same state
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
    normaliser is frozen for the rollout) on a random share `trpo.explore_rate` of the steps,
    the mean on the others. Finished episodes reset inside `batch.step_batch`,
    which runs on each device's shard of the batch under a `mesh` (parallel.py).
    """
    step_envs = parallel.env_step(lambda s, a: batch_lib.step_batch(env, s, a), mesh)
    rate = trpo_lib.explore_rate(state.trpo, state.env_steps)

    def step(carry, step_key):
        env_state, ep_return = carry
        mean, log_std = policy.apply(state.policy_params, nets.normalize(state.normalizer, env_state.obs))
        # The noise keeps its own key, so at rate 1 the actions are those drawn before the rate existed.
        explored = jax.random.uniform(jax.random.fold_in(step_key, 1), mean.shape[:1]) < rate
        noisy = mean + jnp.exp(log_std) * jax.random.normal(step_key, mean.shape)
        action = jnp.where(explored[:, None], noisy, mean)
        nxt = step_envs(env_state, action)
        done = nxt.terminated | nxt.truncated
        ep_return = ep_return + nxt.reward
        out = Trajectory(
            obs=env_state.obs,
            actions=action,
            explored=explored,
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
    adv, returns = critic.compute_gae(traj.rewards, values, bootstrap, traj.terminated, traj.truncated,
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
    # The actor learns from the exploring steps only (DeepMimic); the critic from every step.
    batch = trpo_lib.TrpoBatch(obs=obs, actions=flat(traj.actions), advantages=flat(advantages),
                               mask=flat(traj.explored).astype(obs.dtype))
    max_kl = trpo_lib.scheduled_max_kl(state.trpo, state.env_steps)
    policy_params, policy_metrics = trpo_lib.trpo_step(
        policy.apply, state.policy_params, batch, state.trpo.replace(max_kl=max_kl),
        trainable=trainable_policy(state.policy_params, state.trpo.learn_std))
    policy_metrics["trpo/max_kl"] = max_kl
    value_params, opt_state, value_metrics = critic.fit_value(
        value.apply, state.value_params, state.value_opt_state, critic.value_optimizer(), obs, flat(returns),
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
        "training/explored_fraction": jnp.mean(traj.explored.astype(jnp.float32)),
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
      training/explored_fraction       share of steps whose action carried noise (trpo.explore_rate)
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
        lo, hi = critic.value_target_bounds(reward_lib.min_reward(one_config), reward_lib.max_reward(one_config),
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


def build_env(config: TrainConfig) -> tuple[env_lib.ImitationEnv, reward_lib.RewardConfig]:
    reward_config = reward_lib.validate(config.reward)
    return env_lib.ImitationEnv(config.env, reward_config=reward_config), reward_config
