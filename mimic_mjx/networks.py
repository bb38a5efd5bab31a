"""Policy and value networks, diagonal-Gaussian helpers and the running observation normaliser.

Everything here is a flax.linen module or a pure function over arrays, so the trainer can
jit and vmap it over a leading member axis. Shapes: `N` samples, `D` observation dims,
`A` action dims; `...` is any leading batch shape.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

# log(2π) and the per-dimension Gaussian entropy constant 0.5·log(2πe).
_LOG_2PI = math.log(2.0 * math.pi)
_ENTROPY_CONST = 0.5 * (_LOG_2PI + 1.0)

# Added to the running variance before the square root; the value gym's
# NormalizeObservation uses, small enough not to bias any real feature.
_NORMALIZER_EPS = 1e-8


def _mlp_torso(x: jax.Array, hidden: tuple[int, ...]) -> jax.Array:
    # ReLU hidden layers, as DeepMimic's fc_2layers_1024units nets (Peng et al. 2018).
    for width in hidden:
        x = nn.relu(nn.Dense(width)(x))
    return x


class PolicyNetwork(nn.Module):
    """Diagonal-Gaussian policy: an MLP for the mean and a state-independent log std.

    `__call__(obs [..., D]) -> (mean [..., A], log_std [A])`.
    """

    action_dim: int
    hidden: tuple[int, ...] = (1024, 512)  # DeepMimic's actor "fc_2layers_1024units"
    # exp(-1) ≈ 0.37 in action units (PD targets, rad). DeepMimic fixed its exploration
    # noise instead ("Noise": 0.05 of the action normaliser's scale in its PPO agent json);
    # this learnable start is of that order for joint-angle targets, not a measured match.
    init_log_std: float = -1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = _mlp_torso(obs, self.hidden)
        # A 0.01-scaled last layer makes the initial mean action ~0, so early exploration is
        # set by log_std alone (DeepMimic's ActorInitOutputScale 0.01; Andrychowicz et al. 2021).
        mean = nn.Dense(
            self.action_dim,
            kernel_init=nn.initializers.variance_scaling(0.01**2, "fan_in", "truncated_normal"),
            bias_init=nn.initializers.zeros,
        )(x)
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
        return mean, log_std


class ValueNetwork(nn.Module):
    """State-value MLP: `__call__(obs [..., D]) -> value [...]`."""

    hidden: tuple[int, ...] = (1024, 512)  # DeepMimic's critic "fc_2layers_1024units"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _mlp_torso(obs, self.hidden)
        return jnp.squeeze(nn.Dense(1)(x), axis=-1)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """Log density of `actions [..., A]` under N(mean [..., A], diag(exp(log_std)²)); returns `[...]`.

    `log_std` broadcasts against `mean` (`[A]` or `[..., A]`).
    """
    z = (actions - mean) * jnp.exp(-log_std)
    return -0.5 * jnp.sum(z**2 + 2.0 * log_std + _LOG_2PI, axis=-1)


def gaussian_kl(mean0: jax.Array, log_std0: jax.Array, mean1: jax.Array, log_std1: jax.Array) -> jax.Array:
    """KL(p0 || p1) of two diagonal Gaussians, summed over the action axis; returns `[...]`.

    Means are `[..., A]`; log stds are `[A]` or `[..., A]` and broadcast.
    """
    var0 = jnp.exp(2.0 * log_std0)
    var1 = jnp.exp(2.0 * log_std1)
    per_dim = log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2.0 * var1) - 0.5
    return jnp.sum(per_dim, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Differential entropy (nats) of a diagonal Gaussian: `log_std [..., A] -> [...]` (scalar for `[A]`)."""
    return jnp.sum(log_std + _ENTROPY_CONST, axis=-1)


@struct.dataclass
class NormalizerState:
    """Running per-feature mean and (population) variance of observations."""

    mean: jax.Array  # [D]
    var: jax.Array  # [D]; 1 before any data, so normalize() is then the identity
    # Samples merged so far. float32: exact to 2**24 samples, then the merge weights are
    # still accurate to ~1e-7 relative, which is harmless for a normaliser.
    count: jax.Array  # []


def init_normalizer(dim: int) -> NormalizerState:
    """An empty normaliser for `dim`-dimensional observations (mean 0, var 1, count 0)."""
    return NormalizerState(
        mean=jnp.zeros((dim,), jnp.float32),
        var=jnp.ones((dim,), jnp.float32),
        count=jnp.zeros((), jnp.float32),
    )


def update_normalizer(
    state: NormalizerState, batch: jax.Array, mask: jax.Array | None = None,
    max_samples: jax.Array | float = 0.0,
) -> NormalizerState:
    """Merge `batch [..., D]` into the running statistics (Chan et al. 1979 parallel merge).

    Rows with any non-finite value, and rows with `mask [...] == 0`, are left out, so one
    exploded environment cannot poison the statistics every later observation is scaled by.
    An update whose rows are all left out returns `state` unchanged. `max_samples > 0` freezes
    the normaliser once it has merged that many samples (DeepMimic's NormalizerSamples): a
    state whose count has reached it comes back unchanged; the batch that crosses it is still
    merged whole.
    """
    merged = _merge(state, batch, mask)
    frozen = (max_samples > 0) & (state.count >= max_samples)
    return jax.tree.map(lambda old, new: jnp.where(frozen, old, new), state, merged)


def _merge(state: NormalizerState, batch: jax.Array, mask: jax.Array | None) -> NormalizerState:
    dim = state.mean.shape[-1]
    rows = batch.reshape(-1, dim)
    keep = jnp.all(jnp.isfinite(rows), axis=-1)
    if mask is not None:
        keep = keep & (mask.reshape(-1) > 0)
    weight = keep.astype(jnp.float32)
    rows = jnp.where(keep[:, None], rows, 0.0)

    n_b = jnp.sum(weight)
    mean_b = jnp.sum(rows * weight[:, None], axis=0) / jnp.maximum(n_b, 1.0)
    m2_b = jnp.sum(((rows - mean_b) ** 2) * weight[:, None], axis=0)

    total = state.count + n_b
    safe_total = jnp.maximum(total, 1.0)
    delta = mean_b - state.mean
    new_mean = state.mean + delta * (n_b / safe_total)
    m2 = state.var * state.count + m2_b + delta**2 * (state.count * n_b / safe_total)
    new_var = m2 / safe_total

    has_data = n_b > 0
    return NormalizerState(
        mean=jnp.where(has_data, new_mean, state.mean),
        var=jnp.where(has_data, new_var, state.var),
        count=total,
    )


def normalize(state: NormalizerState, obs: jax.Array, clip: float = 10.0) -> jax.Array:
    """`(obs [..., D] - mean) / sqrt(var + eps)`, clipped to `[-clip, clip]`; returns `[..., D]`.

    The ±10 default clip is the one PPO/TRPO baselines (VecNormalize) use.
    """
    scaled = (obs - state.mean) / jnp.sqrt(state.var + _NORMALIZER_EPS)
    return jnp.clip(scaled, -clip, clip)
