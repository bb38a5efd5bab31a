"""Tests for mimic_mjx.reward: expected values come from hand arithmetic (in comments),
hand-written tables of the published weights, or invariants, never from the code itself."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimic_mjx import reward as R
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(120)

J, E, NQ = 12, 4, 28
ZERO_ACTION = np.zeros(NQ, np.float32)

# Per-term weights written out by hand from the sources (paper eq. 6; SceneImitate.cpp
# lines 9-13, whose sum 0.5+0.05+0.15+0.2+0.1 = 1.0 makes the normalisation a no-op).
EXPECTED_WEIGHTS = {
    "deepmimic_paper": dict(pose=0.65, velocity=0.1, end_effector=0.15, root=0.0, com=0.1, joint_abs=0.0),
    "deepmimic_code": dict(pose=0.5, velocity=0.05, end_effector=0.15, root=0.2, com=0.1, joint_abs=0.0),
    "original_port": dict(pose=0.0, velocity=0.0, end_effector=0.0, root=0.0, com=0.0, joint_abs=1.0),
}


# --- independent numpy helpers -------------------------------------------------------
def qmul(a, b):
    """Hamilton product of w-x-y-z quaternions (numpy, written independently of reward.py)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def axis_angle(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def random_kin(seed=0):
    rng = np.random.default_rng(seed)

    def unit_quats(n):
        q = rng.normal(size=(n, 4))
        return q / np.linalg.norm(q, axis=-1, keepdims=True)

    return R.Kinematics(
        joint_quat=unit_quats(J), joint_angvel=rng.normal(size=(J, 3)), joint_pos=rng.normal(size=NQ),
        end_effectors=rng.normal(size=(E, 3)), root_pos=rng.normal(size=3), root_quat=unit_quats(1)[0],
        root_linvel=rng.normal(size=3), root_angvel=rng.normal(size=3), com_pos=rng.normal(size=3),
        com_vel=rng.normal(size=3), joint_vel=rng.normal(size=NQ),
    )


def f32(kin):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), kin)


# Where each raw error of the paper and the code lives in an Errors record (term, raw name).
RAW = {"pose": ("pose", "weighted"), "pose_unweighted": ("pose", "sum"), "velocity": ("velocity", "weighted"),
       "velocity_unweighted": ("velocity", "sum"), "end_effector": ("end_effector", "sum"), "root": ("root", "mixed"),
       "root_rot": ("root", "rot"), "com_pos": ("com", "pos"), "com_vel": ("com", "vel"),
       "joint_abs": ("joint_abs", "sum"), "joint_vel_abs": ("joint_vel_abs", "sum")}


def hand_errors(**kw):
    """An Errors with every error 0 except those given (RAW's names); counts J=12, E=4, nq=28."""
    errors = {"pose": dict(weighted=0.0, sum=0.0, count=12.0), "velocity": dict(weighted=0.0, sum=0.0, count=12.0),
              "end_effector": dict(sum=0.0, count=4.0), "root": dict(mixed=0.0, pos=0.0, rot=0.0, linvel=0.0, angvel=0.0),
              "com": dict(pos=0.0, vel=0.0), "joint_abs": dict(sum=0.0, count=28.0),
              "joint_vel_abs": dict(sum=0.0, count=28.0)}
    for name, value in kw.items():
        term, raw = RAW[name]
        errors[term][raw] = value
    return jax.tree.map(jnp.float32, errors)


def raw(err, name):
    term, key = RAW[name]
    return err[term][key]


@pytest.fixture(scope="module")
def reward_fn():
    """One compiled compute_reward shared by the tests (config leaves are traced)."""
    return jax.jit(lambda s, r, a, c: R.compute_reward(f32(s), f32(r), a, c))


@pytest.fixture(scope="module")
def score_fn():
    return jax.jit(R.reward_from_errors)


