"""The trainer: configs, health alarms, probe problems with known answers, and short runs of
the real humanoid (files, metrics, resume identity, checkpoint mismatch, improvement).

Expected values come from hand arithmetic (in comments) or invariants, not from the trainer.
The humanoid tests use the TINY shapes (leaf values such as max_kl or the seed do not
change the program). On native physics (the CPU default) every run still compiles its
program again: JAX does not persist programs that hold a host callback (docs/guide.md, Tests).
"""

import json
import math
import pathlib
import shutil

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimic_mjx import config as cfglib
from mimic_mjx import env as env_lib
from mimic_mjx import reward as reward_lib
from mimic_mjx import critic, runconfig, runner, train
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(120)

REPO = pathlib.Path(__file__).resolve().parent.parent

# Keep identical to test_evaluate.TINY: same shapes, same compiled program.
TINY = [
    "num_envs=16", "horizon=16", "network.policy_hidden=[32,32]", "network.value_hidden=[32,32]",
    "network.init_log_std=-1.6", "trpo.value_minibatches=4", "trpo.fvp_subsample=1", "checkpoint_every=2",
]


def tiny_config(*more) -> runconfig.TrainConfig:
    return cfglib.load_config(runconfig.TrainConfig, None, TINY + list(more))


# ------------------------------------------------------------------------- configs


