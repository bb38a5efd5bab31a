"""The physics seam: backend choice, native steps and kinematics against plain MuJoCo,
batch-split invariance, forced divergence, falls from geometry, termination reasons, MJX
agreement.

Expected values come from MuJoCo's own C API called directly (mj_step, mj_geomDistance), from
hand-staged states, or from the other backend.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from mimic_mjx import batch as batch_lib
from mimic_mjx import bench
from mimic_mjx import env as env_lib
from mimic_mjx import model as model_lib
from mimic_mjx import motion
from mimic_mjx import physics as physics_lib
from mimic_mjx import runconfig, runner, train as train_lib
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def mj_model():
    return model_lib.load_model("pd")


@pytest.fixture(scope="module")
def native(mj_model):
    return physics_lib.make(mj_model, "native", threads=2)


@pytest.fixture(scope="module")
def walk():
    return motion.load_clip("walk")


def _states(mj_model, clip, frames, lift=0.0):
    """qpos, qvel, ctrl [len(frames), ...] float32: mocap frames, PD targets at the next frame."""
    act_qpos = mj_model.jnt_qposadr[mj_model.actuator_trnid[:, 0]]
    qpos = clip.qpos[frames].copy()
    qpos[:, 2] += np.maximum(0.0, -clip.lowest_point[frames]) + lift
    ctrl = clip.qpos[np.asarray(frames) + 1][:, act_qpos]
    return (np.float32(qpos), np.float32(clip.qvel[frames]), np.float32(ctrl))


def test_auto_picks_mjx_on_accelerators_and_native_on_cpu():
    assert physics_lib.resolve_backend("auto", "gpu") == "mjx"
    assert physics_lib.resolve_backend("auto", "tpu") == "mjx"
    assert physics_lib.resolve_backend("auto", "cpu") == "native"
    assert physics_lib.resolve_backend("mjx", "cpu") == "mjx"
    with pytest.raises(MimicError, match="env.physics must be one of auto, mjx, native, got 'bullet'"):
        physics_lib.resolve_backend("bullet")


def test_a_backend_is_one_registered_class(mj_model, monkeypatch):
    # A toy backend: one subclass added to the registry. `auto`, make and bench's --physics
    # find it without being told its name.
    class Frozen(physics_lib.Physics):
        name, how, preferred_on = "frozen", "the state as it was", ("toy",)

        def step(self, state):
            return state, jnp.zeros((), bool)

    monkeypatch.setitem(physics_lib.BACKEND_CLASSES, "frozen", Frozen)
    monkeypatch.setattr(physics_lib, "BACKENDS", ("auto", *physics_lib.BACKEND_CLASSES))
    assert physics_lib.resolve_backend("auto", "toy") == "frozen"
    frozen = physics_lib.make(mj_model, "frozen")
    assert isinstance(frozen, physics_lib.Physics) and frozen.backend == "frozen"
    state = frozen.put(jnp.ones(mj_model.nq), jnp.zeros(mj_model.nv))
    assert jnp.array_equal(frozen.step(state)[0].qpos, state.qpos)
    assert bench.parse_physics("native,frozen") == ("native", "frozen")
    assert [type(physics_lib.make(mj_model, n, threads=1)).__name__ for n in ("mjx", "native")] == [
        "MjxPhysics", "NativePhysics"]


def test_native_step_equals_plain_mujoco(mj_model, native, walk):
    frames = [0, 7, 20, 33]
    qpos, qvel, ctrl = _states(mj_model, walk, frames)
    data = jax.vmap(native.put)(jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(ctrl))
    out, diverged = jax.jit(jax.vmap(native.step))(data)
    for b in range(len(frames)):
        d = mujoco.MjData(mj_model)
        d.qpos[:], d.qvel[:], d.ctrl[:] = qpos[b], qvel[b], ctrl[b]
        for _ in range(native.substeps):  # 5 substeps of 1/150 s per 30 Hz control step
            mujoco.mj_step(mj_model, d)
        # float32 in and out of a float64 simulation: agreement to float32 rounding.
        np.testing.assert_allclose(np.asarray(out.qpos[b]), d.qpos, atol=2e-5)
        np.testing.assert_allclose(np.asarray(out.qvel[b]), d.qvel, atol=2e-3)
    assert not bool(jnp.any(diverged))


def test_native_result_does_not_depend_on_how_the_batch_is_split(mj_model, native, walk):
    qpos, qvel, ctrl = _states(mj_model, walk, list(range(0, 36, 6)))
    data = jax.vmap(native.put)(jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(ctrl))
    whole, _ = jax.jit(jax.vmap(native.step))(data)
    # A sweep's nested vmap: [2 members, 3 envs], and one env at a time (unbatched calls).
    nested = jax.tree.map(lambda x: x.reshape((2, 3) + x.shape[1:]), data)
    members, _ = jax.jit(jax.vmap(jax.vmap(native.step)))(nested)
    one = jax.jit(native.step)
    singles = [one(jax.tree.map(lambda x, i=i: x[i], data))[0].qpos for i in range(6)]
    np.testing.assert_array_equal(np.asarray(members.qpos).reshape(6, -1), np.asarray(whole.qpos))
    np.testing.assert_array_equal(np.stack([np.asarray(q) for q in singles]), np.asarray(whole.qpos))


def test_a_mujoco_reset_is_flagged_as_divergence(mj_model, native, walk):
    qpos, qvel, ctrl = _states(mj_model, walk, [0, 10])
    qvel[1, 6:] = 1e12  # MuJoCo C: "Nan, Inf or huge value in QACC", then mj_resetData
    data = jax.vmap(native.put)(jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(ctrl))
    out, diverged = jax.jit(jax.vmap(native.step))(data)
    assert np.asarray(diverged).tolist() == [False, True]
    # What C hands back after the reset is a finite default pose: only the clock tells.
    assert np.all(np.isfinite(np.asarray(out.qpos[1])))


def test_lowest_geom_point_equals_mujoco_distance_to_the_floor(mj_model, native, walk):
    floor = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    rng = np.random.default_rng(0)
    for frame in (0, 15, 30):
        qpos = walk.qpos[frame].copy()
        qpos[3:7] = rng.normal(size=4)
        qpos[3:7] /= np.linalg.norm(qpos[3:7])  # a tumbling root, so boxes and capsules tilt
        qpos[2] = 0.5
        data = native.forward_kinematics(native.put(jnp.float32(qpos), jnp.zeros(mj_model.nv), jnp.zeros(mj_model.nu)))
        low = np.asarray(native.lowest_geom_z(data))
        d = mujoco.MjData(mj_model)
        d.qpos[:] = qpos
        mujoco.mj_kinematics(mj_model, d)
        for g in range(mj_model.ngeom):
            if g == floor:
                continue
            dist = mujoco.mj_geomDistance(mj_model, d, g, floor, 10.0, None)
            assert low[g] == pytest.approx(dist, abs=1e-4), mujoco.mj_id2name(mj_model, mujoco.mjtObj.mjOBJ_GEOM, g)


def _tumbling_states(mj_model, walk, n=8, seed=0):
    """Mocap poses with random root orientations, joint offsets and velocities, float32."""
    rng = np.random.default_rng(seed)
    qpos = walk.qpos[rng.integers(0, len(walk.qpos), n)].copy()
    qpos[:, 3:7] = rng.normal(size=(n, 4))
    qpos[:, 3:7] /= np.linalg.norm(qpos[:, 3:7], axis=1, keepdims=True)
    qpos[:, 7:] += 0.3 * rng.normal(size=(n, mj_model.nq - 7))
    return np.float32(qpos), np.float32(rng.normal(size=(n, mj_model.nv)))


def test_native_kinematics_agree_with_mjx_and_with_plain_mujoco(mj_model, native, walk):
    """The native backend reads kinematics from MuJoCo C (sensors of a 1-step rollout,
    native.py); MJX computes them in JAX. Both against each other and against MuJoCo's own
    mj_kinematics + mj_comPos + mj_comVel in float64, on the same tumbling states.

    Measured 2026-12-07: native vs MJX within 3e-7 (positions, m; orientations) and 1e-6
    (cvel), native vs plain MuJoCo within 4e-7: float32 rounding. The bounds are 30x that;
    a wrong sensor order, frame or velocity convention is off by 1e-2 or more.
    """
    qpos, qvel = _tumbling_states(mj_model, walk)
    data = jax.vmap(native.put)(jnp.asarray(qpos), jnp.asarray(qvel))
    ours = jax.jit(jax.vmap(native.forward_kinematics))(data)
    mjx_fk = jax.jit(jax.vmap(lambda d: physics_lib.Physics.forward_kinematics(native, d)))(data)
    d = mujoco.MjData(mj_model)
    for i in range(len(qpos)):
        d.qpos[:], d.qvel[:] = qpos[i], qvel[i]
        mujoco.mj_kinematics(mj_model, d)
        mujoco.mj_comPos(mj_model, d)
        mujoco.mj_comVel(mj_model, d)
        for field in physics_lib.KINEMATICS_FIELDS:
            got = np.asarray(getattr(ours, field)[i])
            bound = 3e-5 if field == "cvel" else 1e-5
            want = getattr(d, field).reshape(got.shape)
            assert np.abs(got - want).max() < bound, f"{field} vs mj_kinematics: {np.abs(got - want).max():.1e}"
            peer = np.asarray(getattr(mjx_fk, field)[i])
            assert np.abs(got - peer).max() < bound, f"{field} vs MJX: {np.abs(got - peer).max():.1e}"
    # Both leave the root quaternion normalised in qpos.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(ours.qpos[:, 3:7]), axis=1), 1.0, atol=1e-6)


def test_native_fused_step_is_the_step_then_the_kinematics(mj_model, native, walk):
    """`step_with_kinematics` (one host call: the step, then the kinematics of the stepped
    state and of the reference) gives what its three parts give called one by one."""
    qpos, qvel, ctrl = _states(mj_model, walk, [0, 10, 20, 30])
    ref_qpos, ref_qvel = _tumbling_states(mj_model, walk, n=4, seed=1)
    state = jax.vmap(native.put)(jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(ctrl))
    ref = jax.vmap(native.put)(jnp.asarray(ref_qpos), jnp.asarray(ref_qvel))
    fused = jax.jit(jax.vmap(native.step_with_kinematics))(state, ref)
    stepped, diverged = jax.jit(jax.vmap(native.step))(state)
    apart = (jax.jit(jax.vmap(native.forward_kinematics))(stepped),
             jax.jit(jax.vmap(native.forward_kinematics))(ref), diverged)
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(apart)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def staged_steps():
    """One jitted step of hand-staged envs, each built to end for one reason."""
    walk_env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", physics="native"))
    low_env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", physics="native", min_root_height=2.0))
    # getup_faceup does not loop; it starts on the floor, so no early termination here.
    once_env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="getup_faceup", physics="native", rsi=False,
                                                      early_termination=False))
    out = {}
    state = batch_lib.reset_batch(walk_env, jax.random.PRNGKey(0), 4)
    lying = jnp.zeros_like(state.data.qpos[0]).at[2].set(0.12)
    lying = lying.at[3:7].set(jnp.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]))  # face down
    qpos = state.data.qpos.at[0].set(lying)
    qvel = state.data.qvel.at[2, 6:].set(1e12)  # forces MuJoCo C's reset
    steps = state.step_count.at[1].set(walk_env.max_steps - 1)
    state = state.replace(data=state.data.replace(qpos=qpos, qvel=qvel), step_count=steps)
    step = jax.jit(jax.vmap(walk_env.step))
    out["walk"] = step(state, jnp.zeros((4, walk_env.action_size)))
    low = batch_lib.reset_batch(low_env, jax.random.PRNGKey(0), 1)
    out["low"] = jax.jit(jax.vmap(low_env.step))(low, jnp.zeros((1, low_env.action_size)))
    once = batch_lib.reset_batch(once_env, jax.random.PRNGKey(0), 1)
    once = once.replace(time=jnp.full((1,), once_env.clip_arrays.duration - 0.5 * once_env.dt))
    out["once"] = jax.jit(jax.vmap(once_env.step))(once, jnp.zeros((1, once_env.action_size)))
    # Roots moved 0.7 m and 0.3 m sideways off the reference, then 0.7 m and 0.3 m up (every
    # body moves with the root); one control step moves a walking root ~4 cm and drops a lifted
    # one ~5 mm, so only the 0.7 m moves are past max_root_drift / max_body_error = 0.5 m after
    # the step, and only the sideways one is a drift (horizontal).
    drift_env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", physics="native", max_root_drift=0.5,
                                                       max_body_error=0.5))
    drift = batch_lib.reset_batch(drift_env, jax.random.PRNGKey(0), 4)
    moved = drift.data.qpos.at[:, 1].add(jnp.array([0.7, 0.3, 0.0, 0.0]))
    moved = moved.at[:, 2].add(jnp.array([0.0, 0.0, 0.7, 0.3]))
    drift = drift.replace(data=drift.data.replace(qpos=moved))
    out["drift"] = jax.jit(jax.vmap(drift_env.step))(drift, jnp.zeros((4, drift_env.action_size)))
    return out


def test_each_termination_reason_is_declared_and_flagged(staged_steps):
    walk = {k: np.asarray(v).tolist() for k, v in staged_steps["walk"].termination.items()}
    # env 0 lies face down (contact and root height), env 1 hits the 600-step limit standing,
    # env 2 diverged, env 3 is a plain step.
    assert walk["fall_contact"] == [True, False, False, False]
    assert walk["root_height"] == [True, False, False, False]
    assert walk["nonfinite"] == [False, False, True, False]
    assert walk["time_limit"] == [False, True, False, False]
    assert np.asarray(staged_steps["walk"].terminated).tolist() == [True, False, True, False]
    assert np.asarray(staged_steps["walk"].truncated).tolist() == [False, True, False, False]
    assert int(staged_steps["walk"].nonfinite_count[2]) == 1
    # Every reason is declared failure or time-out; time-outs are the truncations.
    assert {k for k, timeout in env_lib.TERMINATIONS.items() if timeout} == {"time_limit", "clip_end"}
    assert bool(staged_steps["low"].termination["root_height"][0])
    assert not bool(staged_steps["low"].termination["fall_contact"][0])
    assert bool(staged_steps["once"].termination["clip_end"][0]) and bool(staged_steps["once"].truncated[0])
    assert not any(np.asarray(staged_steps["walk"].termination["root_drift"]))  # off by default
    assert not any(np.asarray(staged_steps["walk"].termination["body_error"]))  # off by default
    assert np.asarray(staged_steps["drift"].termination["root_drift"]).tolist() == [True, False, False, False]
    assert np.asarray(staged_steps["drift"].termination["body_error"]).tolist() == [True, False, True, False]
    assert np.asarray(staged_steps["drift"].terminated).tolist() == [True, False, True, False]
    assert float(staged_steps["drift"].reward[0]) == 0.0 and float(staged_steps["drift"].reward[1]) > 0.0


def test_a_floor_contact_is_a_fall_only_where_the_clip_is_off_the_floor():
    """getup_faceup's first pose, pushed 3 cm into the floor, judged against the clip at 0 s
    (lying on its back: chest and root within 5 cm of the floor) and at 3.5 s (standing, root
    0.84 m high): under the reference rule only the second is a fall; under non_feet both are."""
    def rule_env(rule):
        return env_lib.ImitationEnv(env_lib.EnvConfig(motion="getup_faceup", physics="native", rsi=False,
                                                      fall_contact=rule, min_root_height=0.0))

    envs = (rule_env("reference"), rule_env("non_feet"))
    qpos, qvel, _ = motion.sample(envs[0].clip_arrays, jnp.zeros(()))
    lying = qpos.at[2].add(-0.03)

    def falls(t):
        out = []
        for env in envs:
            data = env.physics.forward_kinematics(env.physics.put(lying, qvel))
            ref, _ = env.reference(t)
            out.append(env._termination(data, jnp.array(True), 1, t, ref.qpos, ref)["fall_contact"])
        return tuple(out)

    reference, non_feet = jax.jit(jax.vmap(falls))(jnp.array([0.0, 3.5]))
    assert np.asarray(reference).tolist() == [False, True]
    assert np.asarray(non_feet).tolist() == [True, True]


def test_each_fall_rule_names_the_bodies_of_deepmimics_args(mj_model):
    """The fall geoms of each rule against the body names of the MJCF: DeepMimic's
    --fall_contact_bodies lists (walk: all but the ankles; cartwheel: also not the wrists;
    crawl: root, chest, neck)."""
    def fall_bodies(rule):
        env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", physics="native", fall_contact=rule))
        return {mj_model.body(int(b)).name for b in mj_model.geom_bodyid[env._fall_geom]}

    every = {mj_model.body(b).name for b in range(1, mj_model.nbody)}
    assert fall_bodies("non_feet") == every - {"right_ankle", "left_ankle"}
    assert fall_bodies("reference") == every - {"right_ankle", "left_ankle"}
    assert fall_bodies("non_feet_hands") == every - {"right_ankle", "left_ankle", "right_wrist", "left_wrist"}
    assert fall_bodies("deepmimic") == {"root", "chest", "neck"}


def test_evaluation_measures_drift_instead_of_ending_on_it(staged_steps):
    """The same 0.7 m and 0.3 m root moves as staged_steps' "drift" envs, stepped in the
    evaluation's environment of a config that ends training episodes on them: the training
    env ends envs 0 and 2 (drift, body error), the evaluation's ends none of them."""
    from mimic_mjx import evaluate, runconfig

    config = runconfig.TrainConfig().replace(env=env_lib.EnvConfig(motion="walk", physics="native", max_root_drift=0.5,
                                                                   max_body_error=0.5))
    eval_env = evaluate.eval_env(config)
    state = batch_lib.reset_batch(eval_env, jax.random.PRNGKey(0), 4)
    moved = state.data.qpos.at[:, 1].add(jnp.array([0.7, 0.3, 0.0, 0.0]))
    moved = moved.at[:, 2].add(jnp.array([0.0, 0.0, 0.7, 0.3]))
    state = state.replace(data=state.data.replace(qpos=moved))
    after = jax.jit(jax.vmap(eval_env.step))(state, jnp.zeros((4, eval_env.action_size)))
    assert np.asarray(staged_steps["drift"].terminated).tolist() == [True, False, True, False]
    assert not np.asarray(after.termination["root_drift"]).any()
    assert not np.asarray(after.termination["body_error"]).any()
    assert not np.asarray(after.terminated).any()
    assert not evaluate.eval_env(config).config.rsi and evaluate.eval_env(config, rsi=True).config.rsi