# --- identical characters ------------------------------------------------------------
@pytest.mark.parametrize("name", EXPECTED_WEIGHTS)
def test_identical_gives_weights(reward_fn, name):
    kin = random_kin(1)
    total, terms = reward_fn(kin, kin, ZERO_ACTION, R.preset(name))
    for term, weight in EXPECTED_WEIGHTS[name].items():
        assert float(terms[term]) == pytest.approx(weight, abs=1e-6), term
    assert float(terms["alive"]) == 0.0 and float(terms["action_penalty"]) == 0.0
    assert float(total) == pytest.approx(sum(EXPECTED_WEIGHTS[name].values()), abs=1e-6)
    assert float(R.max_reward(R.preset(name))) == pytest.approx(1.0)  # every preset's weights sum to 1


def test_double_cover_gives_zero_error():
    kin = random_kin(2)
    flipped = kin.replace(joint_quat=-kin.joint_quat, root_quat=-kin.root_quat)
    err = R.compute_errors(f32(kin), f32(flipped))
    for field in ("pose", "pose_unweighted", "root_rot", "root"):
        assert float(raw(err, field)) < 1e-10, field


def test_quat_diff_angle_wraps():
    q0 = axis_angle([0, 0, 1], 0.0)
    # A 5.2 rad turn is the same rotation as 2π − 5.2 = 1.0832 rad the other way.
    got = R.quat_diff_angle(jnp.float32(q0), jnp.float32(axis_angle([0, 0, 1], 5.2)))
    assert float(got) == pytest.approx(2 * math.pi - 5.2, abs=1e-5)


def test_gradient_finite_at_zero_error():
    kin = f32(random_kin(3))
    grad = jax.grad(lambda q: R.compute_reward(kin.replace(joint_quat=q), kin, ZERO_ACTION,
                                               R.preset("deepmimic_code"))[0])(kin.joint_quat)
    assert np.all(np.isfinite(grad))


# --- hand-computed cases -------------------------------------------------------------
def test_one_joint_rotated_hand_values(reward_fn):
    sim = random_kin(4)
    rot = axis_angle([1, 2, 2], 0.3)
    ref = sim.replace(joint_quat=sim.joint_quat.copy())
    ref.joint_quat[2] = qmul(sim.joint_quat[2], rot)  # right_hip, DiffWeight 0.5
    err = R.compute_errors(f32(sim), f32(ref))
    assert float(raw(err, "pose_unweighted")) == pytest.approx(0.09, rel=1e-4)  # 0.3²
    # Code: ŵ = 0.5 / 4.8 (4.8 = root 1 + the 12 joint weights 3.8), so 0.5/4.8·0.09 = 0.009375.
    assert float(raw(err, "pose")) == pytest.approx(0.009375, rel=1e-4)
    _, paper = reward_fn(sim, ref, ZERO_ACTION, R.preset("deepmimic_paper"))
    assert float(paper["pose"]) == pytest.approx(0.65 * math.exp(-2 * 0.09), rel=1e-5)  # 0.65·e^-0.18 = 0.54327
    _, code = reward_fn(sim, ref, ZERO_ACTION, R.preset("deepmimic_code"))
    assert float(code["pose"]) == pytest.approx(0.5 * math.exp(-2 * 0.009375), rel=1e-5)  # 0.5·e^-0.01875 = 0.49071
    assert float(code["velocity"]) == pytest.approx(0.05, abs=1e-6)  # untouched


def test_root_rotation_hand_values(reward_fn):
    sim = random_kin(5)
    ref = sim.replace(root_quat=qmul(sim.root_quat, axis_angle([0, 0, 1], 0.4)))
    err = R.compute_errors(f32(sim), f32(ref))
    assert float(raw(err, "root_rot")) == pytest.approx(0.16, rel=1e-4)  # 0.4²
    assert float(raw(err, "root")) == pytest.approx(0.016, rel=1e-4)  # 0.1·0.16 (line 112)
    assert float(raw(err, "pose")) == pytest.approx(0.16 / 4.8, rel=1e-4)  # root DiffWeight 1/4.8
    _, code = reward_fn(sim, ref, ZERO_ACTION, R.preset("deepmimic_code"))
    assert float(code["root"]) == pytest.approx(0.2 * math.exp(-5 * 0.016), rel=1e-5)


