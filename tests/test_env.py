"""The imitation environment: RSI, early termination, truncation, non-finite physics, shapes.

All batched runs share one compiled rollout (conftest.walk_rollout): env p*N + i runs
policy p of diagnose.POLICIES (reference, zero, random).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import WALK_ENVS
from mimic_mjx import batch as batch_lib
from mimic_mjx import env as env_lib
from mimic_mjx.errors import MimicError

REF, ZERO, RANDOM = 0, 1, 2


def test_observation_and_action_sizes(walk_env, walk_reset):
    # 1 + 14*3 + 15*6 + 15*3 + 15*3 + 2 = 225 (env._observe docstring); 28 hinges.
    assert walk_env.observation_size == 225
    assert walk_env.action_size == 28
    assert walk_reset.obs.shape == (3 * WALK_ENVS, 225)
    assert bool(jnp.all(jnp.isfinite(walk_reset.obs)))


def test_rsi_reproduces_the_reference_pose(walk_env, walk_reset):
    clip = walk_env.clip
    times = np.asarray(walk_reset.time)
    assert times.min() >= 0 and times.max() < clip.duration and len(set(times.round(6))) > 1
    qpos = np.asarray(walk_reset.data.qpos)
    for b, t in enumerate(times):
        # Independent of motion.sample: numpy's interp of the stored frames, hinge by hinge.
        hinges = [np.interp(t, clip.frame_times, clip.qpos[:, k]) for k in range(7, clip.qpos.shape[1])]
        np.testing.assert_allclose(qpos[b, 7:], hinges, atol=1e-5)
        root_xy = [np.interp(t, clip.frame_times, clip.qpos[:, k]) for k in range(2)]
        np.testing.assert_allclose(qpos[b, :2], root_xy, atol=1e-5)
        # The root height is the clip's, lifted only where the clip is under the floor.
        z = np.interp(t, clip.frame_times, clip.qpos[:, 2])
        low = np.interp(t, clip.frame_times, clip.lowest_point)
        assert qpos[b, 2] == pytest.approx(z + max(0.0, -low), abs=1e-5)


def test_no_rsi_starts_at_time_zero():
    env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", rsi=False))
    state = env.reset(jax.random.PRNGKey(0))  # eager: no compile of the step
    assert float(state.time) == 0.0
    np.testing.assert_allclose(np.asarray(state.data.qpos[7:]), env.clip.qpos[0, 7:], atol=1e-6)


def test_start_pose_noise_is_gaussian_on_the_joints_only():
    # The seed diagnosis's option 4: the first frame plus N(0, 0.1²) on the 28 joint coordinates.
    env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", rsi=False, start_pose_noise=0.1))
    keys = jax.random.split(jax.random.PRNGKey(3), 2048)
    _, times, data = jax.jit(jax.vmap(env._start))(keys)  # no forward kinematics needed
    assert np.all(np.asarray(times) == 0.0)
    qpos = np.asarray(data.qpos, np.float64)
    first = env.clip.qpos[0]
    delta = qpos[:, 7:] - first[7:]
    # 2048 x 28 draws: the sample std's own std is 0.1 / sqrt(2 * 57344) = 3e-4.
    assert delta.std() == pytest.approx(0.1, abs=2e-3)
    assert abs(delta.mean()) < 2e-3
    assert np.all(np.abs(delta.mean(axis=0)) < 0.02)  # every coordinate, not a few
    # The root is the clip's (height lifted only if the frame is under the floor).
    np.testing.assert_allclose(qpos[:, [0, 1, 3, 4, 5, 6]], np.broadcast_to(first[[0, 1, 3, 4, 5, 6]], (2048, 6)),
                               atol=1e-6)
    # The noise has its own key: with RSI, the clip times are those of a start without noise.
    rsi = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", start_pose_noise=0.1))
    plain = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk"))
    t_noisy = jax.jit(jax.vmap(rsi._start))(keys[:64])[1]
    t_plain, plain_data = jax.jit(jax.vmap(plain._start))(keys[:64])[1:]
    np.testing.assert_array_equal(np.asarray(t_noisy), np.asarray(t_plain))
    hinges = [np.interp(float(t), plain.clip.frame_times, plain.clip.qpos[:, 7]) for t in np.asarray(t_plain)]
    np.testing.assert_allclose(np.asarray(plain_data.qpos[:, 7]), hinges, atol=1e-5)  # no noise by default


@pytest.fixture(scope="module")
def staged(walk_env, walk_rollout, walk_reset):
    """One rollout from a staged start: env 0 lies on the floor, env 1 stands in its
    reference pose, env 2 is one step from the time limit, env 3 has NaN velocities."""
    data = walk_reset.data
    lying = jnp.zeros_like(data.qpos[0]).at[2].set(0.12)
    # Pitched 90 degrees about y: torso horizontal, face down.
    lying = lying.at[3:7].set(jnp.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]))
    qpos = data.qpos.at[0].set(lying)
    qvel = data.qvel.at[0].set(0.0).at[3].set(jnp.nan)
    steps = walk_reset.step_count.at[2].set(walk_env.max_steps - 1)
    state = walk_reset.replace(data=data.replace(qpos=qpos, qvel=qvel), step_count=steps)
    return walk_rollout(jax.random.PRNGKey(3), state)


def test_early_termination_fires_on_the_torso_not_on_the_feet(staged):
    rollouts, _ = staged
    assert bool(rollouts.terminated[0, REF, 0]), "torso on the floor must end the episode"
    assert not bool(rollouts.terminated[0, REF, 1]), "standing on the feet must not"


def test_truncation_is_not_termination(staged, walk_env):
    rollouts, _ = staged
    assert bool(rollouts.truncated[0, REF, 2]) and not bool(rollouts.terminated[0, REF, 2])
    # Fell (env 0) is a termination, never a truncation.
    assert not bool(rollouts.truncated[0, REF, 0])


def test_nonfinite_physics_is_counted_and_reset(staged):
    rollouts, final = staged
    assert bool(rollouts.terminated[0, REF, 3])
    assert int(final.nonfinite_count[3]) >= 1
    assert int(final.nonfinite_count[1]) == 0
    for leaf in jax.tree.leaves(rollouts.errors):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert bool(jnp.all(jnp.isfinite(final.data.qpos))) and bool(jnp.all(jnp.isfinite(final.obs)))


@pytest.mark.slow
def test_a_finished_episode_restarts_exactly_as_reset_would(walk_env):
    # step() replaces a finished episode by reset(state.rng), jitted inside the step; it must
    # equal the public reset() from the state's rng, run eagerly.
    state = walk_env.reset(jax.random.PRNGKey(5))
    lying = jnp.zeros_like(state.data.qpos).at[2].set(0.12)
    lying = lying.at[3:7].set(jnp.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]))
    state = state.replace(data=state.data.replace(qpos=lying, qvel=jnp.zeros_like(state.data.qvel)))
    after = jax.jit(walk_env.step)(state, jnp.zeros(walk_env.action_size))
    expected = walk_env.reset(state.rng)  # eager: a different code path from the jitted step
    assert bool(after.terminated) and int(after.step_count) == 0
    assert float(after.time) == float(expected.time)
    np.testing.assert_allclose(np.asarray(after.data.qpos), np.asarray(expected.data.qpos), atol=1e-6)
    np.testing.assert_allclose(np.asarray(after.data.xpos), np.asarray(expected.data.xpos), atol=1e-5)
    np.testing.assert_allclose(np.asarray(after.obs), np.asarray(expected.obs), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(after.rng), np.asarray(expected.rng))


@pytest.mark.slow
def test_step_batch_restarts_several_episodes_a_round_at_a_time_as_vmapped_step_does(walk_env):
    # 4 envs, reset_slots(4) = 1: three staged to fall in the same step need three rounds of
    # step_batch's restart loop. Two other methods give the expected states: the eager reset()
    # from each env's rng for the three, and vmap(env.step) (a reset built for every env, every
    # step) for the whole batch, over that step and two more. Equal to float32 rounding (the
    # two programs fuse forward kinematics differently).
    assert batch_lib.reset_slots(4) == 1 and batch_lib.reset_slots(64) == 8 and batch_lib.reset_slots(65) == 9
    state = jax.jit(lambda key: batch_lib.reset_batch(walk_env, key, 4))(jax.random.PRNGKey(6))
    lying = jnp.zeros_like(state.data.qpos[0]).at[2].set(0.12)
    lying = lying.at[3:7].set(jnp.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]))
    falls = np.array([True, False, True, True])
    qpos = jnp.where(falls[:, None], lying, state.data.qpos)
    state = state.replace(data=state.data.replace(qpos=qpos, qvel=jnp.where(falls[:, None], 0.0, state.data.qvel)))
    batch_step = jax.jit(lambda s, a: batch_lib.step_batch(walk_env, s, a))
    vmapped_step = jax.jit(jax.vmap(walk_env.step))
    zeros = jnp.zeros((4, walk_env.action_size))
    after = batch_step(state, zeros)
    assert np.asarray(after.terminated).tolist() == falls.tolist()
    assert np.asarray(after.step_count).tolist() == [0, 1, 0, 0]
    for b in np.flatnonzero(falls):
        expected = walk_env.reset(state.rng[b])
        assert float(after.time[b]) == float(expected.time)
        np.testing.assert_array_equal(np.asarray(after.rng[b]), np.asarray(expected.rng))
        np.testing.assert_allclose(np.asarray(after.obs[b]), np.asarray(expected.obs), atol=1e-4)
    a, b = after, vmapped_step(state, zeros)
    for k in range(3):
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=1e-4,
                                       err_msg=f"step {k}: {jax.tree_util.keystr(path)}")
        a, b = batch_step(a, zeros), vmapped_step(b, zeros)


def test_a_continuing_step_reaches_its_final_obs(walk_env, walk_reset):
    """GAE (train.compute_advantages) reads V(final_obs[t]) off V(obs[t + 1]) for a step that did
    not end its episode: the state it hands on must observe exactly its final_obs."""
    from mimic_mjx import batch as batch_lib

    state = jax.jit(lambda s: batch_lib.step_batch(walk_env, s, jnp.zeros((s.time.shape[0], walk_env.action_size))))(
        walk_reset)
    going = ~np.asarray(state.done)
    assert going.any()
    np.testing.assert_array_equal(np.asarray(state.obs)[going], np.asarray(state.final_obs)[going])


def test_reference_policy_survives_longer_than_zero_and_random(walk_rollouts):
    rollouts, _ = walk_rollouts
    falls = np.asarray(rollouts.terminated).sum(axis=(0, 2))  # [P] falls in the same window
    # Same number of env-steps per policy, so fewer falls means longer survival.
    assert falls[REF] < falls[ZERO] and falls[REF] < falls[RANDOM]


def test_reward_is_zero_on_the_terminating_step_and_bounded(walk_rollouts, walk_env):
    """env.step's own rewards (what training and diagnose read), not a re-scoring that could
    zero the terminating steps itself."""
    from mimic_mjx import diagnose
    from mimic_mjx import reward as reward_lib

    rollouts, _ = walk_rollouts
    rewards, terminated = np.asarray(rollouts.rewards), np.asarray(rollouts.terminated)
    assert terminated.any()  # the window has falls, so the checks below are not vacuous
    # The same steps scored from their raw errors: terminating steps that would have earned
    # > 0, so the zeros below are env.step's rule at work, not poses too bad to score.
    raw, _ = reward_lib.reward_from_errors(rollouts.errors, rollouts.actions, walk_env.reward_config)
    raw = np.asarray(raw)
    assert np.any(raw[terminated] > 1e-3)
    assert np.all(rewards[terminated] == 0)
    for name, term in rollouts.reward_terms.items():
        assert np.all(np.asarray(term)[terminated] == 0), name
    np.testing.assert_allclose(rewards[~terminated], raw[~terminated], rtol=1e-5, atol=1e-7)
    # deepmimic_paper: each step in [0, sum of weights = 1].
    assert rewards.min() >= 0 and rewards.max() <= float(reward_lib.max_reward(walk_env.reward_config)) + 1e-6
    # diagnose's re-scoring applies the same rule: under the env's own config it gives
    # env.step's rewards back.
    rescored, _ = diagnose.step_rewards(rollouts, walk_env.reward_config)
    np.testing.assert_allclose(np.asarray(rescored), rewards, rtol=1e-5, atol=1e-7)


def test_wrong_action_shapes_are_one_line_errors(walk_env, walk_reset):
    with pytest.raises(MimicError, match=r"actions have shape \(24, 27\), expected \(24, 28\)"):
        batch_lib.step_batch(walk_env, walk_reset, jnp.zeros((24, 27)))
    single = jax.tree.map(lambda x: x[0], walk_reset)
    with pytest.raises(MimicError, match=r"action has shape \(3,\)"):
        walk_env.step(single, jnp.zeros(3))


def test_bad_env_config_is_one_line():
    with pytest.raises(MimicError, match="env.control"):
        env_lib.ImitationEnv(env_lib.EnvConfig(control="velocity"))