def test_a_diverged_episode_is_reset_and_earns_nothing(staged_steps):
    after = staged_steps["walk"]
    assert float(after.reward[2]) == 0.0
    assert int(after.step_count[2]) == 0  # replaced by a fresh episode
    assert np.all(np.isfinite(np.asarray(after.obs[2])))


def test_termination_counts_are_iteration_metrics():
    # Hand-made trajectory [T=2, B=3]: reasons set at known places; counts are their sums.
    t, b = 2, 3
    zeros = jnp.zeros((t, b))
    flags = {k: jnp.zeros((t, b), bool) for k in env_lib.TERMINATIONS}
    flags["fall_contact"] = flags["fall_contact"].at[0, 1].set(True).at[1, 2].set(True)
    flags["time_limit"] = flags["time_limit"].at[1, 0].set(True)
    traj = train_lib.Trajectory(obs=jnp.zeros((t, b, 1)), actions=jnp.zeros((t, b, 1)), explored=zeros > 0, rewards=zeros,
                                reward_terms={}, termination=flags, final_obs=jnp.zeros((t, b, 1)),
                                terminated=flags["fall_contact"], truncated=flags["time_limit"],
                                episode_length=zeros, episode_return=zeros)
    m = train_lib.rollout_metrics(traj, zeros, jnp.ones(()))
    assert float(m["termination/fall_contact"]) == 2 and float(m["termination/time_limit"]) == 1
    assert float(m["termination/nonfinite"]) == 0 and float(m["termination/root_height"]) == 0