def test_forms_hand_values(score_fn):
    paper = R.preset("deepmimic_paper")
    e = hand_errors(pose_unweighted=0.1)  # k·err = 2·0.1 = 0.2
    for form, expected in [(0, 0.65 * math.exp(-0.2)), (1, 0.65 * 0.8), (2, 0.65 * 0.64)]:
        _, terms = score_fn(e, ZERO_ACTION, R.with_overrides(paper, {"form": form}))
        assert float(terms["pose"]) == pytest.approx(expected, rel=1e-5), form
    big = hand_errors(pose_unweighted=1.0)  # 1 − 2·1 < 0: clipped to 0
    for form in (1, 2):
        _, terms = score_fn(big, ZERO_ACTION, R.with_overrides(paper, {"form": form}))
        assert float(terms["pose"]) == 0.0


def test_normalize_per_joint_hand_values(score_fn):
    paper = R.with_overrides(R.preset("deepmimic_paper"), {"normalize_per_joint": 1})
    e = hand_errors(pose_unweighted=1.2, velocity_unweighted=2.4, end_effector=0.01)
    _, terms = score_fn(e, ZERO_ACTION, paper)
    assert float(terms["pose"]) == pytest.approx(0.65 * math.exp(-2 * 0.1), rel=1e-5)  # 1.2/12 = 0.1
    assert float(terms["velocity"]) == pytest.approx(0.1 * math.exp(-0.1 * 0.2), rel=1e-5)  # 2.4/12
    assert float(terms["end_effector"]) == pytest.approx(0.15 * math.exp(-40 * 0.0025), rel=1e-5)  # 0.01/4
    port = R.with_overrides(R.preset("original_port"), {"normalize_per_joint": 1})
    _, terms = score_fn(hand_errors(joint_abs=145.6), ZERO_ACTION, port)
    assert float(terms["joint_abs"]) == pytest.approx(math.exp(-5.2), rel=1e-5)  # 145.6/28


def test_error_sources_hand_values(score_fn):
    e = hand_errors(pose=0.1, pose_unweighted=99.0, com_pos=0.03, com_vel=2.0, end_effector=0.01)
    _, code = score_fn(e, ZERO_ACTION, R.preset("deepmimic_code"))
    assert float(code["pose"]) == pytest.approx(0.5 * math.exp(-0.2), rel=1e-5)  # weighted err 0.1, k 2
    assert float(code["com"]) == pytest.approx(0.1 * math.exp(-2.0), rel=1e-5)  # 10·0.1·2.0 (velocity)
    assert float(code["end_effector"]) == pytest.approx(0.15 * math.exp(-0.1), rel=1e-5)  # 10·0.01
    _, paper = score_fn(e, ZERO_ACTION, R.preset("deepmimic_paper"))
    assert float(paper["com"]) == pytest.approx(0.1 * math.exp(-0.3), rel=1e-5)  # 10·0.03 (position)
    assert float(paper["end_effector"]) == pytest.approx(0.15 * math.exp(-0.4), rel=1e-5)  # 40·0.01


def test_output_scale_alive_action_penalty(score_fn):
    cfg = R.with_overrides(R.preset("deepmimic_paper"),
                           {"output_scale": 2.0, "alive_bonus": 0.5, "action_penalty": 0.1})
    total, terms = score_fn(hand_errors(), np.full(NQ, 0.5, np.float32), cfg)
    assert float(terms["pose"]) == pytest.approx(1.3)  # 2·0.65
    assert float(terms["alive"]) == pytest.approx(0.5)
    assert float(terms["action_penalty"]) == pytest.approx(-0.025)  # −0.1·mean(0.5²)
    assert float(total) == pytest.approx(2.475, rel=1e-6)  # 2·1.0 + 0.5 − 0.025
    assert float(R.max_reward(cfg)) == pytest.approx(2.5)  # 2·1.0 + 0.5
    half = R.with_overrides(R.preset("deepmimic_code"), {"root_weight": 0.0, "alive_bonus": 0.25})
    assert float(R.max_reward(half)) == pytest.approx(1.05)  # 0.5+0.05+0.15+0.1 + 0.25


