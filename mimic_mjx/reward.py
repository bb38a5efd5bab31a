"""DeepMimic imitation reward as declared terms with a vmappable config.

A reward is a table of terms (`TERMS`). Each `Term` is two small pure functions: `measure`,
the raw errors between the simulated and the reference character (`Kinematics`), and
`error`, which of them it scores under the config's switches. The config class is made
from the table (`make_reward_config`): a `<term>_weight` and a `<term>_scale` per term plus
the shared fields, every leaf a number, so a stack of configs (`stack_configs`) can be
`jax.vmap`-ped and one compiled program scores many variants. Adding a term is one
`measure` function and one `Term` entry.

Two stages, both pure:

* `compute_errors(sim, ref) -> Errors`: raw, config-independent errors per env and term.
  Stored rollouts keep these, so a diagnosis can re-score them under any config without
  simulating again.
* `reward_from_errors(errors, action, config) -> (total, terms)`: each term is
  ``output_scale * weight * f(scale * err)`` with ``f`` chosen by the config's `form`.

Sources: Peng et al. 2018, "DeepMimic", Sec. 5 eq. 6-10 (the paper), and the released
code, xbpeng/DeepMimic DeepMimicCore/scenes/SceneImitate.cpp, cSceneImitate::
CalcRewardImitate (commit 60ebe88, lines 9-29 and 66-121), with per-joint errors from
anim/KinTree.cpp CalcPoseErr/CalcVelErr and joint weights from CalcJointWeights.
Units: angles rad, positions m, velocities m/s and rad/s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mimic_mjx import config as cfglib
from mimic_mjx import model as model_lib
from mimic_mjx import quaternion
from mimic_mjx.errors import MimicError

# DeepMimic's 12 tracked joints and their skeleton "DiffWeight"s, from the model module
# (humanoid3d.txt is their source).
JOINT_NAMES = model_lib.JOINTS
JOINT_DIFF_WEIGHTS = np.array(model_lib.DIFF_WEIGHTS)
# Root "DiffWeight" (humanoid3d.txt line 25); the two wrists have 0 (lines 184, 301).
ROOT_DIFF_WEIGHT = 1.0
# cSceneImitate::CalcJointWeights divides every DiffWeight by their L1 norm over all 15
# joints (root + 12 + wrists) = 1 + 3.8 = 4.8; bullet3's port hard-codes the same
# quotients (0.20833 = 1/4.8, 0.10416 = 0.5/4.8, ...) in humanoid_stable_pd.py getReward.
_DIFF_WEIGHT_SUM = ROOT_DIFF_WEIGHT + float(JOINT_DIFF_WEIGHTS.sum())
# root_err = pos + 0.1 rot + 0.01 linvel + 0.001 angvel (SceneImitate.cpp lines 111-114).
ROOT_POS_W, ROOT_ROT_W, ROOT_LINVEL_W, ROOT_ANGVEL_W = 1.0, 0.1, 0.01, 0.001

FORM_EXP, FORM_LINEAR, FORM_QUADRATIC, FORM_ONE_MINUS_SQUARE = 0, 1, 2, 3
FORM_NAMES = {FORM_EXP: "exp(-x)", FORM_LINEAR: "max(0, 1-x)", FORM_QUADRATIC: "max(0, 1-x)^2",
              FORM_ONE_MINUS_SQUARE: "max(0, 1-x^2)"}


@flax.struct.dataclass
class Kinematics:
    """One character's state as the reward sees it (one env; vmap over the batch)."""

    joint_quat: jax.Array  # [J, 4] local rotation of each joint w.r.t. its parent, w-x-y-z, J = 12
    joint_angvel: jax.Array  # [J, 3] child-body angular velocity relative to parent, child frame, rad/s
    joint_pos: jax.Array  # [28] the model's hinge coordinates, rad (what the failed port compared)
    joint_vel: jax.Array  # [28] their velocities, rad/s (the seed diagnosis's option 2 compares these)
    # [E, 3] ankles and wrists (E = 4) in the root's heading frame, m: horizontal offsets from
    # the root, and height above the floor as in SceneImitate.cpp (lines 86-89).
    end_effectors: jax.Array
    root_pos: jax.Array  # [3] world, m (z up)
    root_quat: jax.Array  # [4] world, w-x-y-z
    root_linvel: jax.Array  # [3] world, m/s
    root_angvel: jax.Array  # [3] world, rad/s
    com_pos: jax.Array  # [3] world centre of mass, m
    com_vel: jax.Array  # [3] world centre-of-mass velocity, m/s


