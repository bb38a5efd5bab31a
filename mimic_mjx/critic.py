"""The critic: generalised advantage estimation and the fitted value function TRPO's step uses.

Pure functions over pytrees, jitted (and vmapped over a sweep's members) with the rest of the
training iteration. `N` flattened samples, `D` observation dims; `[T, B]` rollouts time-major.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from mimic_mjx.errors import MimicError
from mimic_mjx.trpo import all_finite, masked_mean

Params = Any
ValueApply = Callable[[Params, jax.Array], jax.Array]


def compute_gae(
    rewards: jax.Array,
    values: jax.Array,
    bootstrap_values: jax.Array,
    terminations: jax.Array,
    truncations: jax.Array,
    gamma: jax.Array | float,
    lam: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation (Schulman et al. 2016) over a `[T, B]` rollout.

    `values[t] = V(s_t)`; `bootstrap_values[t] = V(s'_t)`, the value of the true next
    observation after step t (before any auto-reset). A termination does not bootstrap; a
    truncation bootstraps from `bootstrap_values`; both cut the λ-recursion, so no advantage
    leaks across an episode boundary. A step flagged as both counts as a termination.
    The last step's recursion starts from 0, its δ already bootstraps from `bootstrap_values`.
    Returns `(advantages [T, B], returns [T, B])` with `returns = advantages + values`.
    """
    term = terminations.astype(values.dtype)
    done = jnp.maximum(term, truncations.astype(values.dtype))
    deltas = rewards + gamma * (1.0 - term) * bootstrap_values - values

    def backward(next_adv, step):
        delta, d = step
        adv = delta + gamma * lam * (1.0 - d) * next_adv
        return adv, adv

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, done), reverse=True)
    return advantages, advantages + values


def value_target_bounds(min_reward: jax.Array, max_reward: jax.Array, gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(lo, hi)` that hold every discounted return of an episode (of any length, ended at
    any step) whose per-step rewards lie in [min_reward, max_reward]:
    `min(min_reward, 0) / (1 - γ)` and `max(max_reward, 0) / (1 - γ)`; ±inf at γ = 1."""
    scale = jnp.where(gamma < 1.0, 1.0 / jnp.maximum(1.0 - gamma, 1e-12), jnp.inf)
    lo, hi = jnp.minimum(min_reward, 0.0), jnp.maximum(max_reward, 0.0)
    # 0 * inf would be NaN: a zero bound stays zero at γ = 1.
    return jnp.where(lo < 0, lo * scale, 0.0), jnp.where(hi > 0, hi * scale, 0.0)


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """`1 - Var[returns - values] / Var[returns]` over `[N]` (or any equal shape); scalar.

    1 is a perfect value function, 0 is no better than a constant, < 0 is worse. Returns 0
    when the returns have no variance (CleanRL returns NaN there; a NaN metric would look
    like a divergence).
    """
    mask = jnp.ones_like(returns) if mask is None else mask.astype(returns.dtype)

    def var(x):
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    var_returns = var(returns)
    ev = 1.0 - var(returns - values) / jnp.where(var_returns > 0, var_returns, 1.0)
    return jnp.where(var_returns > 0, ev, 0.0)


def value_optimizer(learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Adam whose learning rate lives in its state (optax.inject_hyperparams).

    Pass it to `fit_value` with `learning_rate=config.value_lr` so the rate is a traced
    leaf that a sweep can vmap, rather than a constant baked in at trace time.
    """
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def _value_loss(value_apply: ValueApply, params, obs, returns, mask) -> jax.Array:
    return masked_mean((value_apply(params, obs) - returns) ** 2, mask)


def fit_value(
    value_apply: ValueApply,
    value_params: Params,
    opt_state: optax.OptState,
    optimizer: optax.GradientTransformation,
    obs: jax.Array,
    returns: jax.Array,
    rng: jax.Array,
    epochs: int,
    minibatches: int,
    mask: jax.Array | None = None,
    learning_rate: jax.Array | float | None = None,
    values_before: jax.Array | None = None,
) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
    """Regress `value_apply(params, obs [N, D]) -> [N]` on `returns [N]` by minibatch MSE.

    Reshuffles with `rng` every epoch and scans over `epochs × minibatches` steps of size
    `N // minibatches` (the `N % minibatches` left over differ per epoch). A minibatch whose
    loss or gradient is non-finite is skipped and counted. `learning_rate`, if given, is
    written into `opt_state` (needs an `optax.inject_hyperparams` optimiser such as
    `value_optimizer()`). `values_before [N]`, if given, must be `value_apply(value_params, obs)`
    (the values GAE just computed): the fit then skips that forward pass over the batch.
    Metrics: `losses/value_loss` (full-batch MSE after the fit), `losses/value_loss_before`,
    `losses/explained_variance` (of the pre-fit predictions, i.e. the values GAE used when obs
    and params are the same), `losses/value_skipped_minibatches`.
    """
    n = obs.shape[0]
    if not 1 <= minibatches <= n:  # static shapes, so checked once at trace time
        raise MimicError(f"value minibatches must be in [1, {n}] (the batch size), got {minibatches}")
    size = n // minibatches
    mask = jnp.ones((n,), returns.dtype) if mask is None else mask.astype(returns.dtype)
    valid = mask > 0
    obs = jnp.where(valid[:, None], obs, 0.0)
    returns = jnp.where(valid, returns, 0.0)
    if learning_rate is not None:
        hyper = dict(opt_state.hyperparams)
        hyper["learning_rate"] = jnp.asarray(learning_rate, hyper["learning_rate"].dtype)
        opt_state = opt_state._replace(hyperparams=hyper)

    def minibatch_step(carry, idx):
        params, state = carry
        loss_and_grad = jax.value_and_grad(_value_loss, argnums=1)
        loss, grads = loss_and_grad(value_apply, params, obs[idx], returns[idx], mask[idx])
        updates, new_state = optimizer.update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(loss) & all_finite(grads)
        kept = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), (new_params, new_state), (params, state)
        )
        return kept, ~ok

    def epoch(carry, key):
        order = jax.random.permutation(key, n)[: size * minibatches].reshape(minibatches, size)
        return jax.lax.scan(minibatch_step, carry, order)

    if values_before is None:
        values_before = value_apply(value_params, obs)
    loss_before = masked_mean((values_before - returns) ** 2, mask)
    ev = explained_variance(values_before, returns, mask)
    (value_params, opt_state), skipped = jax.lax.scan(
        epoch, (value_params, opt_state), jax.random.split(rng, epochs)
    )
    metrics = {
        "losses/value_loss": _value_loss(value_apply, value_params, obs, returns, mask),
        "losses/value_loss_before": loss_before,
        "losses/explained_variance": ev,
        "losses/value_skipped_minibatches": jnp.sum(skipped).astype(returns.dtype),
    }
    return value_params, opt_state, metrics