# --- monotonicity ----------------------------------------------------------------------
def _perturb(kin, what, amount):
    k = jax.tree.map(np.array, kin)
    if what == "pose":
        k.joint_quat[3] = qmul(k.joint_quat[3], axis_angle([0, 1, 0], amount))
    elif what == "velocity":
        k.joint_angvel[5] += amount
    elif what == "end_effector":
        k.end_effectors[1] += amount
    elif what == "root":
        k.root_pos[0] += amount
    elif what == "com":
        k.com_pos[1] += amount
        k.com_vel[1] += amount
    elif what == "joint_abs":
        k.joint_pos[7] += amount
    elif what == "joint_vel_abs":
        k.joint_vel[7] += amount
    return k


@pytest.mark.parametrize("form", [0, 1, 2, 3])
def test_terms_decrease_as_error_grows(reward_fn, form):
    ref = random_kin(6)
    amounts = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    for name in EXPECTED_WEIGHTS:
        cfg = R.with_overrides(R.preset(name), {"form": form})
        for term, weight in EXPECTED_WEIGHTS[name].items():
            if weight == 0:
                continue
            values = [float(reward_fn(_perturb(ref, term, a), ref, ZERO_ACTION, cfg)[1][term]) for a in amounts]
            diffs = np.diff(values)
            assert np.all(diffs <= 1e-7), (name, term, values)
            if form != 3:  # max(0, 1 - x²) is flat at x = 0: a small error may not show in float32
                assert values[1] < values[0], (name, term, values)  # small errors already lower it
            assert values[-1] < values[0], (name, term, values)
            if form == 0:
                assert np.all(diffs < 0), (name, term, values)


# --- the dead reward --------------------------------------------------------------------
def test_original_port_reward_is_dead(reward_fn):
    ref = random_kin(7)
    signs = np.where(np.arange(NQ) % 2 == 0, 1.0, -1.0)
    sim = ref.replace(joint_pos=ref.joint_pos + 5.2 * signs,
                      joint_quat=qmul(ref.joint_quat, axis_angle([1, 0, 0], 5.2)))
    err = R.compute_errors(f32(sim), f32(ref))
    assert float(raw(err, "joint_abs")) == pytest.approx(145.6, rel=1e-5)  # 28·5.2
    port, _ = reward_fn(sim, ref, ZERO_ACTION, R.preset("original_port"))
    assert float(port) < 1e-60  # exp(−145.6) ≈ 5e-64 (0 in float32): no learning signal
    paper, _ = reward_fn(sim, ref, ZERO_ACTION, R.preset("deepmimic_paper"))
    # Each joint is 2π − 5.2 = 1.0832 rad off: pose term 0.65·exp(−2·12·1.0832²) ≈ 4e-13;
    # velocity, end effectors and COM match: 0.1 + 0.15 + 0.1 = 0.35.
    assert float(paper) == pytest.approx(0.35, abs=1e-6)
    # A near miss, 0.2 rad on every coordinate: the port gives exp(−5.6) = 0.0037, the paper
    # 0.65·exp(−2·12·0.04) + 0.35 = 0.65·e^-0.96 + 0.35 = 0.5989.
    near = ref.replace(joint_pos=ref.joint_pos + 0.2 * signs,
                       joint_quat=qmul(ref.joint_quat, axis_angle([1, 0, 0], 0.2)))
    port, _ = reward_fn(near, ref, ZERO_ACTION, R.preset("original_port"))
    paper, _ = reward_fn(near, ref, ZERO_ACTION, R.preset("deepmimic_paper"))
    assert float(port) == pytest.approx(math.exp(-5.6), rel=1e-4)
    assert float(paper) == pytest.approx(0.65 * math.exp(-0.96) + 0.35, rel=1e-5)