# A raw error record: term name -> that term's config-independent errors, each a scalar
# ([B] when vmapped), e.g. errors["pose"]["sum"]. Stored rollouts keep it, so a diagnosis can
# re-score them under any config without simulating again.
Errors = dict


def _safe_norm(v: jax.Array) -> jax.Array:
    """|v| over the last axis, with a finite (zero) gradient at v = 0."""
    sq = jnp.sum(v * v, axis=-1)
    pos = sq > 0.0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def quat_diff_angle(q0: jax.Array, q1: jax.Array) -> jax.Array:
    """Rotation angle in [0, π] of q0⁻¹ q1 for w-x-y-z quaternions [..., 4] -> [...].

    2·atan2(|v|, |w|) handles the double cover (q and −q give the same angle), needs no
    unit norm, and equals the angle of the code's q1 q0⁻¹ (cMathUtil::QuatDiff). Unlike
    `quaternion.angle` it has a finite gradient at zero error (sim == ref).
    """
    dq = quaternion.mul(quaternion.conj(q0), q1)
    w, v = dq[..., 0], dq[..., 1:]
    return 2.0 * jnp.arctan2(_safe_norm(v), jnp.abs(w))


def _sq(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(a - b), axis=-1)


def _count(n: int, like: jax.Array) -> jax.Array:
    return jnp.asarray(n, like.dtype)


def _per_count(raw: dict, config) -> jax.Array:
    """raw["sum"], divided by raw["count"] when normalize_per_joint = 1."""
    return raw["sum"] / jnp.where(config.normalize_per_joint > 0.5, raw["count"], 1.0)


def _weighted_or_mean(raw: dict, config) -> jax.Array:
    """The code's DiffWeight/4.8 sum (already a weighted mean, Σŵ = 1) or the paper's sum."""
    return jnp.where(config.joint_weighting > 0.5, raw["weighted"], _per_count(raw, config))


# ----------------------------------------------------------------------------- the terms
# Each term measures raw errors between the simulated and the reference character and says
# which of them it scores under a config's switches. The term's reward is
# output_scale · weight · f(scale · error), f the config's `form`; its weight and scale are
# the config fields `<name>_weight` and `<name>_scale`, made from this table.
def _pose(sim: Kinematics, ref: Kinematics) -> dict:
    # Code: pose_err = ŵ_root θ_root² + Σ_j ŵ_j θ_j² (SceneImitate.cpp lines 66-75); paper eq. 7: Σ_j θ_j².
    theta_sq = jnp.square(quat_diff_angle(sim.joint_quat, ref.joint_quat))  # [J]
    root_rot = jnp.square(quat_diff_angle(sim.root_quat, ref.root_quat))
    w_joint = jnp.asarray(JOINT_DIFF_WEIGHTS / _DIFF_WEIGHT_SUM, dtype=theta_sq.dtype)
    return {"weighted": ROOT_DIFF_WEIGHT / _DIFF_WEIGHT_SUM * root_rot + jnp.sum(w_joint * theta_sq),
            "sum": jnp.sum(theta_sq), "count": _count(theta_sq.shape[0], theta_sq)}


def _velocity(sim: Kinematics, ref: Kinematics) -> dict:
    # The same two sums over |Δω|² (code: vel_err, with the root's angular velocity; paper eq. 8).
    omega_sq = _sq(sim.joint_angvel, ref.joint_angvel)  # [J]
    root_angvel = _sq(sim.root_angvel, ref.root_angvel)
    w_joint = jnp.asarray(JOINT_DIFF_WEIGHTS / _DIFF_WEIGHT_SUM, dtype=omega_sq.dtype)
    return {"weighted": ROOT_DIFF_WEIGHT / _DIFF_WEIGHT_SUM * root_angvel + jnp.sum(w_joint * omega_sq),
            "sum": jnp.sum(omega_sq), "count": _count(omega_sq.shape[0], omega_sq)}


def _end_effector(sim: Kinematics, ref: Kinematics) -> dict:
    # Σ_e |Δp_e|² over the E end effectors (paper eq. 9).
    d = _sq(sim.end_effectors, ref.end_effectors)
    return {"sum": jnp.sum(d), "count": _count(d.shape[0], d)}


