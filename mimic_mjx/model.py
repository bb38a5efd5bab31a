"""The humanoid3d character: the MuJoCo model and the facts about it other modules rely on.

Everything here is derived from `assets/humanoid3d.xml` and DeepMimic's character files
(../shared/deepmimic/characters/humanoid3d.txt, humanoid3d_ctrl.txt), whose numbers the XML
carries. Names follow DeepMimic's joints; each DeepMimic joint is one MuJoCo body.
"""

import copy
import functools
import pathlib

import mujoco
import numpy as np

from mimic_mjx.errors import MimicError

XML_PATH = pathlib.Path(__file__).parent / "assets" / "humanoid3d.xml"

# The policy rate of DeepMimic's controller (humanoid3d_ctrl.txt "UpdateRate": 30).
CONTROL_HZ = 30.0

# DeepMimic's non-root joints, in its clip order (../shared/deepmimic/README.md); each is the
# MuJoCo body of the same name. Spherical joints are 3 hinges `<name>_x/_y/_z`.
JOINTS = (
    "chest", "neck",
    "right_hip", "right_knee", "right_ankle", "right_shoulder", "right_elbow",
    "left_hip", "left_knee", "left_ankle", "left_shoulder", "left_elbow",
)  # fmt: skip
SPHERICAL = frozenset(
    {"chest", "neck", "right_hip", "right_ankle", "right_shoulder", "left_hip", "left_ankle", "left_shoulder"}
)
# Skeleton "DiffWeight" of each joint in JOINTS: its weight in the pose and velocity rewards.
DIFF_WEIGHTS = (0.5, 0.3, 0.5, 0.3, 0.2, 0.3, 0.2, 0.5, 0.3, 0.2, 0.3, 0.2)
# Skeleton "IsEndEffector" == 1: the ankles and the (fixed) wrists.
END_EFFECTORS = ("right_ankle", "right_wrist", "left_ankle", "left_wrist")
# The bodies allowed to touch the floor without it counting as a fall (env.py's default
# early termination: any other body touching the floor ends the episode).
FEET = ("right_ankle", "left_ankle")
# Also allowed to touch the floor where a clip puts its hands down (cartwheel).
HANDS = ("right_wrist", "left_wrist")


@functools.lru_cache(maxsize=None)
def _load(control: str) -> mujoco.MjModel:
    model = mujoco.MjModel.from_xml_path(str(XML_PATH))
    if control == "torque":
        # Same actuators as plain motors: ctrl in [-1, 1] scaled to the joint's torque limit,
        # which is the control the original DeepMimic-on-MuJoCo port used.
        limit = model.actuator_forcerange[:, 1].copy()
        model.actuator_gainprm[:] = 0.0
        model.actuator_biasprm[:] = 0.0
        model.actuator_gainprm[:, 0] = limit
        model.actuator_ctrlrange[:] = np.array([-1.0, 1.0])
    return model


def load_model(control: str = "pd") -> mujoco.MjModel:
    """The humanoid3d `mujoco.MjModel` that clip `qpos` arrays belong to.

    Args:
      control: "pd" (position actuators with DeepMimic's Kp/Kd; ctrl is a target angle) or
        "torque" (ctrl in [-1, 1] times the joint's torque limit).
    """
    if control not in ("pd", "torque"):
        raise MimicError(f"unknown control mode '{control}' (known: pd, torque)")
    model = _load(control)
    # Callers may edit their model; hand out copies so the cache stays pristine.
    return copy.copy(model)


def substeps(model: mujoco.MjModel) -> int:
    """Physics steps per 30 Hz control step."""
    n = round(1.0 / (CONTROL_HZ * model.opt.timestep))
    if abs(n * model.opt.timestep * CONTROL_HZ - 1.0) > 1e-6:
        raise MimicError(f"timestep {model.opt.timestep} does not divide the {CONTROL_HZ} Hz control period")
    return n


def body_ids(model: mujoco.MjModel, names) -> np.ndarray:
    return np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n) for n in names])


def hinge_names(joint: str) -> tuple[str, ...]:
    """The MuJoCo hinge joints that make DeepMimic joint `joint`, outermost first."""
    return tuple(f"{joint}_{a}" for a in "xyz") if joint in SPHERICAL else (joint,)


def hinge_qpos_index(model: mujoco.MjModel, name: str) -> int:
    jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    return int(model.jnt_qposadr[jid])