# --- vmap --------------------------------------------------------------------------------
def test_vmap_over_configs_equals_loop():
    ref = random_kin(8)
    sim = _perturb(_perturb(_perturb(ref, "pose", 0.3), "com", 0.1), "joint_abs", 0.5)
    errors = R.compute_errors(f32(sim), f32(ref))
    action = np.linspace(-1, 1, NQ).astype(np.float32)
    configs = [
        R.preset("deepmimic_paper"),
        R.with_overrides(R.preset("deepmimic_code"), {"form": 1, "alive_bonus": 0.2}),
        R.with_overrides(R.preset("original_port"), {"form": 2, "joint_abs_scale": 0.3, "action_penalty": 0.5}),
    ]
    totals, terms = jax.jit(jax.vmap(R.reward_from_errors, in_axes=(None, None, 0)))(
        errors, action, R.stack_configs(configs))
    assert totals.shape == (3,)
    for i, cfg in enumerate(configs):
        total_i, terms_i = R.reward_from_errors(errors, action, cfg)
        assert float(totals[i]) == pytest.approx(float(total_i), rel=1e-6)
        for name, value in terms_i.items():
            assert float(terms[name][i]) == pytest.approx(float(value), rel=1e-6, abs=1e-9), name
    maxes = jax.vmap(R.max_reward)(R.stack_configs(configs))
    np.testing.assert_allclose(maxes, [1.0, 1.2, 1.0], rtol=1e-6)


def test_vmap_over_envs_shapes():
    sims = jax.tree.map(lambda *xs: jnp.stack(xs), *[f32(random_kin(s)) for s in range(3)])
    refs = jax.tree.map(lambda *xs: jnp.stack(xs), *[f32(random_kin(s + 10)) for s in range(3)])
    total, terms = jax.jit(jax.vmap(R.compute_reward, in_axes=(0, 0, 0, None)))(
        sims, refs, jnp.zeros((3, NQ)), R.preset("deepmimic_code"))
    assert total.shape == (3,)
    assert set(terms) == {"pose", "velocity", "end_effector", "root", "com", "joint_abs", "joint_vel_abs", "alive",
                          "action_penalty"}
    assert all(v.shape == (3,) for v in terms.values())
    assert np.all(np.isfinite(total)) and np.all(total >= 0) and np.all(total <= 1)


# --- config handling ---------------------------------------------------------------------
def test_unknown_preset_raises():
    with pytest.raises(MimicError, match=r"unknown reward preset 'nope' \(known: deepmimic_paper"):
        R.preset("nope")


def test_unknown_or_bad_field_raises():
    cfg = R.preset("deepmimic_paper")
    with pytest.raises(MimicError, match=r"'pose_scal'.*pose_scale"):
        R.with_overrides(cfg, {"pose_scal": 3.0})
    with pytest.raises(MimicError, match="reward.form"):
        R.with_overrides(cfg, {"form": 4})
    with pytest.raises(MimicError, match="reward.pose_weight"):
        R.with_overrides(cfg, {"pose_weight": "heavy"})
    with pytest.raises(MimicError, match="reward.com_scale"):
        R.with_overrides(cfg, {"com_scale": -1})


def test_overrides_and_dict_round_trip():
    cfg = R.with_overrides(R.preset("deepmimic_code"), {"pose_scale": 3})
    d = R.config_to_dict(cfg)
    assert d["pose_scale"] == 3.0 and d["root_scale"] == 5.0 and d["com_scale"] == pytest.approx(1.0)
    assert set(d) == set(R.RewardConfig.__dataclass_fields__)
    again = R.with_overrides(R.RewardConfig(), d)
    assert R.config_to_dict(again) == d


