"""The humanoid3d model and clip conversion, checked with plain MuJoCo and hand numbers."""

import json
import math

import mujoco
import numpy as np
import pytest

from mimic_mjx import model as model_lib
from mimic_mjx import motion
from mimic_mjx import quaternion as quat
from mimic_mjx.errors import MimicError


@pytest.fixture(scope="module")
def walk():
    return motion.load_clip("walk")


@pytest.fixture(scope="module")
def mj_model():
    return model_lib.load_model()


def _floor_contacts(m, qpos, margin):
    """Signed distances of every body-floor contact MuJoCo's own collision finds."""
    m = model_lib.load_model()
    m.geom_margin[:] = margin
    d = mujoco.MjData(m)
    d.qpos[:] = qpos
    mujoco.mj_forward(m, d)
    out = []
    for c in d.contact[: d.ncon]:
        g = c.geom2 if c.geom1 == 0 else c.geom1
        out.append((mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g]), c.dist))
    return out


def test_model_shape_and_mass(mj_model):
    # 7 (free joint) + 8 spherical joints x 3 hinges + 4 single hinges = 35; nv = 34.
    assert (mj_model.nq, mj_model.nv, mj_model.nu) == (35, 34, 28)
    # humanoid3d.txt body masses: 6+14+2 + 2*(4.5+3+1+1.5+1+0.5) = 45 kg.
    assert mj_model.body_mass.sum() == pytest.approx(45.0)
    assert model_lib.substeps(mj_model) * mj_model.opt.timestep == pytest.approx(1 / 30)


def test_torque_mode_scales_by_torque_limit():
    m = model_lib.load_model("torque")
    d = mujoco.MjData(m)
    d.ctrl[:] = 0.5
    mujoco.mj_forward(m, d)
    knee = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, "right_knee")
    # humanoid3d.txt right_knee TorqueLim 150 -> half of it.
    assert d.actuator_force[knee] == pytest.approx(75.0)
    with pytest.raises(MimicError, match="control mode"):
        model_lib.load_model("velocity")


def test_walk_root_height_first_frame(walk):
    # DeepMimic's walk frame 0 root Y (up) is 0.847532.
    assert walk.qpos[0, 2] == pytest.approx(0.847532, abs=1e-6)


def test_walk_always_has_a_support_foot_and_never_sinks(walk):
    for t in range(walk.num_frames):
        contacts = _floor_contacts(None, walk.qpos[t], margin=0.05)
        foot = [d for b, d in contacts if b in model_lib.FEET]
        assert foot and min(foot) <= 0.05, f"frame {t}: no foot within 5 cm of the floor"
        assert all(d > -0.02 for _, d in contacts), f"frame {t}: a geom is > 2 cm under the floor"


def test_lowest_point_matches_mujoco_collision(walk):
    # The loader's geometric lowest point against MuJoCo's own contact distance.
    t = int(np.argmin(walk.lowest_point))
    depth = min(d for _, d in _floor_contacts(None, walk.qpos[t], margin=0.0))
    assert walk.lowest_point[t] == pytest.approx(depth, abs=1e-3)


def test_legs_not_swapped(walk, mj_model):
    # Convention: facing +x, the left side is +y. In frame 0 the pelvis faces ~+x, so the
    # left hip and ankle sit at larger y than the right ones (hips are 2 x 0.0849 m apart).
    d = mujoco.MjData(mj_model)
    d.qpos[:] = walk.qpos[0]
    mujoco.mj_kinematics(mj_model, d)
    y = {n: d.xpos[model_lib.body_ids(mj_model, [n])[0], 1] for n in ("left_hip", "right_hip", "left_ankle", "right_ankle")}
    assert abs(float(quat.yaw(walk.qpos[0, 3:7]))) < 0.2
    assert y["left_hip"] - y["right_hip"] == pytest.approx(2 * 0.084887, abs=0.02)
    assert y["left_ankle"] > y["right_ankle"]


def test_walk_moves_forward_along_x(walk):
    # DeepMimic walks along its +x; one cycle of walk moves the root 1.24 m (clip data).
    assert walk.qpos[-1, 0] - walk.qpos[0, 0] == pytest.approx(1.239, abs=0.01)


def test_integrating_qvel_reproduces_qpos(walk):
    # Independent integrator: Euler steps of the free joint's world linear velocity and
    # body-frame angular velocity, hinges additive.
    q = walk.qpos[0].copy()
    dt = np.diff(walk.frame_times)
    for t in range(walk.num_frames - 1):
        q[0:3] += walk.qvel[t, 0:3] * dt[t]
        w = walk.qvel[t, 3:6] * dt[t]
        ang = np.linalg.norm(w)
        step = np.concatenate([[math.cos(ang / 2)], np.sin(ang / 2) * w / max(ang, 1e-12)])
        q[3:7] = quat.mul(q[3:7], step)
        q[7:] += walk.qvel[t, 6:] * dt[t]
        np.testing.assert_allclose(q[7:], walk.qpos[t + 1, 7:], atol=1e-9)
        np.testing.assert_allclose(q[:3], walk.qpos[t + 1, :3], atol=1e-9)
        assert float(quat.angle(quat.mul(quat.conj(q[3:7]), walk.qpos[t + 1, 3:7]))) < 1e-6