def _root(sim: Kinematics, ref: Kinematics) -> dict:
    # root_err = pos + 0.1 rot + 0.01 linvel + 0.001 angvel (SceneImitate.cpp lines 111-114).
    parts = {"pos": _sq(sim.root_pos, ref.root_pos),
             "rot": jnp.square(quat_diff_angle(sim.root_quat, ref.root_quat)),
             "linvel": _sq(sim.root_linvel, ref.root_linvel),
             "angvel": _sq(sim.root_angvel, ref.root_angvel)}
    mixed = (ROOT_POS_W * parts["pos"] + ROOT_ROT_W * parts["rot"]
             + ROOT_LINVEL_W * parts["linvel"] + ROOT_ANGVEL_W * parts["angvel"])
    return {"mixed": mixed, **parts}


def _com(sim: Kinematics, ref: Kinematics) -> dict:
    # |Δ COM position|² (paper eq. 10) and |Δ COM velocity|² (the code's, times 0.1 in its scale).
    return {"pos": _sq(sim.com_pos, ref.com_pos), "vel": _sq(sim.com_vel, ref.com_vel)}


def _joint_abs(sim: Kinematics, ref: Kinematics) -> dict:
    # Σ over the 28 coordinates of |Δq| (the failed port's error).
    d = jnp.abs(sim.joint_pos - ref.joint_pos)
    return {"sum": jnp.sum(d), "count": _count(d.shape[0], d)}


def _joint_vel_abs(sim: Kinematics, ref: Kinematics) -> dict:
    # Σ over the 28 coordinates of |Δq̇| (the seed diagnosis's option 2).
    d = jnp.abs(sim.joint_vel - ref.joint_vel)
    return {"sum": jnp.sum(d), "count": _count(d.shape[0], d)}


@dataclasses.dataclass(frozen=True)
class Term:
    """One tracking term of the reward: `measure(sim, ref)` gives its raw errors (a dict of
    scalars, config-independent), `error(raw, config)` the one it scores. Both pure."""

    name: str
    measure: Callable[[Kinematics, Kinematics], dict]
    error: Callable[[dict, Any], jax.Array]
    weight_doc: str
    scale_doc: str


TERMS = (
    Term("pose", _pose, _weighted_or_mean, "weight of the joint-orientation term", "k in f(k * pose error), 1/rad²"),
    Term("velocity", _velocity, _weighted_or_mean, "weight of the joint angular-velocity term",
         "k for the velocity error, s²/rad²"),
    Term("end_effector", _end_effector, _per_count, "weight of the end-effector position term",
         "k for the end-effector error (a sum over E), 1/m²"),
    Term("root", _root, lambda raw, config: raw["mixed"], "weight of the root pos/rot/vel term (released code only)",
         "k for the mixed root error"),
    Term("com", _com, lambda raw, config: jnp.where(config.com_source > 0.5, raw["vel"], raw["pos"]),
         "weight of the centre-of-mass term", "k for the COM error (position: 1/m², velocity: s²/m²)"),
    Term("joint_abs", _joint_abs, _per_count, "weight of the failed port's Σ|Δq| term", "k for Σ|Δq|, 1/rad"),
    Term("joint_vel_abs", _joint_vel_abs, _per_count, "weight of the Σ|Δq̇| term over the 28 joint coordinates",
         "k for Σ|Δq̇|, s/rad"),
)
TERM_NAMES = tuple(t.name for t in TERMS)

# What every term shares: the shape f, the switches some terms read, the scale of the whole
# and the two non-tracking parts. A weight or scale of 0 turns its term off or makes it constant.
_SHARED_FIELDS = {
    "form": cfglib.field(
        0.0, "f for every term: 0 exp(-x), 1 max(0, 1-x), 2 max(0, 1-x)², 3 max(0, 1-x²); each is 1 at x = 0",
        choices=(FORM_EXP, FORM_LINEAR, FORM_QUADRATIC, FORM_ONE_MINUS_SQUARE)),
    "joint_weighting": cfglib.field(
        0.0, "0: unweighted sums over the 12 joints (paper); 1: DiffWeight/4.8 incl. root (code)", choices=(0, 1)),
    "com_source": cfglib.field(
        0.0, "0: COM position error (paper r_c); 1: COM velocity error (code)", choices=(0, 1)),
    "normalize_per_joint": cfglib.field(
        0.0, "1: divide the unweighted joint, end-effector, Σ|Δq| and Σ|Δq̇| sums by their counts", choices=(0, 1)),
    "output_scale": cfglib.field(1.0, "multiplies every tracking term (not alive_bonus or action_penalty)", ge=0),
    # Any sign: a negative bonus is a per-step cost.
    "alive_bonus": cfglib.field(0.0, "added to the reward each step"),
    "action_penalty": cfglib.field(0.0, "coefficient on mean(action²), subtracted", ge=0),
}