def test_reward_preset_and_overrides_from_yaml_and_set(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("reward: {preset: deepmimic_code, pose_scale: 3}\n")
    config = runconfig.load_train_config(path, [])
    resolved = config.reward
    assert float(resolved.pose_scale) == 3.0
    # Untouched fields keep deepmimic_code's values: root weight 0.2 (SceneImitate.cpp line 9-19).
    assert float(resolved.root_weight) == pytest.approx(0.2)
    config = runconfig.load_train_config(path, ["reward.pose_scale=5", "reward.preset=deepmimic_paper"])
    resolved = config.reward
    # Paper preset: end-effector scale 40 (eq. 9); override wins for pose.
    assert (float(resolved.pose_scale), float(resolved.end_effector_scale)) == (5.0, 40.0)


@pytest.mark.parametrize("overrides, words", [
    (["nonexistent.key=1"], "unknown key 'nonexistent'"),
    (["reward.pose_scal=1"], "unknown key 'reward.pose_scal'"),
    (["reward.preset=nope"], "unknown reward preset 'nope'"),
    (["reward.pose_scale=-1"], "reward.pose_scale must be >= 0"),
    (["trpo.learn_std=0.5"], "trpo.learn_std"),
    (["trpo.normalizer_samples=-1"], "trpo.normalizer_samples must be >= 0"),
    (["trpo.max_kl_final_fraction=0"], "trpo.max_kl_final_fraction must be in (0, 1], got 0.0"),
    (["trpo.max_kl_final_fraction=1.5"], "trpo.max_kl_final_fraction must be in (0, 1], got 1.5"),
    (["trpo.clip_value_targets=2"], "trpo.clip_value_targets"),
    (["trpo.explore_rate_final=0"], "trpo.explore_rate_final must be in (0, 1], got 0.0"),
    (["trpo.explore_rate_final=1.2"], "trpo.explore_rate_final must be in (0, 1], got 1.2"),
    (["trpo.explore_anneal_steps=-1"], "trpo.explore_anneal_steps must be >= 0"),
    (["env.max_body_error=-0.1"], "env.max_body_error must be >= 0"),
    (["env.start_pose_noise=-0.1"], "env.start_pose_noise must be >= 0"),
    (["decay_alarm_evals=0"], "decay_alarm_evals must be >= 1"),
    (["kl_plateau_evals=-1"], "kl_plateau_evals must be >= 0"),
    (["kl_plateau_factor=0"], "kl_plateau_factor must be in (0, 1], got 0.0"),
    (["kl_plateau_floor=1.5"], "kl_plateau_floor must be in (0, 1], got 1.5"),
    (["kl_plateau_min_score=-0.1"], "kl_plateau_min_score must be >= 0"),
])
def test_bad_override_is_one_line(overrides, words):
    with pytest.raises(MimicError) as err:
        runconfig.load_train_config(None, overrides)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_malformed_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trpo: {max_kl: 0.01\nhorizon: 3\n")
    with pytest.raises(MimicError) as err:
        runconfig.load_train_config(path, [])
    assert str(path) in str(err.value) and "malformed YAML" in str(err.value) and "\n" not in str(err.value)


def test_presets_load_and_inherit():
    names = ["walk", "run", "jump", "backflip", "spinkick", "cpu_tiny"]
    walk = runconfig.load_train_config("walk", [])
    for name in names:
        config = runconfig.load_train_config(name, [])
        # The package's presets are the repository's files (mimic_mjx/configs links to them).
        assert runconfig.find_config(name).resolve() == (REPO / "configs" / f"{name}.yaml").resolve()
        if name in ("run", "jump", "backflip", "spinkick"):
            # Everything but the clip comes from walk.yaml through `base:`.
            assert config.env.motion == name
            assert config.replace(env=walk.env) == walk
    with pytest.raises(MimicError, match="not found"):
        runconfig.find_config("no_such_preset")


def test_num_envs_resolves_per_backend():
    config = runconfig.load_train_config("walk", [])
    assert config.num_envs is None
    assert runconfig.resolve_defaults(config, "gpu").num_envs == runconfig.GPU_NUM_ENVS
    assert runconfig.resolve_defaults(config, "cpu").num_envs == runconfig.CPU_NUM_ENVS
    assert runconfig.resolve_defaults(config.replace(num_envs=7), "gpu").num_envs == 7
    with pytest.raises(MimicError, match="horizon must be >= 1"):
        runconfig.resolve_defaults(config.replace(horizon=0), "cpu")


# --------------------------------------------------------------------- health alarms

HEALTHY = {"training/reward_fraction_of_max": 0.3, "training/advantage_std": 0.5, "losses/kl": 0.008,
           "trpo/accepted": 1.0, "training/nonfinite_episodes": 0.0}


def test_healthy_metrics_raise_nothing():
    health, messages = runner.check_health(HEALTHY, runner.Health())
    assert messages == [] and health == runner.Health()


def test_vanishing_reward_alarm_once():
    metrics = {**HEALTHY, "training/reward_fraction_of_max": 2e-4}  # below 1e-3
    health, messages = runner.check_health(metrics, runner.Health(), motion="jump")
    assert len(messages) == 1
    assert "reward vanishingly small" in messages[0] and "mimic-mjx diagnose --motion jump" in messages[0]
    health, messages = runner.check_health(metrics, health, motion="jump")
    assert messages == []  # printed once per run


def test_flat_advantages_alarm():
    _, messages = runner.check_health({**HEALTHY, "training/advantage_std": 0.0}, runner.Health())
    assert len(messages) == 1 and "advantage std" in messages[0]


def test_rejected_line_search_alarm_after_three_in_a_row():
    rejected = {**HEALTHY, "trpo/accepted": 0.0, "losses/kl": 0.0}
    health = runner.Health()
    for _ in range(2):
        health, messages = runner.check_health(rejected, health)
        assert messages == []
    health, _ = runner.check_health(HEALTHY, health)  # an accepted step resets the streak
    assert health.rejected_streak == 0
    for expected in ([], [], ["stalled_policy"]):
        health, messages = runner.check_health(rejected, health)
        assert [m.split(":")[0].split()[1] for m in messages] == expected
    assert "3 iterations in a row" in messages[0]


def test_nonfinite_metric_alarm():
    _, messages = runner.check_health({**HEALTHY, "losses/value_loss": math.nan}, runner.Health())
    assert len(messages) == 1 and "losses/value_loss" in messages[0]


# ------------------------------------------------------------------- probe problems


class ProbeEnv:
    """A two-dimensional problem with a known answer, shaped like ImitationEnv (what the
    trainer calls: reset, and advance for batch.step_batch).

    mode "bandit": obs is a target t uniform in [-1, 1]², the reward is
      scale·(1 − mean((clip(a) − t)²)), every episode lasts one step (terminated); the
      optimal mean action is t.
    mode "value": reward 1 every step and every step ends the episode; obs (1, 0) marks an
      env whose episodes end by the time limit (truncated), obs (0, 1) one whose end by a
      fall (terminated); each reset draws the kind at random. With discount γ the true
      values are V(1, 0) = 1 / (1 − γ) (bootstrap from the final obs) and V(0, 1) = 1.
    """

    observation_size = 2
    action_size = 2

    def __init__(self, mode):
        self.mode = mode

    def _obs(self, key):
        if self.mode == "bandit":
            return jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)
        truncating = jax.random.bernoulli(key).astype(jnp.float32)
        return jnp.stack([truncating, 1.0 - truncating])

    def reset(self, rng, reward_config=None):
        rng, key = jax.random.split(rng)
        zero = jnp.zeros(())
        obs = self._obs(key)
        return env_lib.State(
            data=zero, obs=obs, final_obs=obs, reward=zero, reward_terms={"probe": zero},
            termination={"failure": jnp.zeros((), bool), "time_limit": jnp.zeros((), bool)}, errors=None, terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool), time=zero,
            step_count=jnp.zeros((), jnp.int32), nonfinite_count=jnp.zeros((), jnp.int32), rng=rng,
            reward_config=reward_config,
        )

    def advance(self, state, action):
        """The step without its reset: every probe episode ends here (batch.step_batch restarts it)."""
        config = state.reward_config
        scale = config.output_scale * config.pose_weight
        if self.mode == "bandit":
            base, truncated = 1.0 - jnp.mean((jnp.clip(action, -1.0, 1.0) - state.obs) ** 2), jnp.asarray(False)
        else:
            base, truncated = jnp.ones(()), state.obs[0] > 0.5
        # The episode continues in the same kind of state after a time limit: final_obs = obs.
        return state.replace(final_obs=state.obs, reward=scale * base, reward_terms={"probe": scale * base},
                             terminated=~truncated, truncated=truncated,
                             termination={"failure": ~truncated, "time_limit": truncated})


