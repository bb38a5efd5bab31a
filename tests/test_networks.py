"""Networks, Gaussian helpers and the running normaliser, against hand numbers and numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimic_mjx.networks import (
    NormalizerState,
    PolicyNetwork,
    ValueNetwork,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    init_normalizer,
    normalize,
    update_normalizer,
)

pytestmark = pytest.mark.timeout(60)


def test_policy_shapes_and_initial_output():
    net = PolicyNetwork(action_dim=2, hidden=(16, 8))
    obs = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 3))
    params = net.init(jax.random.PRNGKey(1), obs)
    mean, log_std = net.apply(params, obs)
    assert mean.shape == (4, 5, 2)
    assert log_std.shape == (2,)
    np.testing.assert_array_equal(log_std, [-1.0, -1.0])
    # The 0.01-scaled last layer keeps the initial mean action near 0 (std ≈ 0.01·|h|).
    assert float(jnp.max(jnp.abs(mean))) < 0.1


def test_value_shapes():
    net = ValueNetwork(hidden=(8,))
    obs = jnp.ones((4, 5, 3))
    params = net.init(jax.random.PRNGKey(0), obs)
    assert net.apply(params, obs).shape == (4, 5)
    assert net.apply(params, obs[0, 0]).shape == ()


def test_log_prob_matches_product_of_densities():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(6, 3))
    log_std = rng.normal(size=(3,)) * 0.5
    actions = rng.normal(size=(6, 3))
    std = np.exp(log_std)
    # Independent per-dimension N(m, σ²) densities, multiplied, then logged.
    density = np.prod(np.exp(-((actions - mean) ** 2) / (2 * std**2)) / (std * np.sqrt(2 * np.pi)), axis=-1)
    got = gaussian_log_prob(jnp.asarray(mean), jnp.asarray(log_std), jnp.asarray(actions))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, np.log(density), rtol=1e-5, atol=1e-5)


def test_log_prob_hand_value():
    # 1-D standard normal at a = 1: -0.5·1 - 0.5·log(2π) = -0.5 - 0.918939 = -1.418939.
    got = gaussian_log_prob(jnp.zeros((1,)), jnp.zeros((1,)), jnp.ones((1,)))
    np.testing.assert_allclose(got, -1.4189385, rtol=1e-6)


def test_kl_of_identical_is_zero():
    mean = jnp.array([[0.3, -1.0], [2.0, 0.5]])
    log_std = jnp.array([-0.7, 0.2])
    np.testing.assert_allclose(gaussian_kl(mean, log_std, mean, log_std), [0.0, 0.0], atol=1e-7)


def test_kl_hand_example():
    # dim 0: p0 = N(0, 1), p1 = N(1, 2²):
    #   KL = log(σ1/σ0) + (σ0² + (μ0-μ1)²) / (2σ1²) - ½ = log 2 + (1 + 1)/8 - 0.5
    #      = 0.693147 + 0.25 - 0.5 = 0.443147
    # dim 1: identical N(1, 0.5²) → 0.  Sum = 0.443147.
    mean0, log_std0 = jnp.array([0.0, 1.0]), jnp.log(jnp.array([1.0, 0.5]))
    mean1, log_std1 = jnp.array([1.0, 1.0]), jnp.log(jnp.array([2.0, 0.5]))
    np.testing.assert_allclose(gaussian_kl(mean0, log_std0, mean1, log_std1), 0.443147, rtol=1e-5)
    # Reverse direction, KL(p1||p0) = log(1/2) + (4 + 1)/2 - 0.5 = -0.693147 + 2.0 = 1.306853.
    np.testing.assert_allclose(gaussian_kl(mean1, log_std1, mean0, log_std0), 1.306853, rtol=1e-5)


def test_entropy_hand_value():
    # Per dim ½·log(2πe) + log σ: σ = 1 → 1.418939; σ = 2 → 1.418939 + 0.693147 = 2.112086.
    # Sum = 1.418939 + 2.112086 = 3.531025.
    np.testing.assert_allclose(gaussian_entropy(jnp.array([0.0, math.log(2.0)])), 3.531025, rtol=1e-6)
    assert gaussian_entropy(jnp.zeros((3,))).shape == ()


def test_normalizer_matches_numpy_over_several_updates():
    rng = np.random.default_rng(1)
    batches = [
        rng.normal(loc=3.0, scale=2.0, size=(7, 4)),
        rng.normal(loc=-1.0, scale=0.5, size=(50, 4)),
        rng.normal(loc=10.0, scale=5.0, size=(3, 4)),
    ]
    state = init_normalizer(4)
    for batch in batches:
        state = update_normalizer(state, jnp.asarray(batch, jnp.float32))
    data = np.concatenate(batches)
    np.testing.assert_allclose(state.mean, data.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.var, data.var(axis=0), rtol=1e-4)
    assert float(state.count) == 60.0


def test_normalizer_ignores_nonfinite_and_masked_rows():
    rng = np.random.default_rng(2)
    batch = rng.normal(size=(6, 3)).astype(np.float32)
    batch[1, 2] = np.nan
    batch[4, 0] = np.inf
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # row 5 invalid
    state = update_normalizer(init_normalizer(3), jnp.asarray(batch), jnp.asarray(mask))
    kept = batch[[0, 2, 3]]
    np.testing.assert_allclose(state.mean, kept.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.var, kept.var(axis=0), rtol=1e-5)
    assert float(state.count) == 3.0


def test_normalizer_all_rows_dropped_keeps_state():
    state = NormalizerState(mean=jnp.array([1.0, 2.0]), var=jnp.array([4.0, 9.0]), count=jnp.array(5.0))
    new = update_normalizer(state, jnp.full((3, 2), jnp.nan))
    np.testing.assert_array_equal(new.mean, state.mean)
    np.testing.assert_array_equal(new.var, state.var)
    assert float(new.count) == 5.0


def test_normalize_scales_and_clips():
    state = NormalizerState(mean=jnp.array([1.0, -2.0]), var=jnp.array([4.0, 0.25]), count=jnp.array(10.0))
    # (3 - 1)/2 = 1; (-2.5 + 2)/0.5 = -1; (101 - 1)/2 = 50 → clip 10; (-2 + 2)/0.5 = 0.
    obs = jnp.array([[3.0, -2.5], [101.0, -2.0]])
    np.testing.assert_allclose(normalize(state, obs), [[1.0, -1.0], [10.0, 0.0]], rtol=1e-6)
    # A fresh normaliser (mean 0, var 1) is the identity below the clip.
    np.testing.assert_allclose(normalize(init_normalizer(2), obs[:1]), obs[:1], rtol=1e-6)


def test_normalizer_under_jit_and_vmap():
    batches = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 3))
    states = jax.vmap(lambda _: init_normalizer(3))(jnp.arange(2))
    new = jax.jit(jax.vmap(update_normalizer))(states, batches)
    assert new.mean.shape == (2, 3)
    np.testing.assert_allclose(new.mean[1], np.asarray(batches[1]).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_normalizer_freezes_once_it_has_merged_max_samples():
    """DeepMimic's NormalizerSamples: hand values on a 1-D feature."""
    state = update_normalizer(init_normalizer(1), jnp.array([[1.0], [2.0], [3.0]]))  # count 3, mean 2, var 2/3
    more = jnp.array([[5.0], [9.0]])
    # Below the limit: merged. Mean of 1, 2, 3, 5, 9 = 4; variance (9 + 4 + 1 + 1 + 25) / 5 = 8.
    merged = update_normalizer(state, more, max_samples=4.0)
    assert float(merged.count) == 5.0
    assert float(merged.mean[0]) == pytest.approx(4.0) and float(merged.var[0]) == pytest.approx(8.0)
    # At the limit: unchanged, count included, and it stays so.
    frozen = update_normalizer(state, more, max_samples=3.0)
    for a, b in ((frozen.mean, state.mean), (frozen.var, state.var), (frozen.count, state.count)):
        np.testing.assert_array_equal(a, b)
    # 0: never frozen.
    assert float(update_normalizer(state, more, max_samples=0.0).count) == 5.0