def make_reward_config(terms: tuple[Term, ...]) -> type:
    """The config class of a reward made of `terms`: `<name>_weight` and `<name>_scale` per
    term, then the shared fields; every leaf a number (vmappable). `TERMS` on the class is
    the table, so scoring needs only a config."""
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise MimicError(f"reward terms must have distinct names, got {names}")
    namespace = {"__module__": __name__, "__annotations__": {}, "TERMS": tuple(terms)}
    for t in terms:
        for suffix, doc in (("weight", t.weight_doc), ("scale", t.scale_doc)):
            namespace["__annotations__"][f"{t.name}_{suffix}"] = float
            namespace[f"{t.name}_{suffix}"] = cfglib.field(0.0, doc, ge=0)
    for key, declared in _SHARED_FIELDS.items():
        namespace["__annotations__"][key] = float
        namespace[key] = declared
    namespace["from_preset"] = classmethod(lambda cls, name: preset(name))
    namespace["preset_names"] = classmethod(lambda cls: PRESETS)
    namespace["__doc__"] = (
        "Weights, scales and switches of the reward; every leaf is a number (vmappable).\n\n"
        "In a config file this is the `reward:` section: `preset` (one of PRESETS) gives every field the\n"
        "section does not set, e.g. `reward: {preset: deepmimic_code, pose_scale: 3}`. Terms: "
        + ", ".join(names) + ".")
    return flax.struct.dataclass(type("RewardConfig", (), namespace))


RewardConfig = make_reward_config(TERMS)
_FIELDS = tuple(RewardConfig.__dataclass_fields__)
# Below this fraction of its maximum per step a reward gives no learning signal; one
# threshold for `diagnose`'s warning and the trainer's alarm. Measured on walk (docs/guide.md,
# `mimic-mjx diagnose`): the failed port's exp(-Σ|Δq|) gives the random policy 2.6e-3 and
# the zero policy 9.2e-3 of its maximum, deepmimic_paper gives them 8.6e-2 and 0.11. 1e-2
# flags the reward that killed the port under both policies, where 1e-3 flags neither, and
# stays 8x below the healthy preset's worst policy.
VANISHING_FRACTION = 1e-2


def compute_errors(sim: Kinematics, ref: Kinematics, terms: tuple[Term, ...] = TERMS) -> Errors:
    """Raw errors between the simulated and the reference character of one env, per term."""
    return {t.name: t.measure(sim, ref) for t in terms}


def _shape(form: jax.Array, x: jax.Array) -> jax.Array:
    """f(x) for x = scale·err ≥ 0: 1 at x = 0, non-increasing, in [0, 1]."""
    lin = jnp.maximum(0.0, 1.0 - x)
    # max(0, 1 - x²) is not (1 - x)²: flat at x = 0 and steeper near x = 1 (seed diagnosis, option 3).
    square = jnp.maximum(0.0, 1.0 - x * x)
    return jnp.where(form == FORM_LINEAR, lin, jnp.where(form == FORM_QUADRATIC, lin * lin,
                                                         jnp.where(form == FORM_ONE_MINUS_SQUARE, square, jnp.exp(-x))))


def term_errors(errors: Errors, config) -> dict[str, jax.Array]:
    """The error each term scores under `config` (before its scale), keyed by term name."""
    return {t.name: t.error(errors[t.name], config) for t in config.TERMS}