PROBE_REWARD = reward_lib.RewardConfig(pose_weight=1.0)  # max_reward = 1


def probe_config(**trpo_leaves):
    config = cfglib.from_dict(runconfig.TrainConfig, {
        "num_envs": 64, "horizon": 4, "network": {"policy_hidden": [16], "value_hidden": [16]},
        "trpo": {"value_minibatches": 4, **trpo_leaves},
    }, "probe")
    return config


def run_probe(mode, iterations, reward=PROBE_REWARD, **trpo_leaves):
    env, config = ProbeEnv(mode), probe_config(**trpo_leaves)
    state = train.init(env, config, jax.random.PRNGKey(0), reward)
    step = jax.jit(train.make_iteration(env, config))
    history = []
    for _ in range(iterations):
        state, metrics = step(state)
        history.append({k: float(v) for k, v in metrics.items()})
    return env, config, state, history


def test_probe_bandit_policy_learns_the_target():
    env, config, state, history = run_probe("bandit", 40)
    rewards = [m["training/reward_mean"] for m in history]
    # First rollout (before any update): mean action ≈ 0, so E(a − t)² = Var t + σ² =
    # 1/3 + e^-2 ≈ 0.47 → reward ≈ 0.53 (256 samples: standard error ≈ 0.02).
    assert rewards[0] == pytest.approx(0.53, abs=0.05)
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.15
    assert all(m["trpo/accepted"] == 1.0 for m in history[:5])
    policy, _ = train.make_networks(env, config)
    targets = jnp.array([[0.5, -0.5], [-0.8, 0.2], [0.0, 0.9]])
    from mimic_mjx.networks import normalize
    mean, _ = policy.apply(state.policy_params, normalize(state.normalizer, targets))
    np.testing.assert_allclose(mean, targets, atol=0.25)
    # One-step episodes: every step ends one, of length 1; all are terminations.
    assert history[-1]["training/episode_length"] == 1.0
    assert history[-1]["training/episodes_ended"] == 64 * 4
    assert history[-1]["training/fall_fraction"] == 1.0


def test_probe_value_bootstraps_truncations_only():
    env, config, state, history = run_probe("value", 60, gamma=0.5, value_lr=0.01)
    _, value = train.make_networks(env, config)
    from mimic_mjx.networks import normalize
    v_truncated, v_terminated = value.apply(state.value_params, normalize(state.normalizer, jnp.eye(2)))
    assert float(v_truncated) == pytest.approx(2.0, abs=0.05)  # V = 1 + γV with γ = 0.5 → 1/(1 − 0.5)
    assert float(v_terminated) == pytest.approx(1.0, abs=0.05)  # V = r = 1, nothing after a fall
    # Every step ends an episode; the return of a one-step episode is its reward, 1.
    assert history[-1]["training/return_mean"] == 1.0
    assert 0.3 < history[-1]["training/fall_fraction"] < 0.7  # half the envs fall, half time out


def test_clipped_value_targets_bound_the_fitted_value():
    """The probe pays 1 a step but declares a maximum of 0.5 (alive_bonus -0.5, which the probe
    does not pay): with γ = 0.5 every target is clipped to 0.5 / (1 - 0.5) = 1, so the value of a
    truncating state, 2 unclipped (the test above), is fitted to 1."""
    reward = PROBE_REWARD.replace(alive_bonus=-0.5)
    env, config, state, history = run_probe("value", 60, reward=reward, gamma=0.5, value_lr=0.01,
                                             clip_value_targets=1.0)
    _, value = train.make_networks(env, config)
    from mimic_mjx.networks import normalize
    v_truncated, v_terminated = value.apply(state.value_params, normalize(state.normalizer, jnp.eye(2)))
    assert float(v_truncated) == pytest.approx(1.0, abs=0.05)
    assert float(v_terminated) == pytest.approx(1.0, abs=0.05)
    assert history[-1]["training/value_targets_clipped"] > 0.3  # the truncating half's targets


def test_fixed_std_and_frozen_normalizer_across_iterations():
    """learn_std 0: log_std stays at network.init_log_std (-1) through every update.
    normalizer_samples 300: init merges the 64 reset obs, iteration 1 the 64 x 4 = 256 rollout
    obs (64 < 300), so the count is 320 and nothing merges after."""
    env, config, state, history = run_probe("bandit", 5, learn_std=0.0, normalizer_samples=300.0)
    np.testing.assert_array_equal(state.policy_params["params"]["log_std"], np.full(2, -1.0, np.float32))
    assert float(state.normalizer.count) == 320.0
    assert all(m["losses/entropy"] == history[0]["losses/entropy"] for m in history)
    assert all(m["trpo/accepted"] == 1.0 for m in history)  # the mean still learns
    # And with the defaults both move.
    _, _, learned, _ = run_probe("bandit", 5)
    assert not np.array_equal(learned.policy_params["params"]["log_std"], np.full(2, -1.0, np.float32))
    assert float(learned.normalizer.count) == 64 + 5 * 256