@pytest.mark.slow
def test_mjx_and_native_agree_over_a_few_control_steps(mj_model, walk):
    """Same start states and controls, 3 control steps (0.1 s), both backends.

    Measured 2026-12-02 on this CPU (mocap frames 0, 12, 24 with their velocities, lifted
    1 cm, PD-held at their own pose): joints differ by up to 0.050 rad, bodies by 0.013 m.
    Taken apart with the same states (2026-12-02): with the actuators' force limits removed
    the joint gap halves (0.023 rad): MuJoCo C's implicitfast drops the velocity derivative
    of a force-clamped actuator and MJX keeps it. Lifted 15 cm (no contact within 0.1 s) and
    without force limits the backends agree to rounding (6e-8 rad in float32, 2e-16 with
    jax_enable_x64); with x64 every gap above is unchanged, so float32 is not a cause. The
    other half is contact: MJX's collision and its Newton solve of the contact constraints.
    The bounds below are twice the measurement: loose for physics, tight enough to catch a
    wrong model, actuator mapping or state layout (those differ by far more in one step).
    """
    frames = [0, 12, 24]
    qpos, qvel, _ = _states(mj_model, walk, frames, lift=0.01)
    act_qpos = mj_model.jnt_qposadr[mj_model.actuator_trnid[:, 0]]
    ctrl = qpos[:, act_qpos]
    results = {}
    for backend in ("native", "mjx"):
        phys = physics_lib.make(mj_model, backend)

        def run(d, phys=phys):
            def body(d, _):
                d, _ = phys.step(d)
                return d, phys.forward_kinematics(d).xpos
            return jax.lax.scan(body, d, None, length=3)

        data = jax.vmap(phys.put)(jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(ctrl))
        final, xpos = jax.jit(jax.vmap(run))(data)
        results[backend] = (np.asarray(final.qpos), np.asarray(xpos))
    dq = np.abs(results["native"][0][:, 7:] - results["mjx"][0][:, 7:]).max()
    dx = np.abs(results["native"][1] - results["mjx"][1]).max()
    assert dq < 0.1, f"joint positions differ by {dq:.2e} rad"
    assert dx < 0.03, f"body positions differ by {dx:.2e} m"