def reward_from_errors(errors: Errors, action: jax.Array, config) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Score raw errors: returns (total, terms); terms sum to total, logged as reward/<name>.

    terms[t] = output_scale·weight_t·f(scale_t·err_t) for each of the config's TERMS,
    terms["alive"] = alive_bonus, terms["action_penalty"] = −action_penalty·mean(action²) ≤ 0.
    Shapes: errors scalar (or [B]), action [28] (or [B, 28]); total and terms match errors.
    """
    errs = term_errors(errors, config)
    terms = {}
    for t in config.TERMS:
        weight, scale = getattr(config, f"{t.name}_weight"), getattr(config, f"{t.name}_scale")
        terms[t.name] = config.output_scale * weight * _shape(config.form, scale * errs[t.name])
    terms["alive"] = jnp.zeros_like(errs[config.TERMS[0].name]) + config.alive_bonus
    terms["action_penalty"] = -config.action_penalty * jnp.mean(jnp.square(action), axis=-1)
    total = sum(terms.values())
    return total, terms


def step_reward(
    errors: Errors, action: jax.Array, config: RewardConfig, terminated: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`reward_from_errors`, with DeepMimic's rule for a step that ends its episode by a
    failure (a fall, non-finite physics): it earns the terminal reward, 0, not the tracking
    reward, so falling never pays. This is the one place the rule lives: env.step, diagnose's
    re-scoring and evaluate's yardstick all score steps through it. Any shape of
    `reward_from_errors`; `terminated` has the errors' shape.
    """
    total, terms = reward_from_errors(errors, action, config)
    keep = ~terminated
    return jnp.where(keep, total, 0.0), {k: jnp.where(keep, v, 0.0) for k, v in terms.items()}