def test_explore_rate_noise_on_its_share_and_the_mean_elsewhere():
    """trpo.explore_rate_final 0.25 at once: about a quarter of the 64 x 4 rollout steps carry
    noise (binomial std 0.027), and every other step's action is the policy's mean, recomputed
    here from the recorded observations; at the default rate every step explores."""
    from mimic_mjx.networks import normalize
    env = ProbeEnv("bandit")
    for rate, lo, hi in [(0.25, 0.15, 0.35), (1.0, 1.0, 1.0)]:
        config = probe_config(explore_rate_final=rate)
        state = train.init(env, config, jax.random.PRNGKey(0), PROBE_REWARD)
        policy, _ = train.make_networks(env, config)
        _, traj = jax.jit(lambda s: train.rollout(env, policy, s, jax.random.PRNGKey(3), config.horizon))(state)
        explored = np.asarray(traj.explored)
        assert lo <= explored.mean() <= hi
        mean, log_std = policy.apply(state.policy_params, normalize(state.normalizer, traj.obs))
        gap = np.abs(np.asarray(traj.actions) - np.asarray(mean))
        np.testing.assert_allclose(gap[~explored], 0.0, atol=1e-6)
        # Noise of std e^-1 per dimension: no exploring step lands within 1e-6 of the mean.
        assert np.all(gap[explored].max(axis=-1) > 1e-4)


def test_stabilisers_are_leaves_a_sweep_vmaps():
    """Two members in one program, differing only in trpo.learn_std and normalizer_samples:
    each behaves as its own number says."""
    env, config = ProbeEnv("bandit"), probe_config()
    hypers = jax.tree.map(lambda *xs: jnp.stack(xs), config.trpo.replace(learn_std=0.0, normalizer_samples=100.0),
                          config.trpo.replace(learn_std=1.0, normalizer_samples=0.0))
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    configs = reward_lib.stack_configs([PROBE_REWARD, PROBE_REWARD])
    states = jax.vmap(lambda k, rc, h: train.init(env, config.replace(trpo=h), k, rc))(keys, configs, hypers)
    step = jax.jit(jax.vmap(train.make_iteration(env, config)))
    for _ in range(3):
        states, _ = step(states)
    log_std = np.asarray(states.policy_params["params"]["log_std"])
    np.testing.assert_array_equal(log_std[0], np.full(2, -1.0, np.float32))
    assert not np.array_equal(log_std[1], np.full(2, -1.0, np.float32))
    # 64 reset obs, then one 256-sample rollout (64 < 100) and frozen; the other merges all three.
    assert np.asarray(states.normalizer.count).tolist() == [320.0, 64.0 + 3 * 256]


def test_decay_alarm_hand_cases():
    best = [0.2, 0.5, 0.8, 0.81]
    assert runner.check_decay(best + [0.75, 0.74], 0.05, 3) is None  # only two evaluations past the margin
    message = runner.check_decay(best + [0.75, 0.74, 0.70], 0.05, 3)
    assert message is not None and "0.810 (evaluation 4)" in message and "trpo.learn_std=0" in message
    assert runner.check_decay(best + [0.75, 0.77, 0.70], 0.05, 3) is None  # 0.77 is within 0.05 of 0.81
    assert runner.check_decay([0.9, 0.1, 0.1], 0.05, 3) is None  # nothing before the last three


def test_adaptive_step_hand_cases():
    """plateau_fraction: x factor after `evals` evaluations in a row without a new best."""
    fraction = runner.plateau_fraction
    scores = [0.1, 0.2, 0.15, 0.18, 0.19]  # best 0.2, then three that do not beat it
    assert fraction(scores, 0, 0.5, 0.1) == 1.0  # off
    assert fraction(scores[:4], 3, 0.5, 0.1) == 1.0  # only two so far
    assert fraction(scores, 3, 0.5, 0.1) == 0.5
    more = scores + [0.21, 0.2, 0.2]  # a new best restarts the count: two since
    assert fraction(more, 3, 0.5, 0.1) == 0.5
    assert fraction(more + [0.2], 3, 0.5, 0.1) == 0.25
    # Equal is not better; the floor holds: 0.5, 0.25, then 0.2 (not 0.125), and 0.2 again.
    assert [fraction([1.0] + [1.0] * k, 1, 0.5, 0.2) for k in range(1, 5)] == [0.5, 0.25, 0.2, 0.2]
    # min_score: flat evaluations before the best reaches it do not count.
    early = [0.1, 0.1, 0.1, 0.1, 0.6, 0.5, 0.5]  # would cut at the 4th with no guard
    assert fraction(early, 3, 0.5, 0.1) == 0.5  # cut after the three 0.1s; 0.6, then two below it
    assert fraction(early, 3, 0.5, 0.1, min_score=0.5) == 1.0  # counting starts at 0.6: two so far
    assert fraction(early + [0.55], 3, 0.5, 0.1, min_score=0.5) == 0.5