# --- the seed diagnosis's remedies (issue 30) -----------------------------------------------
def _remedy_by_hand(name, err, vel_err, action, n=28):
    """Each remedy's formula as the diagnosis wrote it, in plain Python."""
    x = err / (0.5 * n)
    return {
        "remedy_quick_fix": 10 * math.exp(-2 * err / n),
        "remedy_option1": 10 * math.exp(-5 * err / n),
        "remedy_option1_linear": 10 * max(0.0, 1 - err / n),
        "remedy_option2": 10 * math.exp(-2 * err / n) + math.exp(-2 * vel_err / n) + 1.0 - 0.01 * float(np.sum(action**2)),
        "remedy_option3_linear": 10 * max(0.0, 1 - x),
        "remedy_option3_square": 10 * max(0.0, 1 - x**2),
    }[name]


REMEDIES = [n for n in R.PRESETS if n.startswith("remedy_")]


def test_every_remedy_is_a_preset():
    assert REMEDIES == ["remedy_quick_fix", "remedy_option1", "remedy_option1_linear", "remedy_option2",
                        "remedy_option3_linear", "remedy_option3_square"]


@pytest.mark.parametrize("name", REMEDIES)
@pytest.mark.parametrize("err, vel_err", [(7.0, 8.4), (0.0, 0.0), (20.0, 3.0), (145.6, 100.0)])
def test_remedy_presets_give_the_diagnosis_formulas(score_fn, name, err, vel_err):
    # err = 7 over 28 coordinates: err/n = 0.25, x = 0.5 (e.g. quick fix 10·e^-0.5 = 6.0653,
    # option 3 square 10·(1 - 0.25) = 7.5); a = 0.5 everywhere: 0.01·Σa² = 0.07.
    action = np.full(NQ, 0.5, np.float32)
    total, _ = score_fn(hand_errors(joint_abs=err, joint_vel_abs=vel_err), action, R.preset(name))
    assert float(total) == pytest.approx(_remedy_by_hand(name, err, vel_err, action), rel=1e-5, abs=1e-5)


def test_remedy_hand_values_spelled_out(score_fn):
    action = np.full(NQ, 0.5, np.float32)
    errors = hand_errors(joint_abs=7.0, joint_vel_abs=8.4)
    by_hand = {"remedy_quick_fix": 6.065307, "remedy_option1": 2.865048, "remedy_option1_linear": 7.5,
               "remedy_option2": 6.065307 + 0.548812 + 1.0 - 0.07, "remedy_option3_linear": 5.0,
               "remedy_option3_square": 7.5}
    for name, value in by_hand.items():
        assert float(score_fn(errors, action, R.preset(name))[0]) == pytest.approx(value, rel=1e-5), name
    # Maxima: 10 for the single-term remedies; option 2: 10 + 1 + the alive bonus 1.
    assert [float(R.max_reward(R.preset(n))) for n in REMEDIES] == pytest.approx([10, 10, 10, 12, 10, 10])


def test_joint_velocity_error_is_the_sum_of_absolute_differences():
    ref = random_kin(9)
    sim = ref.replace(joint_vel=ref.joint_vel + np.where(np.arange(NQ) < 10, 0.3, -0.2))
    err = R.compute_errors(f32(sim), f32(ref))
    assert float(raw(err, "joint_vel_abs")) == pytest.approx(10 * 0.3 + 18 * 0.2, rel=1e-5)