@pytest.mark.slow
def test_mjx_and_native_give_the_reference_policy_the_same_reward():
    """The reference policy (PD targets = the clip's next pose) for 3 steps from the same RSI
    starts; reward per step under deepmimic_paper, each backend's own env."""
    rewards = {}
    for backend in ("native", "mjx"):
        env = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", physics=backend))

        def run(key, env=env):
            state = batch_lib.reset_batch(env, key, 4)

            def body(s, _):
                s = jax.vmap(env.step)(s, jax.vmap(env.reference_action)(s))
                return s, s.reward
            return jax.lax.scan(body, state, None, length=3)[1]

        rewards[backend] = np.asarray(jax.jit(run)(jax.random.PRNGKey(4)))
    diff = np.abs(rewards["native"] - rewards["mjx"]).max()
    assert rewards["native"].min() > 0.2  # nobody fell: the comparison is of tracking
    assert diff < 0.05, f"reward per step differs by {diff:.3f} (native {rewards['native'].mean():.3f})"


@pytest.mark.slow
def test_training_still_runs_on_mjx_on_a_cpu(tmp_path):
    """`--set env.physics=mjx` on CPU: two iterations of the real iteration, finite metrics."""
    from mimic_mjx import config as cfglib

    config = cfglib.load_config(runconfig.TrainConfig, None, [
        "env.physics=mjx", "num_envs=4", "horizon=8", "iterations=2", "network.policy_hidden=[16]",
        "network.value_hidden=[16]", "trpo.value_minibatches=2"])
    result = runner.train(config, tmp_path / "run", progress=lambda _: None)
    assert len(result.history) == 2
    assert all(np.isfinite(v) for m in result.history for v in m.values())
    assert (tmp_path / "run" / "config.yaml").read_text().count("physics: mjx") == 1


def test_native_model_steps_exactly_as_mujoco_defaults_without_island_discovery(mj_model, native, walk):
    # The native stepper turns island discovery off (the humanoid is one kinematic tree, one
    # island); float64 trajectories through falls and floor contacts must not change by a bit.
    fast = native._native.model
    assert fast.opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_ISLAND)
    assert not mj_model.opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_ISLAND)
    qpos, qvel, ctrl = _states(mj_model, walk, [3, 17])
    for b in range(2):
        finals = []
        for m in (mj_model, fast):
            d = mujoco.MjData(m)
            d.qpos[:], d.qvel[:], d.ctrl[:] = qpos[b], qvel[b], ctrl[b]
            contacts = 0
            for _ in range(300):  # 2 s holding one pose: the humanoid falls onto the floor
                mujoco.mj_step(m, d)
                contacts += d.ncon
            finals.append(np.concatenate([d.qpos, d.qvel]))
        assert contacts > 300
        np.testing.assert_array_equal(finals[0], finals[1])