def test_adaptive_step_reaches_the_update():
    """The max_kl leaf that with_kl_fraction sets is the radius the next update uses."""
    env, config = ProbeEnv("bandit"), probe_config(max_kl=0.02)
    state = runner.with_kl_fraction(train.init(env, config, jax.random.PRNGKey(0), PROBE_REWARD), config, 0.25)
    _, metrics = jax.jit(train.make_iteration(env, config))(state)
    assert float(metrics["trpo/max_kl"]) == pytest.approx(0.005, rel=1e-6)
    assert float(metrics["losses/kl"]) <= 1.5 * 0.005  # kl_accept_factor x the radius


def test_adaptive_step_needs_the_periodic_evaluation(tmp_path):
    with pytest.raises(MimicError) as err:
        runner.train(tiny_config("kl_plateau_evals=2", "eval_every=0"), tmp_path / "run")
    assert "set eval_every > 0" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("truncate", [True, False])
def test_gae_bootstraps_from_the_next_obs_as_from_the_final_obs(truncate):
    """compute_advantages takes V(final_obs[t]) from V(obs[t + 1]) where step t did not end its
    episode; the reference here evaluates V(final_obs) everywhere and runs compute_gae."""
    from mimic_mjx import networks as nets
    from mimic_mjx import trpo as trpo_lib

    t, b, d = 5, 3, 2
    k_obs, k_final, k_init = jax.random.split(jax.random.PRNGKey(4), 3)
    obs = jax.random.normal(k_obs, (t, b, d))
    terminated = jnp.zeros((t, b), bool).at[1, 0].set(True).at[3, 2].set(True)
    truncated = jnp.zeros((t, b), bool).at[2, 1].set(truncate)
    done = terminated | truncated
    # Where a step ended its episode its final obs is the pre-reset one, not obs[t + 1].
    following = jnp.concatenate([obs[1:], jax.random.normal(k_final, (1, b, d))])
    final_obs = jnp.where(done[..., None], jax.random.normal(k_init, (t, b, d)), following)
    zeros = jnp.zeros((t, b))
    traj = train.Trajectory(obs=obs, actions=zeros[..., None], explored=zeros > 0, rewards=jnp.arange(t * b, dtype=jnp.float32).reshape(t, b),
                            reward_terms={}, termination={}, final_obs=final_obs, terminated=terminated,
                            truncated=truncated, episode_length=zeros, episode_return=zeros)
    value = nets.ValueNetwork(hidden=(8,))
    params = value.init(jax.random.PRNGKey(5), obs[0])
    normalizer = nets.update_normalizer(nets.init_normalizer(d), obs)
    hyper = trpo_lib.TrpoConfig(gamma=0.9, gae_lambda=0.8)
    adv, returns, values = jax.jit(train.compute_advantages, static_argnums=0)(value, params, normalizer, traj, hyper)
    v = lambda x: value.apply(params, nets.normalize(normalizer, x))  # noqa: E731
    expected_adv, expected_returns = critic.compute_gae(traj.rewards, v(obs), v(final_obs), terminated, truncated,
                                                          0.9, 0.8)
    np.testing.assert_allclose(values, v(obs), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(adv, expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-5)


def test_iteration_vmaps_over_members_with_their_own_reward():
    """A sweep: one program, members differing only in the reward config they carry."""
    env, config = ProbeEnv("bandit"), probe_config()
    configs = reward_lib.stack_configs([PROBE_REWARD, PROBE_REWARD.replace(output_scale=2.0)])
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    states = jax.vmap(lambda k, rc: train.init(env, config, k, rc))(keys, configs)
    states, metrics = jax.jit(jax.vmap(train.make_iteration(env, config)))(states)
    # Same key and params, so the same actions: member 1's rewards are exactly twice member 0's,
    # and so is its maximum, so the fraction of max agrees.
    r0, r1 = np.asarray(metrics["training/reward_mean"])
    assert r1 == pytest.approx(2 * r0, rel=1e-6)
    f0, f1 = np.asarray(metrics["training/reward_fraction_of_max"])
    assert f0 == pytest.approx(f1, rel=1e-6)
    assert np.asarray(states.iteration).tolist() == [1, 1]
    single, single_metrics = jax.jit(train.make_iteration(env, config))(
        train.init(env, config, jax.random.PRNGKey(0), PROBE_REWARD))
    assert float(single_metrics["training/reward_mean"]) == pytest.approx(r0, rel=1e-5)


# --------------------------------------------------------------- the real humanoid


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 iterations of the humanoid (checkpoints at 2 and 4), with their progress lines."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    lines, calls = [], []
    result = runner.train(tiny_config("iterations=4"), out, progress=lines.append,
                          progress_fns=[lambda step, rows: calls.append((step, rows))])
    result.calls = calls  # a user's progress_fn: what it was called with
    return result, lines


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_writes_config_metrics_checkpoints_and_progress(run):
    result, lines = run
    out = result.run_dir
    assert lines[0].startswith("initialised 16 environments")
    assert lines[1] == "compiling the training iteration (first call) ..."
    assert lines[2].startswith("compiled in ")
    assert sum(line.startswith("iter ") for line in lines) == 4
    saved = cfglib.load_config(runconfig.TrainConfig, out / "config.yaml", [])
    assert saved == runconfig.resolve_defaults(tiny_config("iterations=4"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["training/iteration"] for r in records] == [1, 2, 3, 4]
    # A user's progress_fn(step, rows) saw each iteration's row as metrics.jsonl holds it.
    assert [(step, rows) for step, rows in result.calls] == [(r["training/iteration"], [r]) for r in records]
    assert [r["training/env_steps"] for r in records] == [256, 512, 768, 1024]  # 16 envs x 16 steps
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "4"]
    for key in ("training/reward_mean", "training/reward_min", "training/reward_max", "reward/pose",
                "training/episode_length", "training/return_mean", "training/return_std",
                "training/advantage_mean", "training/advantage_std", "training/reward_fraction_of_max",
                "training/nonfinite_episodes", "losses/value_loss", "losses/explained_variance",
                "losses/surrogate_before", "losses/surrogate_after", "losses/kl", "losses/entropy",
                "trpo/cg_residual", "trpo/accepted", "trpo/backtracks", "charts/SPS", "charts/wall_time_s"):
        assert all(math.isfinite(r[key]) for r in records), key
    r = records[-1]
    # deepmimic_paper's max reward is 0.65 + 0.1 + 0.15 + 0.1 = 1 per step.
    assert r["training/reward_fraction_of_max"] == pytest.approx(r["training/reward_mean"], rel=1e-5)
    assert r["training/reward_min"] <= r["training/reward_mean"] <= r["training/reward_max"] <= 1.0
    terms = sum(v for k, v in r.items() if k.startswith("reward/"))
    assert terms == pytest.approx(r["training/reward_mean"], rel=1e-4)  # the terms sum to the reward
    assert 1.0 <= r["training/episode_length"] <= 4 * 16  # no episode is older than the run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_continues_bit_for_bit(run, tmp_path):
    """Interrupt the straight run after its iteration-2 checkpoint, resume to 4: same floats."""
    straight, _ = run
    out = tmp_path / "interrupted"
    shutil.copytree(straight.run_dir, out)
    shutil.rmtree(out / "checkpoints" / "4")  # as if killed after iteration 4's metrics line
    lines = []
    resumed = runner.train(tiny_config("iterations=4"), out, resume=True, progress=lines.append)
    assert lines[0] == f"resumed {out} at iteration 2"
    deterministic = lambda m: {k: v for k, v in m.items() if not k.startswith("charts/")}  # noqa: E731
    got = [deterministic(m) for m in resumed.history]
    want = [deterministic(m) for m in straight.history[2:]]
    assert got == want  # same floats, not approximately
    # The lines the "crashed" run wrote after its checkpoint were replaced, not duplicated.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["training/iteration"] for r in records] == [1, 2, 3, 4]
    assert deterministic(records[3]) == want[1]


def test_resume_with_another_config_file_is_one_line(run, tmp_path):
    """--resume --config FILE: config leaves replace on resume, so a FILE other than the run's
    own would change the seed under the checkpoint; refused in one line naming the change. The
    run's own config.yaml passes."""
    from mimic_mjx import cli
    result, _ = run
    saved = runconfig.load_train_config(result.run_dir / "config.yaml", [])
    other = tmp_path / "other.yaml"
    cfglib.save_config(saved.replace(seed=saved.seed + 7), other)
    args = lambda path: cli.build_parser("train").parse_args(  # noqa: E731
        ["train", "--resume", "--out", str(result.run_dir), "--config", str(path)])
    with pytest.raises(MimicError) as err:
        runner.config_from_args(args(other))
    message = str(err.value)
    assert f"seed {saved.seed} -> {saved.seed + 7}" in message and "\n" not in message
    config, _ = runner.config_from_args(args(result.run_dir / "config.yaml"))
    assert config.seed == saved.seed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_with_another_network_is_one_line(run):
    result, _ = run
    with pytest.raises(MimicError) as err:
        runner.train(tiny_config("iterations=6", "network.policy_hidden=[8,8]"), result.run_dir, resume=True,
                    progress=lambda _: None)
    message = str(err.value)
    assert str(result.run_dir.resolve() / "checkpoints") in message and "\n" not in message
    assert "different model or config" in message and "this config needs (8,)" in message


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_humanoid_improves_with_the_cpu_recipe(tmp_path):
    """cpu_tiny.yaml's recipe (leaf settings only, so TINY's compiled program): reward per step
    and episode length rise within 60 iterations of 256 samples."""
    # Measured on 2026-12-04's 2-core AMD EPYC, late minus early: seeds 1, 2, 3 gained +2.2, +3.6,
    # +3.7 steps of episode length and +0.007, +0.005, +0.017 reward per step (an earlier machine:
    # +4 steps and +0.03 for seeds 1 and 2). The same seeds with trpo.max_kl=1e-6, a policy that
    # does not move: +0.09 and +0.06 steps, -0.005 and +0.000 reward. So the episode length is
    # the signal that separates learning from noise here; the reward only has to rise.
    config = tiny_config("iterations=60", "checkpoint_every=1000", "seed=1", "reward.preset=deepmimic_code",
                         "trpo.gamma=0.8", "trpo.max_kl=0.1")
    history = runner.train(config, tmp_path / "learn", progress=lambda _: None).history
    mean = lambda key, part: float(np.mean([m[key] for m in part]))  # noqa: E731
    # Skip the first 2 iterations: every env starts fresh at a reference state, which inflates
    # reward and truncates episode lengths at 16 steps, whatever the policy.
    early, late = history[2:12], history[-10:]
    assert mean("training/episode_length", late) > mean("training/episode_length", early) + 1.0
    assert mean("training/reward_mean", late) > mean("training/reward_mean", early)


@pytest.mark.slow
def test_new_run_refuses_a_used_directory(run):
    result, _ = run
    with pytest.raises(MimicError, match="--resume"):
        runner.train(tiny_config("iterations=4"), result.run_dir, progress=lambda _: None)


# ---------------------------------------------------------------------- checkpoints


@flax.struct.dataclass
class _Tree:
    params: dict
    opt: tuple
    empty: jax.Array
    flag: jax.Array
    key: jax.Array


def _tree(width):
    import optax
    params = {"w": jnp.arange(3 * width, dtype=jnp.float32).reshape(3, width), "b": jnp.ones(width)}
    return _Tree(params=params, opt=optax.adam(1e-3).init(params), empty=jnp.zeros((0, 4)),
                 flag=jnp.array([True, False]), key=jax.random.PRNGKey(7))


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    from mimic_mjx import checkpoint
    tree = _tree(2)
    assert checkpoint.latest_step(tmp_path) is None
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, tree, keep=2)
    assert checkpoint.latest_step(tmp_path) == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "4"]  # keep=2
    restored, step = checkpoint.restore(tmp_path, jax.eval_shape(lambda: tree))
    assert step == 4
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(tree)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # zero-size leaves come back from their shape
    with pytest.raises(MimicError) as err:
        checkpoint.restore(tmp_path, _tree(5))
    message = str(err.value)
    assert str((tmp_path / "checkpoints").resolve()) in message and "\n" not in message
    assert "'params/b' has shape (2,), this config needs (5,)" in message  # first leaf that differs
    with pytest.raises(MimicError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "nothing", tree)