def test_check_clip_round_trip_and_ranges(walk):
    report = motion.check_clip(walk)
    assert report["ok"] and report["rotation_error_rad"] < 1e-6
    assert report["deepest_body"] == "right_ankle" and 0.0 < report["depth_m"] < 0.01
    # punch turns the neck past DeepMimic's +-1 rad twist range (neck_y); --check reports it.
    punch = motion.check_clip(motion.load_clip("punch"))
    assert any(r["joint"] == "neck_y" for r in punch["joints_out_of_range"])


def test_sample_hits_frames_and_loops(walk):
    import jax

    arr = walk.arrays()
    sample = jax.jit(motion.sample)
    for t in (0, 7, 20):
        qpos, qvel, _ = sample(arr, walk.frame_times[t])
        np.testing.assert_allclose(np.asarray(qpos), walk.qpos[t], atol=2e-5)
        np.testing.assert_allclose(np.asarray(qvel), walk.qvel[t], atol=1e-3)
    # Halfway between frames 3 and 4 the hinges are the mean of both.
    qpos, _, _ = sample(arr, 0.5 * (walk.frame_times[3] + walk.frame_times[4]))
    np.testing.assert_allclose(np.asarray(qpos[7:]), 0.5 * (walk.qpos[3, 7:] + walk.qpos[4, 7:]), atol=1e-5)
    # One cycle later: same joints, root carried by the cycle's displacement and turn, so
    # the start of cycle 1 coincides with the clip's last frame.
    qpos, _, _ = sample(arr, walk.duration + 1e-6)
    np.testing.assert_allclose(np.asarray(qpos[:3]), walk.qpos[-1, :3], atol=1e-3)
    np.testing.assert_allclose(np.asarray(qpos[7:]), walk.qpos[0, 7:], atol=1e-3)
    two, _, _ = sample(arr, 2 * walk.duration + 1e-6)
    assert float(two[0]) == pytest.approx(walk.qpos[0, 0] + 2 * (walk.qpos[-1, 0] - walk.qpos[0, 0]), abs=0.05)


def test_non_looping_clip_holds_last_frame():
    import jax

    kick = motion.load_clip("kick")
    qpos, qvel, _ = jax.jit(motion.sample)(kick.arrays(), kick.duration + 1.0)
    np.testing.assert_allclose(np.asarray(qpos), kick.qpos[-1], atol=1e-5)
    assert np.all(np.asarray(qvel) == 0)


def _synthetic_clip(times, qpos, loop):
    """A Clip of the given poses (forward differences as load_clip takes them; no kinematics)."""
    t = len(times)
    qvel = motion.finite_difference_qvel(qpos, np.append(np.diff(times), 1.0))
    return motion.Clip(name="synthetic", path=None, loop=loop, frame_times=np.asarray(times), qpos=qpos, qvel=qvel,
                       end_effectors=np.zeros((t, 4, 3)), com=np.zeros((t, 3)), lowest_point=np.zeros(t),
                       lowest_body=("",) * t)


def test_central_reference_velocity_is_exact_for_a_quadratic_pose(mj_model):
    import jax

    # One hinge follows q(t) = t² over frames of unequal length: its velocity 2t is the
    # independent value. Central differences (weighted by the neighbouring frame's length) and
    # linear interpolation are exact for a quadratic everywhere between the first and the
    # last frame's neighbours; the forward difference is exact only half-way through a frame.
    times = np.array([0.0, 0.1, 0.25, 0.35, 0.5])
    qpos = np.zeros((len(times), mj_model.nq))
    qpos[:, 3] = 1.0
    qpos[:, 7] = times**2
    clip = _synthetic_clip(times, qpos, loop=False)
    sample = jax.jit(motion.sample)
    for t in (0.1, 0.13, 0.25, 0.3, 0.35):
        _, qvel, _ = sample(clip.arrays("central"), t)
        assert float(qvel[6]) == pytest.approx(2 * t, abs=1e-5), t
    _, qvel, _ = sample(clip.arrays("forward"), 0.25)
    assert float(qvel[6]) == pytest.approx(0.25 + 0.35, abs=1e-5)  # (0.35² - 0.25²) / 0.1: the next frame's
    with pytest.raises(MimicError, match="reference velocity must be one of forward, central, got 'back'"):
        clip.arrays("back")


