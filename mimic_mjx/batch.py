"""A batch of environments: `reset_batch` and `step_batch`, the auto-reset a rollout uses.

`ImitationEnv` (env.py) is one environment's pure functions; this module runs B of them as
one program. `step_batch` advances every environment and restarts only the episodes that
ended, a round of `reset_slots(B)` at a time, instead of building a reset for every
environment at every step as `vmap(env.step)` would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mimic_mjx import env as env_lib
from mimic_mjx.errors import MimicError


def reset_slots(batch_size: int) -> int:
    """Episodes `step_batch` can restart per round: an eighth of the batch, at least 1.

    The untrained walk_cpu policy falls after ~28 steps, so 64 environments end ~2.3 episodes
    per step and more than 8 (a second round) in about one step in 1,500 (Poisson); a trained
    one ends one in hundreds of steps, and a step where none ends runs no round.
    """
    return max(1, -(-batch_size // 8))


def reset_batch(env: env_lib.ImitationEnv, rng, batch_size: int, reward_config=None) -> env_lib.State:
    """`batch_size` independent environments: a State with a leading [B] axis."""
    keys = jax.random.split(rng, batch_size)
    return jax.vmap(lambda k: env.reset(k, reward_config))(keys)


def step_batch(env: env_lib.ImitationEnv, state: env_lib.State, actions) -> env_lib.State:
    """Step a batch [B]: actions [B, 28]. A wrong shape is a MimicError naming both shapes.

    The same states as `jax.vmap(env.step)`, but the episodes that ended are restarted a
    round of `reset_slots(B)` at a time, gathered from the batch (a `lax.while_loop` that runs
    no round in a step where nothing ended): `vmap(env.step)` builds a reset, forward
    kinematics and observation included, for every environment at every step and keeps the
    few it needs. Under a sweep's vmap the rounds run until every member is done.
    """
    batch = state.time.shape[0]
    if actions.shape != (batch, env.action_size):
        raise MimicError(f"actions have shape {tuple(actions.shape)}, expected ({batch}, {env.action_size})")
    stepped = jax.vmap(env.advance)(state, actions)
    slots = reset_slots(batch)
    done = stepped.done
    rank = jnp.cumsum(done.astype(jnp.int32)) - 1  # [B] each finished env's place among them
    count = jnp.sum(done.astype(jnp.int32))

    def restart_round(carry):
        first, current = carry
        wanted = first + jnp.arange(slots)  # [slots] ranks restarted this round
        # [slots] the env of each rank (argmax of a one-hot row; rows past `count` pick env 0, unused)
        env_of = jnp.argmax(done[None, :] & (rank[None, :] == wanted[:, None]), axis=1)
        picked = jax.tree.map(lambda x: x[env_of], (state.rng, state.reward_config))
        fresh = jax.vmap(env.reset)(*picked)  # [slots]
        fresh = jax.tree.map(lambda x: x[jnp.clip(rank - first, 0, slots - 1)], fresh)  # [B]
        now = done & (rank >= first) & (rank < first + slots)
        return first + slots, env_lib.select(now, env_lib.keep_outcome(fresh, current), current)

    _, state = jax.lax.while_loop(lambda carry: carry[0] < count, restart_round, (jnp.zeros((), jnp.int32), stepped))
    return state