@pytest.mark.slow
def test_config_leaves_replace_on_resume(run):
    result, _ = run
    state = result.state
    config = tiny_config("iterations=4")
    same = train.with_config_leaves(state, config, config.reward)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(state)):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # the run's own config: bit-identical
    changed = tiny_config("trpo.max_kl=0.02", "reward.preset=deepmimic_code")
    state = train.with_config_leaves(state, changed, changed.reward)
    assert float(state.trpo.max_kl) == np.float32(0.02)
    assert np.asarray(state.env_state.reward_config.root_weight).tolist() == [np.float32(0.2)] * 16


def _damage(step_dir: pathlib.Path) -> None:
    """What a full disk or a bad copy leaves: every data file of the checkpoint overwritten
    by 100 random bytes (metadata and markers intact)."""
    rng = np.random.default_rng(0)
    for path in step_dir.rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(rng.bytes(100))


def test_restore_newest_falls_back_past_damaged_and_unfinished_checkpoints(tmp_path):
    from mimic_mjx import checkpoint

    trees = {step: _tree(width) for step, width in ((1, 2), (2, 2), (3, 2))}
    trees = {step: t.replace(params={**t.params, "b": t.params["b"] * step}) for step, t in trees.items()}
    for step, tree in trees.items():
        checkpoint.save(tmp_path, step, tree)
    _damage(tmp_path / "checkpoints" / "3")
    (tmp_path / "checkpoints" / "2" / checkpoint.COMMIT_MARKER).unlink()  # killed during the write
    lines = []
    restored, step = checkpoint.restore_newest(tmp_path, _tree(2), report=lines.append, set_aside=True)
    assert step == 1
    np.testing.assert_array_equal(restored.params["b"], trees[1].params["b"])
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert lines[0].startswith("checkpoint 3 of ") and "is damaged (" in lines[0] and "set aside" in lines[0]
    assert lines[1].startswith("checkpoint 2 of ") and "commit_success.txt" in lines[1]
    assert lines[2] == "using checkpoint 1 instead of 3"
    # Kept aside, not deleted; the manager no longer lists them, so a later save cannot reuse them.
    assert sorted(p.name for p in (tmp_path / checkpoint.DAMAGED_SUBDIR).iterdir()) == ["2", "3"]
    assert checkpoint.all_steps(tmp_path) == [1]
    checkpoint.save(tmp_path, 3, trees[3])
    assert (tmp_path / checkpoint.DAMAGED_SUBDIR / "3").is_dir()
    # Nothing restores: one line naming the directory and the steps tried.
    _damage(tmp_path / "checkpoints" / "1")
    _damage(tmp_path / "checkpoints" / "3")
    with pytest.raises(MimicError) as err:
        checkpoint.restore_newest(tmp_path, _tree(2), report=lambda _: None)
    assert "no checkpoint restores (tried steps 3, 1)" in str(err.value) and "\n" not in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_restore_newest_does_not_fall_back_past_a_config_mismatch(tmp_path):
    from mimic_mjx import checkpoint

    checkpoint.save(tmp_path, 1, _tree(2))
    checkpoint.save(tmp_path, 2, _tree(2))
    with pytest.raises(checkpoint.ConfigMismatch, match="different model or config"):
        checkpoint.restore_newest(tmp_path, _tree(3), report=lambda _: None, set_aside=True)
    assert checkpoint.all_steps(tmp_path) == [2, 1]  # nothing set aside


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_and_eval_fall_back_from_a_damaged_newest_checkpoint(run, tmp_path):
    """The straight run's checkpoint 4 damaged: resume continues from 2 and ends as the
    uninterrupted run did, every iteration once in metrics.jsonl; eval scores checkpoint 2."""
    from mimic_mjx import policy as policy_lib

    straight, _ = run
    out = tmp_path / "damaged"
    shutil.copytree(straight.run_dir, out)
    _damage(out / "checkpoints" / "4")
    lines = []
    bundle = policy_lib.load(str(out), report=lines.append)
    assert bundle.iteration == 2 and lines[-1] == "using checkpoint 2 instead of 4"
    assert (out / "checkpoints" / "4").is_dir()  # eval reads; it does not move anything
    lines = []
    resumed = runner.train(tiny_config("iterations=4"), out, resume=True, progress=lines.append)
    assert lines[0].startswith("checkpoint 4 of ") and "set aside" in lines[0]
    assert lines[1] == "using checkpoint 2 instead of 4" and lines[2] == f"resumed {out} at iteration 2"
    deterministic = lambda m: {k: v for k, v in m.items() if not k.startswith("charts/")}  # noqa: E731
    assert [deterministic(m) for m in resumed.history] == [deterministic(m) for m in straight.history[2:]]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["training/iteration"] for r in records] == [1, 2, 3, 4]
    assert (out / "checkpoints_damaged" / "4").is_dir()