def compute_reward(
    sim: Kinematics, ref: Kinematics, action: jax.Array, config: RewardConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`reward_from_errors(compute_errors(sim, ref, config.TERMS), action, config)` for one env."""
    return reward_from_errors(compute_errors(sim, ref, config.TERMS), action, config)


def max_reward(config: RewardConfig) -> jax.Array:
    """Largest possible per-step total: output_scale·Σ weights + alive_bonus.

    Each f is at most 1 (at zero error) and the action penalty is ≤ 0.
    """
    weights = sum(getattr(config, f"{t.name}_weight") for t in config.TERMS)
    return config.output_scale * weights + config.alive_bonus


def min_reward(config: RewardConfig) -> jax.Array:
    """Smallest per-step total for actions in [-1, 1] (the range the env applies): every
    tracking term 0 (each f >= 0) and the full action penalty (mean(a²) <= 1). The penalty
    scores the sampled action, which exploration noise can take past ±1: a bound for value
    targets (DeepMimic's val_min), not for every sample."""
    return config.alive_bonus - config.action_penalty


# Released code: raw weights, normalised by their sum (SceneImitate.cpp lines 9-19); they
# already sum to 1.0, so the normalisation changes nothing.
_CODE_W = {"pose": 0.5, "velocity": 0.05, "end_effector": 0.15, "root": 0.2, "com": 0.1}
_CODE_W_SUM = math.fsum(_CODE_W.values())  # exactly 1.0; plain sum() gives 1.0000000000000002


def _deepmimic_paper() -> RewardConfig:
    """Peng et al. 2018 Sec. 5 eq. 6-10: r = 0.65 r_p + 0.1 r_v + 0.15 r_e + 0.1 r_c."""
    return RewardConfig(
        pose_weight=0.65, pose_scale=2.0,  # eq. 6, 7
        velocity_weight=0.1, velocity_scale=0.1,  # eq. 6, 8
        end_effector_weight=0.15, end_effector_scale=40.0,  # eq. 6, 9 (sum over end effectors)
        com_weight=0.1, com_scale=10.0,  # eq. 6, 10 (COM position)
        joint_weighting=0.0, com_source=0.0,  # the paper's sums are unweighted; r_c on position
    )


def _deepmimic_code() -> RewardConfig:
    """xbpeng/DeepMimic SceneImitate.cpp cSceneImitate::CalcRewardImitate (commit 60ebe88).

    Scales from lines 25-29: pose 2/15·num_joints and vel 0.1/15·num_joints with
    num_joints = 15 for humanoid3d (root + 12 + 2 wrists), so 2 and 0.1; end_eff 10 on the
    sum over the 4 end effectors (line 95; the 2018 release 3ca04d3 used 40 on the mean,
    the same number); root 5; com 10 on com_err = 0.1·|Δ COM velocity|² (line 115), so 1.0
    on the raw squared velocity error. Pose and velocity sums use DiffWeight/4.8 and include
    the root rotation and angular velocity (lines 66-68).
    """
    w = {k: v / _CODE_W_SUM for k, v in _CODE_W.items()}
    return RewardConfig(
        pose_weight=w["pose"], pose_scale=2.0 / 15 * 15,  # line 25, 15 joints
        velocity_weight=w["velocity"], velocity_scale=0.1 / 15 * 15,  # line 26
        end_effector_weight=w["end_effector"], end_effector_scale=10.0,  # line 27
        root_weight=w["root"], root_scale=5.0,  # line 28
        com_weight=w["com"], com_scale=10.0 * 0.1,  # lines 29 and 115
        joint_weighting=1.0, com_source=1.0,
    )


def _original_port() -> RewardConfig:
    """The failed MuJoCo port: exp(−Σ over 28 hinge coordinates of |Δq|), ≈ exp(−145)."""
    return RewardConfig(joint_abs_weight=1.0, joint_abs_scale=1.0)


# The remedies the seed diagnosis of the failed port proposed (issue 30), each exactly as
# written there, with err = Σ|q_sim - q_ref| over the n = 28 joint coordinates (the joint_abs
# error; normalize_per_joint = 1 divides it by n) and a the action vector.
def _remedy(scale: float, form: float = FORM_EXP, **more) -> Callable[[], RewardConfig]:
    return lambda: RewardConfig(joint_abs_weight=1.0, joint_abs_scale=scale, form=form, normalize_per_joint=1.0,
                                output_scale=10.0, **more)


def _remedy_option2() -> RewardConfig:
    """r = 10·exp(-2·err/n) + exp(-2·mean|v_sim - v_ref|) + 1[alive] - 0.01·Σa². Here
    output_scale multiplies both tracking terms, so the 10 is a weight; Σa² over 28 actions
    is 28·mean(a²), so the penalty coefficient on the mean is 0.28."""
    return RewardConfig(joint_abs_weight=10.0, joint_abs_scale=2.0, joint_vel_abs_weight=1.0, joint_vel_abs_scale=2.0,
                        normalize_per_joint=1.0, alive_bonus=1.0, action_penalty=0.01 * 28)


_PRESETS = {"deepmimic_paper": _deepmimic_paper, "deepmimic_code": _deepmimic_code,
            "original_port": _original_port,
            "remedy_quick_fix": _remedy(2.0),  # 10·exp(-2·err/n)
            "remedy_option1": _remedy(5.0),  # 10·exp(-5·err/n)
            "remedy_option1_linear": _remedy(1.0, FORM_LINEAR),  # 10·max(0, 1 - err/n)
            "remedy_option2": _remedy_option2,
            "remedy_option3_linear": _remedy(2.0, FORM_LINEAR),  # x = err/(0.5·n): 10·max(0, 1 - x)
            "remedy_option3_square": _remedy(2.0, FORM_ONE_MINUS_SQUARE)}  # 10·max(0, 1 - x²)
PRESETS = tuple(_PRESETS)


def preset(name: str) -> RewardConfig:
    """The named preset (see PRESETS); raises MimicError for an unknown name."""
    if name not in _PRESETS:
        raise MimicError(f"unknown reward preset {name!r} (known: {', '.join(PRESETS)})")
    return _PRESETS[name]()


def validate(config: RewardConfig) -> RewardConfig:
    """Check a concrete (unstacked or stacked) config against the ranges declared on its
    fields (finite; weights, scales and the action penalty >= 0; switches in their choices);
    raises MimicError naming the field, e.g. `reward.pose_scale must be >= 0, got -1.0`."""
    return cfglib.validate(config, prefix="reward.")


def with_overrides(config: RewardConfig, overrides: Mapping[str, float]) -> RewardConfig:
    """Replace flat fields, e.g. {"pose_scale": 3.0}; unknown or non-numeric → MimicError."""
    values = {}
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise MimicError(f"unknown reward field {key!r} (valid: {', '.join(_FIELDS)})")
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise MimicError(f"reward.{key} must be a number, got {value!r}") from None
        if math.isnan(values[key]):
            raise MimicError(f"reward.{key} must be a number, got {value!r}")
    return validate(config.replace(**values))


def config_to_dict(config: RewardConfig) -> dict[str, float | list]:
    """Plain {field: value} for printing or saving (lists for a stacked config)."""
    return cfglib.to_dict(config)


def stack_configs(configs: list[RewardConfig]) -> RewardConfig:
    """Stack configs along a new leading axis for `jax.vmap(..., in_axes=(None, None, 0))`."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *configs)