# --- terms as a declared table ------------------------------------------------------------
# Every preset's terms on one fixed pair of characters, as reward.py computed them before the
# terms were declared as a table (commit 97b0a46, its compute_reward in float32): the
# restructuring changed no value. Terms not listed were 0.
TODAY = {
    "deepmimic_paper": {"pose": 0.5429256558418274, "velocity": 0.09277435392141342, "end_effector": 0.11112277954816818, "com": 0.09048374742269516, "total": 0.8373064994812012},
    "deepmimic_code": {"pose": 0.494406521320343, "velocity": 0.0497661754488945, "end_effector": 0.13916154205799103, "root": 0.1902458816766739, "com": 0.09900498390197754, "total": 0.9725850820541382},
    "original_port": {"joint_abs": 0.8187307119369507, "total": 0.8187307119369507},
    "remedy_quick_fix": {"joint_abs": 9.858158111572266, "total": 9.858158111572266},
    "remedy_option1": {"joint_abs": 9.64915943145752, "total": 9.64915943145752},
    "remedy_option1_linear": {"joint_abs": 9.928571701049805, "total": 9.928571701049805},
    "remedy_option2": {"joint_abs": 9.858158111572266, "joint_vel_abs": 0.9787994027137756, "alive": 1.0, "action_penalty": -0.025061732158064842, "total": 11.811896324157715},
    "remedy_option3_linear": {"joint_abs": 9.857142448425293, "total": 9.857142448425293},
    "remedy_option3_square": {"joint_abs": 9.99795913696289, "total": 9.99795913696289},
}


def _today_pair():
    sim = random_kin(20)
    ref = sim
    for what, amount in [("pose", 0.3), ("velocity", 0.5), ("end_effector", 0.05), ("root", 0.1), ("com", 0.1),
                         ("joint_abs", 0.2), ("joint_vel_abs", 0.3)]:
        ref = _perturb(ref, what, amount)
    return sim, ref


@pytest.mark.parametrize("name", R.PRESETS)
def test_presets_score_as_before_the_table(reward_fn, name):
    sim, ref = _today_pair()
    total, terms = reward_fn(sim, ref, np.linspace(-0.5, 0.5, NQ).astype(np.float32), R.preset(name))
    want = TODAY[name]
    for term, value in terms.items():
        assert float(value) == pytest.approx(want.get(term, 0.0), rel=1e-6, abs=1e-9), term
    assert float(total) == pytest.approx(want["total"], rel=1e-6)


def test_a_new_term_is_one_function_and_one_entry():
    # A toy term: the root height's squared error. Its entry makes its two config fields.
    toy = R.Term("root_height", lambda sim, ref: {"sq": jnp.square(sim.root_pos[2] - ref.root_pos[2])},
                 lambda raw, config: raw["sq"], "weight of the toy root-height term", "k for it, 1/m²")
    Config = R.make_reward_config(R.TERMS + (toy,))
    assert [f for f in Config.__dataclass_fields__ if f.startswith("root_height")] == [
        "root_height_weight", "root_height_scale"]
    config = Config(**{**R.config_to_dict(R.preset("deepmimic_paper")), "root_height_weight": 0.5,
                       "root_height_scale": 10.0})
    sim = random_kin(11)
    ref = sim.replace(root_pos=sim.root_pos + np.array([0.0, 0.0, 0.2]))
    total, terms = jax.jit(R.compute_reward)(f32(sim), f32(ref), ZERO_ACTION, config)
    # Only the root moved: the paper's four terms score their weights (sum 1.0); the toy term
    # 0.5·exp(-10·0.2²) = 0.5·e^-0.4 = 0.335160.
    assert float(terms["root_height"]) == pytest.approx(0.335160, rel=1e-5)
    assert float(total) == pytest.approx(1.335160, rel=1e-5)
    assert float(R.max_reward(config)) == pytest.approx(1.5)
    # Its fields are leaves like any other (a sweep vmaps them) and keep their declared range.
    stacked = R.stack_configs([config, config.replace(root_height_weight=0.0)])
    totals = jax.vmap(R.compute_reward, in_axes=(None, None, None, 0))(f32(sim), f32(ref), ZERO_ACTION, stacked)[0]
    np.testing.assert_allclose(totals, [1.335160, 1.0], rtol=1e-5)
    with pytest.raises(MimicError, match=r"reward.root_height_scale must be >= 0"):
        R.validate(config.replace(root_height_scale=-1.0))
    # The package's own reward has no such term.
    assert "root_height" not in R.TERM_NAMES and "root_height_weight" not in R.RewardConfig.__dataclass_fields__
