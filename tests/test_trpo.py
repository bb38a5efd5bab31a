"""TRPO, GAE, CG, Fisher-vector products and the value fit, against independent references.

Expected values come from hand arithmetic (in comments), numpy, explicit matrices or plain
Python loops, never from the function under test.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from mimic_mjx.errors import MimicError
from mimic_mjx.networks import PolicyNetwork, ValueNetwork, gaussian_kl
from mimic_mjx.critic import compute_gae, explained_variance, fit_value, value_optimizer, value_target_bounds
from mimic_mjx.trpo import (TrpoBatch, TrpoConfig, conjugate_gradient, explore_rate, fisher_vector_product,
                             scheduled_max_kl, trpo_step)

pytestmark = pytest.mark.timeout(120)

OBS_DIM, ACT_DIM, N = 3, 2, 256


# --- numpy references -------------------------------------------------------------------

def np_log_prob(mean, log_std, actions):
    std = np.exp(log_std)
    return np.sum(-((actions - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi), axis=-1)


def np_mean_kl(mean0, log_std0, mean1, log_std1):
    s0, s1 = np.exp(log_std0), np.exp(log_std1)
    per_dim = np.log(s1 / s0) + (s0**2 + (mean0 - mean1) ** 2) / (2 * s1**2) - 0.5
    return per_dim.sum(axis=-1).mean()


def as_np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy():
    net = PolicyNetwork(action_dim=ACT_DIM, hidden=(16,))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS_DIM)))
    return net, params


@pytest.fixture(scope="module")
def batch(policy):
    """Actions sampled from the old policy; advantages favour a larger action[0]."""
    net, params = policy
    k_obs, k_act = jax.random.split(jax.random.PRNGKey(1))
    obs = jax.random.normal(k_obs, (N, OBS_DIM))
    mean, log_std = net.apply(params, obs)
    actions = mean + jnp.exp(log_std) * jax.random.normal(k_act, (N, ACT_DIM))
    advantages = actions[:, 0] - mean[:, 0]
    return TrpoBatch(obs=obs, actions=actions, advantages=advantages, mask=jnp.ones((N,)))


@pytest.fixture(scope="module")
def step(policy):
    net, _ = policy
    return jax.jit(functools.partial(trpo_step, net.apply))


# --- 1. conjugate gradient ----------------------------------------------------------------

def test_cg_solves_spd_system():
    n = 10
    rng = np.random.default_rng(0)
    m = rng.normal(size=(n, n))
    a = m @ m.T + n * np.eye(n)
    b = rng.normal(size=n)
    a32 = jnp.asarray(a, jnp.float32)
    solve = jax.jit(lambda rhs: conjugate_gradient(lambda v: a32 @ v, rhs, n, 1e-10))
    x, residual_sq, used = solve(jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)
    assert 1 <= int(used) <= n
    assert float(residual_sq) < 1e-8 * float(b @ b)


def test_cg_stops_early_on_tolerance():
    # For A = 4·I the first CG step is exact: α = rᵀr / (4 rᵀr) = ¼, x = b/4, r = 0.
    b = jnp.array([1.0, -2.0, 3.0])
    x, residual_sq, used = conjugate_gradient(lambda v: 4.0 * v, b, 10, 1e-10)
    np.testing.assert_allclose(x, [0.25, -0.5, 0.75], rtol=1e-6)
    assert int(used) == 1
    assert float(residual_sq) == 0.0


# --- 2. Fisher-vector product ---------------------------------------------------------------

def test_fvp_equals_explicit_fisher():
    net = PolicyNetwork(action_dim=2, hidden=(4,))
    obs = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    params = net.init(jax.random.PRNGKey(3), obs)
    # Non-trivial log std so the 1/σ² weights differ per dimension.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.array([-0.5, 0.3]) if "log_std" in jax.tree_util.keystr(path) else x, params
    )
    flat0, unravel = ravel_pytree(params)
    old_mean, old_log_std = net.apply(params, obs)

    def mean_kl(flat):
        mean, log_std = net.apply(unravel(flat), obs)
        return jnp.mean(gaussian_kl(old_mean, old_log_std, mean, log_std))

    # Analytic Gaussian Fisher: per sample Jᵀ H J, J = d(mean_n, log_std)/dθ and
    # H = diag(1/σ², 2) (Hessian of the Gaussian KL in (μ, log σ) at p1 = p0).
    def outputs(flat):
        mean, log_std = net.apply(unravel(flat), obs)
        return jnp.concatenate([mean, jnp.broadcast_to(log_std, mean.shape)], axis=-1)  # [5, 4]

    jac = np.asarray(jax.jacfwd(outputs)(flat0), np.float64)  # [5, 4, P]
    sigma2 = np.exp(2 * np.asarray(old_log_std, np.float64))
    h = np.diag(np.concatenate([1 / sigma2, [2.0, 2.0]]))
    fisher = np.einsum("nip,ij,njq->pq", jac, h, jac) / obs.shape[0]
    hessian = np.asarray(jax.hessian(mean_kl)(flat0), np.float64)
    np.testing.assert_allclose(hessian, fisher, atol=1e-5)  # the two references agree

    def kl_of_outputs(outputs):
        mean, log_std = outputs
        return jnp.mean(gaussian_kl(old_mean, old_log_std, mean, log_std))

    v = jax.random.normal(jax.random.PRNGKey(4), flat0.shape)

    @jax.jit
    def fvp(v, damping):
        return fisher_vector_product(lambda f: net.apply(unravel(f), obs), kl_of_outputs, flat0, damping)(v)

    np.testing.assert_allclose(fvp(v, 0.0), fisher @ np.asarray(v), rtol=1e-4, atol=1e-5)
    damped = fisher @ np.asarray(v) + 0.1 * np.asarray(v)
    np.testing.assert_allclose(fvp(v, 0.1), damped, rtol=1e-4, atol=1e-5)


# --- 3. one TRPO step -----------------------------------------------------------------------

def test_trpo_step_improves_within_trust_region(policy, batch, step):
    net, params = policy
    config = TrpoConfig()
    new_params, metrics = step(params, batch, config)
    assert float(metrics["trpo/accepted"]) == 1.0
    assert float(metrics["trpo/nonfinite"]) == 0.0
    assert float(metrics["losses/surrogate_after"]) > float(metrics["losses/surrogate_before"])

    actions = np.asarray(batch.actions)
    m0, s0 = as_np(net.apply(params, batch.obs))
    m1, s1 = as_np(net.apply(new_params, batch.obs))
    kl = np_mean_kl(m0, s0, m1, s1)
    assert 0.0 < kl <= config.kl_accept_factor * config.max_kl * (1 + 1e-4)
    np.testing.assert_allclose(float(metrics["losses/kl"]), kl, rtol=1e-3)

    # Surrogate with numpy: normalised advantages, likelihood ratios of the new policy.
    adv = np.asarray(batch.advantages, np.float64)
    adv = (adv - adv.mean()) / adv.std()
    ratio = np.exp(np_log_prob(m1, s1, actions) - np_log_prob(m0, s0, actions))
    surrogate = float(np.mean(ratio * adv))
    assert surrogate > 0.0  # the old policy's surrogate is mean(adv) = 0
    np.testing.assert_allclose(float(metrics["losses/surrogate_after"]), surrogate, rtol=1e-3)
    # The advantages reward a larger action[0], so the step raises its mean.
    assert m1[:, 0].mean() > m0[:, 0].mean()


def test_line_search_takes_the_first_passing_fraction(policy, batch, step):
    """max_kl small enough that the full step overshoots: the step taken is the largest
    fraction 0.5**k whose KL, recomputed with numpy for every k, is within 1.5 max_kl."""
    net, params = policy
    config = TrpoConfig(max_kl=0.01, kl_accept_factor=0.3)  # accept only KL <= 0.003
    new_params, metrics = step(params, batch, config)
    assert float(metrics["trpo/accepted"]) == 1.0
    k = int(metrics["trpo/backtracks"])
    assert k >= 1  # the quadratic model puts the full step at KL ≈ 0.01 > 0.003

    # The full step, from the step actually taken: new = old + 0.5**k full_step.
    flat0, unravel = ravel_pytree(params)
    full_step = (ravel_pytree(new_params)[0] - flat0) / 0.5**k
    m0, s0 = as_np(net.apply(params, batch.obs))
    adv = np.asarray(batch.advantages, np.float64)
    adv = (adv - adv.mean()) / adv.std()
    passing = []
    for j in range(config.backtrack_iters):
        m1, s1 = as_np(net.apply(unravel(flat0 + 0.5**j * full_step), batch.obs))
        ratio = np.exp(np_log_prob(m1, s1, np.asarray(batch.actions)) - np_log_prob(m0, s0, np.asarray(batch.actions)))
        passing.append(np_mean_kl(m0, s0, m1, s1) <= 0.003 and np.mean(ratio * adv) > 0)
    assert passing.index(True) == k
    np.testing.assert_allclose(float(metrics["losses/kl"]), np_mean_kl(m0, s0, *as_np(net.apply(new_params, batch.obs))),
                               rtol=1e-3)


def test_trpo_metric_keys(policy, batch, step):
    _, params = policy
    _, metrics = step(params, batch, TrpoConfig())
    expected = {
        "losses/surrogate_before", "losses/surrogate_after", "losses/kl", "losses/entropy",
        "trpo/expected_improvement", "trpo/actual_improvement", "trpo/cg_residual",
        "trpo/cg_iterations", "trpo/sFs", "trpo/backtracks", "trpo/accepted", "trpo/grad_norm",
        "trpo/nonfinite",
    }
    assert set(metrics) == expected
    assert all(v.shape == () for v in metrics.values())


# --- 5. non-finite batches ------------------------------------------------------------------

def assert_unchanged(new_params, params):
    for new, old in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


@pytest.mark.parametrize("field", ["advantages", "obs"])
def test_nonfinite_batch_leaves_params_unchanged(policy, batch, step, field):
    _, params = policy
    if field == "advantages":
        bad = batch.replace(advantages=batch.advantages.at[3].set(jnp.nan))
    else:
        bad = batch.replace(obs=batch.obs.at[7, 1].set(jnp.inf))
    new_params, metrics = step(params, bad, TrpoConfig())
    assert_unchanged(new_params, params)
    assert float(metrics["trpo/accepted"]) == 0.0
    assert float(metrics["trpo/nonfinite"]) == 1.0


def test_nonfinite_in_masked_row_is_ignored(policy, batch, step):
    _, params = policy
    bad = batch.replace(
        advantages=batch.advantages.at[3].set(jnp.nan), mask=batch.mask.at[3].set(0.0)
    )
    _, metrics = step(params, bad, TrpoConfig())
    assert float(metrics["trpo/nonfinite"]) == 0.0
    assert float(metrics["trpo/accepted"]) == 1.0


def test_masked_step_is_the_step_on_the_unmasked_rows(policy, batch, step):
    """The exploration rate's mask (train.update): rows with mask 0 do not count. A step on
    every 4th row, masked in the full batch, equals the step on those rows alone (a second
    batch), and scrambling the masked rows' actions and advantages changes nothing."""
    _, params = policy
    keep = jnp.arange(N) % 4 == 0
    masked = batch.replace(mask=keep.astype(jnp.float32))
    scrambled = masked.replace(actions=jnp.where(keep[:, None], batch.actions, 3.0),
                               advantages=jnp.where(keep, batch.advantages, -50.0))
    subset = TrpoBatch(obs=batch.obs[keep], actions=batch.actions[keep], advantages=batch.advantages[keep],
                       mask=jnp.ones((N // 4,)))
    config = TrpoConfig()  # fvp_subsample 1: the Fisher over the same rows in both batches
    p_masked, m_masked = step(params, masked, config)
    p_scrambled, _ = step(params, scrambled, config)
    p_subset, m_subset = step(params, subset, config)
    assert float(m_masked["trpo/accepted"]) == 1.0
    for a, b in zip(jax.tree.leaves(p_masked), jax.tree.leaves(p_scrambled)):
        np.testing.assert_array_equal(a, b)
    # The gradient agrees to float rounding; the step to 1% (ten CG iterations amplify the
    # rounding of sums taken in another order).
    assert float(m_masked["trpo/grad_norm"]) == pytest.approx(float(m_subset["trpo/grad_norm"]), rel=1e-4)
    flat = lambda p: ravel_pytree(p)[0] - ravel_pytree(params)[0]  # noqa: E731
    step_masked, step_subset = flat(p_masked), flat(p_subset)
    assert float(jnp.linalg.norm(step_masked - step_subset) / jnp.linalg.norm(step_subset)) < 0.01
    assert float(m_masked["losses/kl"]) == pytest.approx(float(m_subset["losses/kl"]), rel=0.02)


def test_constant_advantages_reject_step(policy, batch, step):
    # Equal advantages normalise to 0: no gradient, no improvement, nothing non-finite.
    _, params = policy
    new_params, metrics = step(params, batch.replace(advantages=jnp.full((N,), 2.5)), TrpoConfig())
    assert_unchanged(new_params, params)
    assert float(metrics["trpo/accepted"]) == 0.0
    assert float(metrics["trpo/nonfinite"]) == 0.0


# --- 7. vmap over configs -------------------------------------------------------------------

def test_trpo_step_vmaps_over_configs(policy, batch, step):
    net, params = policy
    members = [TrpoConfig(max_kl=0.01, kl_accept_factor=1.0), TrpoConfig(max_kl=0.001, kl_accept_factor=1.0)]
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *members)
    vmapped = jax.jit(jax.vmap(functools.partial(trpo_step, net.apply), in_axes=(None, None, 0)))
    new_params, metrics = vmapped(params, batch, stacked)

    m0, s0 = as_np(net.apply(params, batch.obs))
    kls = []
    for i, config in enumerate(members):
        member_params = jax.tree.map(lambda x: x[i], new_params)
        m1, s1 = as_np(net.apply(member_params, batch.obs))
        kl = np_mean_kl(m0, s0, m1, s1)
        assert float(metrics["trpo/accepted"][i]) == 1.0
        assert 0.0 < kl <= config.max_kl * (1 + 1e-4)
        kls.append(kl)
        # Each member matches the same config run on its own, up to float32 reordering
        # (amplified by a CG that has not fully converged in 10 iterations).
        solo_params, _ = step(params, batch, config)
        flat_old, flat_member, flat_solo = (ravel_pytree(p)[0] for p in (params, member_params, solo_params))
        solo_step = np.linalg.norm(flat_solo - flat_old)
        assert np.linalg.norm(flat_member - flat_solo) < 1e-3 * solo_step
    assert kls[1] < kls[0]


# --- 4. GAE ---------------------------------------------------------------------------------

def test_gae_hand_example():
    # γ = λ = 0.5 (γλ = 0.25). Env 0 has a termination at t=1 and a truncation at t=2:
    #   t  r  V(s_t)  V(s'_t)  term trunc   δ_t = r + γ(1-term)V(s'_t) - V(s_t)
    #   0  1   1       2        0    0       1 + 0.5·2 - 1 =  1
    #   1  1   2       5        1    0       1 + 0     - 2 = -1   (no bootstrap)
    #   2  1   3       4        0    1       1 + 0.5·4 - 3 =  0   (bootstraps final obs)
    #   3  1   2       6        0    0       1 + 0.5·6 - 2 =  2   (rollout end)
    #   A3 = 2;  A2 = 0 + 0.25·(1-1)·2 = 0;  A1 = -1 + 0.25·(1-1)·0 = -1;  A0 = 1 + 0.25·(-1) = 0.75
    #   returns = A + V = [1.75, 1, 3, 4]
    # Env 1 has no episode end: r = [0, 0, 0, 1], V = V' = 0 → δ = [0, 0, 0, 1],
    #   A = [0.25³, 0.25², 0.25, 1] = [0.015625, 0.0625, 0.25, 1]; returns = A.
    rewards = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    values = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    bootstrap = jnp.array([[2.0, 0.0], [5.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    term = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]], jnp.float32)
    trunc = jnp.array([[0, 0], [0, 0], [1, 0], [0, 0]], jnp.float32)
    adv, ret = compute_gae(rewards, values, bootstrap, term, trunc, 0.5, 0.5)
    np.testing.assert_allclose(adv[:, 0], [0.75, -1.0, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [1.75, 1.0, 3.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(adv[:, 1], [0.015625, 0.0625, 0.25, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 1], adv[:, 1], rtol=1e-6)


def gae_python_loop(rewards, values, bootstrap, term, trunc, gamma, lam):
    t_len, n_env = rewards.shape
    adv = np.zeros((t_len, n_env))
    for b in range(n_env):
        next_adv = 0.0
        for t in reversed(range(t_len)):
            not_term = 1.0 - term[t, b]
            not_done = 0.0 if (term[t, b] or trunc[t, b]) else 1.0
            delta = rewards[t, b] + gamma * not_term * bootstrap[t, b] - values[t, b]
            next_adv = delta + gamma * lam * not_done * next_adv
            adv[t, b] = next_adv
    return adv, adv + values


def test_gae_matches_python_loop_on_random_data():
    rng = np.random.default_rng(5)
    shape = (16, 3)
    rewards, values, bootstrap = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    term = (rng.random(shape) < 0.15).astype(np.float32)
    trunc = (rng.random(shape) < 0.15).astype(np.float32)
    expected_adv, expected_ret = gae_python_loop(rewards, values, bootstrap, term, trunc, 0.95, 0.9)
    gae = jax.jit(compute_gae)
    arrays = (jnp.asarray(x, jnp.float32) for x in (rewards, values, bootstrap, term, trunc))
    adv, ret = gae(*arrays, 0.95, 0.9)
    np.testing.assert_allclose(adv, expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, expected_ret, rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_gives_discounted_returns():
    # With λ = 1 and no episode end, returns[t] = Σ_k γ^k r_{t+k} + γ^(T-t) V(s'_{T-1}).
    rng = np.random.default_rng(6)
    t_len, gamma = 8, 0.9
    rewards, values = rng.normal(size=(t_len, 1)), rng.normal(size=(t_len, 1))
    bootstrap = np.zeros((t_len, 1))
    bootstrap[-1] = 3.0
    zeros = np.zeros((t_len, 1), np.float32)
    expected = [
        sum(gamma**k * rewards[t + k, 0] for k in range(t_len - t)) + gamma ** (t_len - t) * 3.0
        for t in range(t_len)
    ]
    # V(s'_t) for t < T-1 is V(s_{t+1}); with λ = 1 those terms cancel in the sum of δs.
    bootstrap[:-1] = values[1:]
    _, ret = compute_gae(*(jnp.asarray(x, jnp.float32) for x in (rewards, values, bootstrap, zeros, zeros)),
                         gamma, 1.0)
    np.testing.assert_allclose(ret[:, 0], expected, rtol=1e-5, atol=1e-5)


# --- 6. value fit ---------------------------------------------------------------------------

def regression_data():
    obs = jax.random.normal(jax.random.PRNGKey(7), (256, 2))
    returns = 2.0 * obs[:, 0] - obs[:, 1] + 0.5
    return obs, returns


def test_fit_value_reduces_loss():
    net = ValueNetwork(hidden=(32,))
    obs, returns = regression_data()
    params = net.init(jax.random.PRNGKey(8), obs)
    optimizer = optax.adam(1e-2)
    fit = jax.jit(functools.partial(fit_value, net.apply, optimizer=optimizer, epochs=30, minibatches=4))
    new_params, _, metrics = fit(
        params, optimizer.init(params), obs=obs, returns=returns, rng=jax.random.PRNGKey(9)
    )

    def np_mse(p):
        return float(np.mean((np.asarray(net.apply(p, obs)) - np.asarray(returns)) ** 2))

    before, after = np_mse(params), np_mse(new_params)
    assert after < 0.1 * before
    np.testing.assert_allclose(float(metrics["losses/value_loss"]), after, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["losses/value_loss_before"]), before, rtol=1e-4)
    assert float(metrics["losses/value_skipped_minibatches"]) == 0.0


def test_fit_value_learning_rate_is_a_vmappable_leaf():
    net = ValueNetwork(hidden=(8,))
    obs, returns = regression_data()
    params = net.init(jax.random.PRNGKey(8), obs)
    optimizer = value_optimizer()
    opt_state = optimizer.init(params)
    # A NaN return in a masked-out row must not reach the parameters.
    returns = returns.at[0].set(jnp.nan)
    mask = jnp.ones((256,)).at[0].set(0.0)

    def fit(lr):
        return fit_value(net.apply, params, opt_state, optimizer, obs, returns, jax.random.PRNGKey(9),
                         epochs=2, minibatches=4, mask=mask, learning_rate=lr)

    new_params, _, metrics = jax.jit(jax.vmap(fit))(jnp.array([0.0, 1e-2]))
    for new, old in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(new[0], old)  # lr = 0: Adam's update is exactly 0
        assert np.all(np.isfinite(new[1]))
    pairs = zip(jax.tree.leaves(new_params), jax.tree.leaves(params))
    assert not all(np.array_equal(new[1], old) for new, old in pairs)
    assert float(metrics["losses/value_loss"][1]) < float(metrics["losses/value_loss"][0])


def test_fit_value_takes_the_values_gae_computed():
    """values_before is the pre-fit forward pass GAE already made: passing it changes nothing
    but that pass (the same fit, bit for bit), and the before-metrics are computed from it."""
    net = ValueNetwork(hidden=(8,))
    obs, returns = regression_data()
    params = net.init(jax.random.PRNGKey(8), obs)
    optimizer = value_optimizer()

    def fit(values_before):
        return fit_value(net.apply, params, optimizer.init(params), optimizer, obs, returns, jax.random.PRNGKey(9),
                         epochs=2, minibatches=4, values_before=values_before)

    plain, given = fit(None), fit(net.apply(params, obs))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(given)):
        np.testing.assert_array_equal(a, b)
    # Zero "values": the loss before is the mean squared return, and nothing is explained.
    _, _, metrics = fit(jnp.zeros_like(returns))
    np.testing.assert_allclose(float(metrics["losses/value_loss_before"]), float(np.mean(np.asarray(returns) ** 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(float(metrics["losses/explained_variance"]), 0.0, atol=1e-6)


def test_explained_variance():
    returns = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(explained_variance(returns, returns), 1.0)
    np.testing.assert_allclose(explained_variance(jnp.full((4,), 2.5), returns), 0.0, atol=1e-6)
    # values [1, 2, 3, 5]: residual [0, 0, 0, -1], mean -0.25, Var = (3·0.0625 + 0.5625)/4 = 0.1875;
    # Var[returns] = 1.25;  EV = 1 - 0.1875/1.25 = 0.85.
    np.testing.assert_allclose(explained_variance(jnp.array([1.0, 2.0, 3.0, 5.0]), returns), 0.85, rtol=1e-6)
    # Masking out the last sample leaves a perfect prediction on [1, 2, 3].
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(explained_variance(jnp.array([1.0, 2.0, 3.0, 5.0]), returns, mask), 1.0)
    # Constant returns: no variance to explain, reported as 0 rather than NaN.
    assert float(explained_variance(jnp.zeros(4), jnp.ones(4))) == 0.0


def test_static_settings_are_validated(policy, batch):
    net, params = policy
    with pytest.raises(MimicError, match="fvp_subsample"):
        trpo_step(net.apply, params, batch, TrpoConfig(fvp_subsample=0))
    value_net = ValueNetwork(hidden=(4,))
    obs, returns = regression_data()
    value_params = value_net.init(jax.random.PRNGKey(0), obs)
    optimizer = optax.adam(1e-3)
    with pytest.raises(MimicError, match="minibatches"):
        fit_value(value_net.apply, value_params, optimizer.init(value_params), optimizer, obs, returns,
                  jax.random.PRNGKey(1), epochs=1, minibatches=1000)


# --- 6. stabilisers (docs/learning.md, late decay) -----------------------------------------

def _held_log_std(params, learn_std):
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, learn_std if any(getattr(k, "key", None) == "log_std" for k in path) else 1.0),
        params)


def test_held_log_std_stays_bit_for_bit_and_equals_the_step_without_it(policy, batch, step):
    """trainable = 0 on log_std: the step keeps log_std exactly, and moves the other
    parameters as TRPO does on a policy whose std is a constant (a second parameterisation
    with log_std closed over, not a parameter)."""
    net, params = policy
    config = TrpoConfig()
    held, metrics = step(params, batch, config, _held_log_std(params, 0.0))
    assert float(metrics["trpo/accepted"]) == 1.0
    np.testing.assert_array_equal(held["params"]["log_std"], params["params"]["log_std"])

    fixed = params["params"]["log_std"]
    reduced = {k: v for k, v in params["params"].items() if k != "log_std"}

    def apply_reduced(p, obs):
        return net.apply({"params": {**p, "log_std": fixed}}, obs)

    peer, peer_metrics = jax.jit(functools.partial(trpo_step, apply_reduced))(reduced, batch, config)
    # The two CG solves agree in exact arithmetic; in float32 they differ by rounding, which
    # ten CG iterations amplify: compare the steps as vectors.
    before = ravel_pytree(reduced)[0]
    step_held = ravel_pytree({k: v for k, v in held["params"].items() if k != "log_std"})[0] - before
    step_peer = ravel_pytree(peer)[0] - before
    assert float(jnp.linalg.norm(step_held - step_peer)) < 1e-2 * float(jnp.linalg.norm(step_peer))
    np.testing.assert_allclose(float(metrics["losses/kl"]), float(peer_metrics["losses/kl"]), rtol=1e-4)
    # A learned std moves: the same step with trainable all ones changes log_std.
    learned, _ = step(params, batch, config, _held_log_std(params, 1.0))
    assert not np.array_equal(learned["params"]["log_std"], params["params"]["log_std"])


def test_all_ones_trainable_is_the_plain_step(policy, batch, step):
    net, params = policy
    plain, _ = step(params, batch, TrpoConfig())
    ones, _ = step(params, batch, TrpoConfig(), _held_log_std(params, 1.0))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ones)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("steps, expected", [
    (0, 0.02), (250_000, 0.0185), (500_000, 0.017), (1_000_000, 0.014), (3_000_000, 0.014)])
def test_max_kl_schedule_hand_values(steps, expected):
    # 0.02 -> 0.02 * 0.7 = 0.014 over 1M steps: 0.02 - 0.006 * min(1, steps / 1M).
    config = TrpoConfig(max_kl=0.02, max_kl_final_fraction=0.7, max_kl_decay_steps=1e6)
    assert float(scheduled_max_kl(config, steps)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("steps, expected", [
    (0, 0.02), (9_999_999, 0.02), (10_000_000, 0.02), (12_000_000, 0.0184), (20_000_000, 0.012),
    (40_000_000, 0.004)])
def test_max_kl_schedule_with_a_start_hand_values(steps, expected):
    # Constant until 10M, then 0.02 -> 0.004 over 10M-30M: 0.02 - 0.016 * (steps - 10M) / 20M.
    config = TrpoConfig(max_kl=0.02, max_kl_final_fraction=0.2, max_kl_decay_steps=2e7, max_kl_decay_start=1e7)
    assert float(scheduled_max_kl(config, steps)) == pytest.approx(expected, rel=1e-6)


def test_max_kl_schedule_defaults_and_zero_horizon():
    assert float(scheduled_max_kl(TrpoConfig(max_kl=0.02), 10**7)) == pytest.approx(0.02)
    # No horizon: the final value at once.
    at_once = TrpoConfig(max_kl=0.02, max_kl_final_fraction=0.5, max_kl_decay_steps=0.0)
    assert float(scheduled_max_kl(at_once, 0)) == pytest.approx(0.01)
    # ... at the start, and not before it.
    later = at_once.replace(max_kl_decay_start=5e6)
    assert float(scheduled_max_kl(later, 4_999_999)) == pytest.approx(0.02)
    assert float(scheduled_max_kl(later, 5_000_000)) == pytest.approx(0.01)


@pytest.mark.parametrize("steps, expected", [
    (0, 1.0), (2_500_000, 0.8), (5_000_000, 0.6), (10_000_000, 0.2), (40_000_000, 0.2)])
def test_explore_rate_hand_values(steps, expected):
    # DeepMimic's anneal, 1 -> 0.2, over 10M steps: 1 - 0.8 * min(1, steps / 10M).
    config = TrpoConfig(explore_rate_final=0.2, explore_anneal_steps=1e7)
    assert float(explore_rate(config, steps)) == pytest.approx(expected, rel=1e-6)


def test_explore_rate_default_and_zero_horizon():
    assert float(explore_rate(TrpoConfig(), 0)) == 1.0 and float(explore_rate(TrpoConfig(), 10**8)) == 1.0
    assert float(explore_rate(TrpoConfig(explore_rate_final=0.3), 0)) == pytest.approx(0.3)  # at once


@pytest.mark.parametrize("lo_r, hi_r, gamma, expected", [
    (0.0, 1.0, 0.95, (0.0, 20.0)),  # DeepMimic's reward in [0, 1], γ = 0.95: returns in [0, 20]
    (-0.5, 2.0, 0.5, (-1.0, 4.0)),
    (0.2, 1.0, 0.0, (0.0, 1.0)),  # one step: a return of a single reward; 0 after a fall
    (0.0, 1.0, 1.0, (0.0, np.inf)),
])
def test_value_target_bounds_hand_values(lo_r, hi_r, gamma, expected):
    lo, hi = value_target_bounds(jnp.float32(lo_r), jnp.float32(hi_r), jnp.float32(gamma))
    assert (float(lo), float(hi)) == pytest.approx(expected, rel=1e-6)