def test_restore_fills_fields_added_since_only_where_allowed(tmp_path):
    """A checkpoint written before a field existed restores, the new field zero (its caller
    sets it), when the field lies under a `fillable` prefix; elsewhere it is a mismatch."""
    from mimic_mjx import checkpoint

    old = {"params": {"w": jnp.arange(4.0)}, "trpo": {"max_kl": jnp.float32(0.02)}}
    checkpoint.save(tmp_path, 1, old)
    new = {"params": {"w": jnp.zeros(4)}, "trpo": {"max_kl": jnp.float32(0), "learn_std": jnp.float32(1)}}
    lines = []
    state, _ = checkpoint.restore(tmp_path, new, fillable=(("trpo",),), report=lines.append)
    np.testing.assert_array_equal(state["params"]["w"], np.arange(4.0))
    assert float(state["trpo"]["max_kl"]) == pytest.approx(0.02) and float(state["trpo"]["learn_std"]) == 0.0
    assert lines == ["checkpoint 1 predates 1 field(s) of this code (trpo/learn_std); they start from this "
                     "config's values"]
    with pytest.raises(checkpoint.ConfigMismatch, match="no entry 'trpo/learn_std'"):
        checkpoint.restore(tmp_path, new)
    grown = {"params": {"w": jnp.zeros(4), "b": jnp.zeros(2)}, "trpo": {"max_kl": jnp.float32(0)}}
    with pytest.raises(checkpoint.ConfigMismatch, match="no entry 'params/b'"):
        checkpoint.restore(tmp_path, grown, fillable=(("trpo",),))
    # A field regrouped since (trpo/max_kl now trpo/step/max_kl): under a fillable prefix the
    # old entry is not read and the new one starts at zero; elsewhere it is a mismatch.
    regrouped = {"params": {"w": jnp.zeros(4)}, "trpo": {"step": {"max_kl": jnp.float32(0)}}}
    lines = []
    state, _ = checkpoint.restore(tmp_path, regrouped, fillable=(("trpo",),), report=lines.append)
    np.testing.assert_array_equal(state["params"]["w"], np.arange(4.0))
    assert float(state["trpo"]["step"]["max_kl"]) == 0.0
    assert lines == ["checkpoint 1 predates 1 field(s) of this code (trpo/step/max_kl); they start from this "
                     "config's values; it has 1 entry in an older layout (trpo/max_kl), not read: set from the "
                     "config or rewritten by the next step"]
    moved = {"params": {"v": jnp.zeros(4)}, "trpo": {"max_kl": jnp.float32(0)}}
    with pytest.raises(checkpoint.ConfigMismatch, match="no entry 'params/v'"):
        checkpoint.restore(tmp_path, moved, fillable=(("trpo",),))


def test_a_checkpoint_without_its_metadata_is_damage_not_a_mismatch(tmp_path):
    from mimic_mjx import checkpoint

    checkpoint.save(tmp_path, 1, _tree(2))
    checkpoint.save(tmp_path, 2, _tree(2))
    (tmp_path / "checkpoints" / "2" / "default" / "_METADATA").unlink()
    lines = []
    _, step = checkpoint.restore_newest(tmp_path, _tree(2), report=lines.append)
    assert step == 1 and "metadata is missing" in lines[0]