def test_central_reference_velocity_is_continuous_across_a_loop(mj_model):
    import jax

    # A looping clip that walks a quarter circle per cycle (heading and path turn by 90°) while a
    # hinge swings as sin(ωt + φ), ω = 2π/T: at the wrap the root's world velocity and the hinge's velocity
    # must be the same just before and just after the cycle boundary (the forward difference
    # jumps there), and the hinge's velocity at frame 0 is the central difference of
    # sin(ωt + φ) by hand, cos(φ)·sin(ωh)/h.
    n, period = 9, 0.8
    times = np.linspace(0.0, period, n)
    h, omega, phi = times[1], 2 * np.pi / period, 0.3
    psi = 0.5 * np.pi * times / period  # heading
    qpos = np.zeros((n, mj_model.nq))
    qpos[:, 0], qpos[:, 1], qpos[:, 2] = np.sin(psi), 1.0 - np.cos(psi), 0.9  # unit circle, tangent = heading
    qpos[:, 3], qpos[:, 6] = np.cos(psi / 2), np.sin(psi / 2)  # yaw psi
    qpos[:, 7] = np.sin(omega * times + phi)
    arr = _synthetic_clip(times, qpos, loop=True).arrays("central")
    sample = jax.jit(motion.sample)
    eps = 1e-5  # the velocity changes by ~ω²·eps across it
    _, before, _ = sample(arr, period - eps)
    _, after, _ = sample(arr, period + eps)
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), atol=2e-3)
    _, at0, _ = sample(arr, 0.0)
    assert float(at0[6]) == pytest.approx(np.cos(phi) * np.sin(omega * h) / h, rel=1e-5)
    # The start's root velocity points along the heading at t = 0 (x), not along the chord.
    speed = float(np.linalg.norm(np.asarray(at0[0:2])))
    assert float(at0[1]) == pytest.approx(0.0, abs=1e-5 * speed + 1e-6)
    forward = _synthetic_clip(times, qpos, loop=True).arrays("forward")
    _, fb, _ = sample(forward, period - eps)
    _, fa, _ = sample(forward, period + eps)
    assert abs(float(fa[6]) - float(fb[6])) > 0.5  # the forward difference jumps at the wrap


def _frame(dt=0.0333):
    identity = [1.0, 0.0, 0.0, 0.0]
    f = [dt, 0.0, 0.85, 0.0] + identity
    for _, n in motion.FRAME_FIELDS[3:]:
        f += identity if n == 4 else [0.0]
    return f


def _write(tmp_path, frames=None, text=None, loop="wrap"):
    p = tmp_path / "humanoid3d_bad.txt"
    p.write_text(text if text is not None else json.dumps({"Loop": loop, "Frames": frames}))
    return p


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda t: _write(t, text='{"Loop": "wrap", "Frames": [[1, 2'), r"humanoid3d_bad.txt: malformed JSON at line 1"),
        (lambda t: _write(t, frames=[_frame(), _frame()[:43]]), r"humanoid3d_bad.txt: frame 1 has 43 numbers, expected 44"),
        (lambda t: _write(t, frames=[_frame(), _frame()[:8] + ["x"] + _frame()[9:]]), r"frame 1, number 8 is not a number"),
        (lambda t: _write(t, frames=[_frame(), _frame()[:2] + [float("nan")] + _frame()[3:]]), r"frame 1, field 'root_position' is not finite"),
        (lambda t: _write(t, frames=[_frame(), _frame()[:12] + [0, 0, 0, 0] + _frame()[16:]]), r"frame 1, field 'neck' is a zero quaternion"),
        (lambda t: _write(t, frames=[_frame(dt=0.0), _frame()]), r"frame 0, field 'dt' = 0.0 must be > 0"),
        (lambda t: _write(t, frames=[]), r"'Frames' has 0 frame"),
        (lambda t: _write(t, frames=[_frame(), _frame()], loop="bounce"), r"field 'Loop' must be"),
        (lambda t: t / "humanoid3d_missing.txt", r"humanoid3d_missing.txt"),
    ],
    ids=["malformed-json", "short-frame", "not-a-number", "non-finite", "zero-quaternion", "bad-dt", "empty", "bad-loop", "missing-file"],
)
def test_bad_clip_files_give_one_line_errors(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(MimicError, match=pattern) as info:
        motion.load_clip(str(path))
    assert "\n" not in str(info.value)


def test_valid_minimal_clip_loads(tmp_path):
    clip = motion.load_clip(str(_write(tmp_path, frames=[_frame(), _frame(dt=0.0)], loop="none")))
    assert clip.qpos.shape == (2, 35) and not clip.loop
    np.testing.assert_allclose(clip.qpos[0, :7], [0, 0, 0.85, 1, 0, 0, 0])
