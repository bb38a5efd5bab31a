"""Reference motion: DeepMimic clips converted to this project's humanoid3d model.

A clip file (format: ../shared/deepmimic/README.md) is JSON with "Loop" and "Frames"; each
frame is 44 numbers in DeepMimic's Y-up world. `load_clip` validates it, converts every frame to
this model's `qpos` (Z-up, w-x-y-z root quaternion, hinge angles in model order), derives
`qvel` by forward differences, and runs MuJoCo forward kinematics for the end effectors, the
centre of mass and each frame's lowest point. `sample` evaluates the clip at any time inside
`jit`: linear interpolation, slerp for the root rotation, and for looping clips a root that
keeps moving cycle after cycle.
"""

import dataclasses
import json
import math
import pathlib

import flax.struct
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mimic_mjx import clipstore
from mimic_mjx import model as model_lib
from mimic_mjx import quaternion as quat
from mimic_mjx.errors import MimicError

# The 44 numbers of a frame, in order (../shared/deepmimic/README.md).
FRAME_FIELDS = (
    ("dt", 1), ("root_position", 3), ("root_rotation", 4),
    ("chest", 4), ("neck", 4),
    ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4), ("right_shoulder", 4), ("right_elbow", 1),
    ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)  # fmt: skip
FRAME_SIZE = sum(n for _, n in FRAME_FIELDS)  # 44
_OFFSETS = {}
_o = 0
for _name, _n in FRAME_FIELDS:
    _OFFSETS[_name] = (_o, _n)
    _o += _n


def yup_to_zup(v):
    """DeepMimic (x fwd, y up, z right) vectors [..., 3] to MuJoCo (x fwd, y left, z up)."""
    v = np.asarray(v)
    return np.stack([v[..., 0], -v[..., 2], v[..., 1]], axis=-1)


def yup_to_zup_quat(q):
    """The same change of frame for rotation quaternions [..., 4] (w-x-y-z)."""
    q = np.asarray(q)
    return np.concatenate([q[..., :1], yup_to_zup(q[..., 1:])], axis=-1)


def euler_xyz(q):
    """Angles (a, b, c) [..., 3] with R(q) = Rx(a) Ry(b) Rz(c): the 3 hinges of a spherical joint.

    Works in DeepMimic's own frame: the hinges rotate about DeepMimic's x, y, z axes.
    """
    r = np.asarray(quat.to_matrix(q))
    b = np.arcsin(np.clip(r[..., 0, 2], -1.0, 1.0))
    a = np.arctan2(-r[..., 1, 2], r[..., 2, 2])
    c = np.arctan2(-r[..., 0, 1], r[..., 0, 0])
    return np.stack([a, b, c], axis=-1)


def parse_clip_file(path: pathlib.Path) -> tuple[bool, np.ndarray]:
    """Read and validate a clip file: returns (loop, frames [T, 44]). Errors name file and frame."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise MimicError(f"{path}: not a clip file (its bytes are not UTF-8 text; a clip is JSON)") from None
    except FileNotFoundError:
        raise MimicError(f"{path}: clip file not found") from None
    except OSError as e:
        raise MimicError(f"{path}: cannot read clip file: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MimicError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise MimicError(f"{path}: expected a JSON object with 'Loop' and 'Frames'")
    loop = data.get("Loop", "none")
    if loop not in ("wrap", "none"):
        raise MimicError(f"{path}: field 'Loop' must be \"wrap\" or \"none\", got {loop!r}")
    frames = data.get("Frames")
    if not isinstance(frames, list):
        raise MimicError(f"{path}: field 'Frames' missing or not a list")
    if len(frames) < 2:
        raise MimicError(f"{path}: field 'Frames' has {len(frames)} frame(s); a clip needs at least 2")
    for i, frame in enumerate(frames):
        if not isinstance(frame, list) or len(frame) != FRAME_SIZE:
            n = len(frame) if isinstance(frame, list) else type(frame).__name__
            raise MimicError(f"{path}: frame {i} has {n} numbers, expected {FRAME_SIZE}")
        for k, x in enumerate(frame):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise MimicError(f"{path}: frame {i}, number {k} is not a number: {x!r}")
    arr = np.asarray(frames, dtype=np.float64)
    for i in range(arr.shape[0]):
        for name, (o, n) in _OFFSETS.items():
            values = arr[i, o : o + n]
            if not np.all(np.isfinite(values)):
                raise MimicError(f"{path}: frame {i}, field '{name}' is not finite")
            if n == 4 and np.linalg.norm(values) < 1e-8:
                raise MimicError(f"{path}: frame {i}, field '{name}' is a zero quaternion")
        # The last frame's dt is unused (it ends the clip) and is 0 in most DeepMimic files.
        if i < arr.shape[0] - 1 and arr[i, 0] <= 0:
            raise MimicError(f"{path}: frame {i}, field 'dt' = {arr[i, 0]} must be > 0")
    return loop == "wrap", arr


def frames_to_qpos(model: mujoco.MjModel, frames: np.ndarray) -> np.ndarray:
    """Convert DeepMimic frames [T, 44] to this model's qpos [T, nq]."""
    t = frames.shape[0]
    qpos = np.zeros((t, model.nq))
    o, _ = _OFFSETS["root_position"]
    qpos[:, 0:3] = yup_to_zup(frames[:, o : o + 3])
    o, _ = _OFFSETS["root_rotation"]
    qpos[:, 3:7] = np.asarray(quat.normalize(yup_to_zup_quat(frames[:, o : o + 4])))
    for joint in model_lib.JOINTS:
        o, n = _OFFSETS[joint]
        if n == 4:
            q = np.asarray(quat.normalize(frames[:, o : o + 4]))
            angles = euler_xyz(q)
        else:
            angles = frames[:, o : o + 1]
        for k, hinge in enumerate(model_lib.hinge_names(joint)):
            qpos[:, model_lib.hinge_qpos_index(model, hinge)] = _continuous(angles[:, k])
    return qpos


def _continuous(angle: np.ndarray) -> np.ndarray:
    """Remove 2*pi jumps along time, then centre the series in [-pi, pi) on average."""
    a = np.unwrap(angle)
    return a - 2 * np.pi * np.round(np.mean(a) / (2 * np.pi))


def finite_difference_qvel(qpos: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Forward differences qvel[t] = (qpos[t+1] - qpos[t]) / dt[t], [T, nv].

    MuJoCo's free joint convention: linear velocity in the world frame, angular velocity in
    the body frame, so q[t+1] = q[t] ⊗ exp(ω dt). The last frame repeats the previous one.
    """
    d = dt[:-1, None]
    qvel = np.zeros((qpos.shape[0], qpos.shape[1] - 1))
    qvel[:-1, 0:3] = (qpos[1:, 0:3] - qpos[:-1, 0:3]) / d
    rel = quat.mul(quat.conj(qpos[:-1, 3:7]), qpos[1:, 3:7])
    qvel[:-1, 3:6] = np.asarray(quat.log(rel)) / d
    qvel[:-1, 6:] = (qpos[1:, 7:] - qpos[:-1, 7:]) / d
    qvel[-1] = qvel[-2]
    return qvel


# How the reference velocity between two frames is taken from the clip's poses. "forward": the
# forward difference of the frame, the exact derivative of the linearly interpolated pose, but
# at a frame it is the velocity half a frame later (a smooth tracker's velocity error there is
# Σ|Δω|² ≈ 7 on walk, DeepMimic's velocity term exp(-0.1·7) ≈ 0.5). "central": velocities at
# the frames by central differences, linearly interpolated between frames: exact for a pose
# that is quadratic in time, at the frames and half-way between them.
REFERENCE_VELOCITY = ("forward", "central")


def frame_velocities(qvel: np.ndarray, frame_times: np.ndarray, loop: bool, cycle_yaw: float) -> np.ndarray:
    """Velocities [T, nv] at the frames from forward differences `qvel` (`finite_difference_qvel`).

    Frame k gets the average of the segments before and after it, weighted by the other's
    duration (the central difference of a quadratic). The first and last frame of a clip that
    does not loop keep their one segment; a looping clip's ends take the neighbouring cycle's
    segment, whose world-frame root velocity is turned by the cycle's heading change.
    """
    h = np.diff(frame_times)  # [T-1] segment durations
    seg = qvel[:-1]  # [T-1] the forward difference of each segment
    out = np.empty_like(qvel)
    out[1:-1] = (seg[:-1] * h[1:, None] + seg[1:] * h[:-1, None]) / (h[:-1, None] + h[1:, None])
    out[0], out[-1] = seg[0], seg[-1]
    if loop:
        def turned(v, yaw):  # the root's world-frame linear velocity turned by yaw, as `sample` does
            return np.concatenate([quat.rotate(quat.yaw_quat(np.float64(yaw)), v[0:3]), v[3:]])

        before, after = turned(seg[-1], -cycle_yaw), turned(seg[0], cycle_yaw)  # previous cycle's last, next's first
        out[0] = (before * h[0] + seg[0] * h[-1]) / (h[0] + h[-1])
        out[-1] = (seg[-1] * h[0] + after * h[-1]) / (h[0] + h[-1])
    return out


@flax.struct.dataclass
class ClipArrays:
    """A clip as device arrays, for sampling inside jit. T frames."""

    qpos: jax.Array  # [T, nq]
    qvel: jax.Array  # [T, nv]
    frame_times: jax.Array  # [T] seconds, frame_times[0] = 0
    lowest_point: jax.Array  # [T] lowest geom point (m, world z); < 0 means under the floor
    cycle_shift: jax.Array  # [2] horizontal root displacement of one cycle (frame 0 -> last)
    cycle_yaw: jax.Array  # [] heading change of one cycle (rad)
    loop: bool = flax.struct.field(pytree_node=False)
    # [T, nv] velocities at the frames, interpolated linearly by `sample` ("central" in
    # REFERENCE_VELOCITY); None: each frame's forward difference `qvel` held across it ("forward").
    frame_qvel: jax.Array | None = None

    @property
    def duration(self):
        return self.frame_times[-1]


@dataclasses.dataclass(frozen=True)
class Clip:
    """A reference motion for `model.load_model()`; T frames, numpy arrays."""

    name: str
    path: pathlib.Path
    loop: bool
    frame_times: np.ndarray  # [T] s
    qpos: np.ndarray  # [T, nq]
    qvel: np.ndarray  # [T, nv]
    end_effectors: np.ndarray  # [T, 4, 3] world positions of model.END_EFFECTORS bodies
    com: np.ndarray  # [T, 3] world centre of mass
    lowest_point: np.ndarray  # [T] lowest geom point, world z (m)
    lowest_body: tuple  # [T] name of the body owning that point

    @property
    def duration(self) -> float:
        return float(self.frame_times[-1])

    @property
    def num_frames(self) -> int:
        return int(self.qpos.shape[0])

    def arrays(self, velocity: str = "forward") -> ClipArrays:
        """Device arrays for `sample`; `velocity` one of REFERENCE_VELOCITY."""
        if velocity not in REFERENCE_VELOCITY:
            raise MimicError(f"reference velocity must be one of {', '.join(REFERENCE_VELOCITY)}, got {velocity!r}")
        shift = self.qpos[-1, 0:2] - self.qpos[0, 0:2]
        dyaw = float(quat.yaw(self.qpos[-1, 3:7]) - quat.yaw(self.qpos[0, 3:7]))
        dyaw = math.atan2(math.sin(dyaw), math.cos(dyaw))
        f = lambda x: jnp.asarray(x, dtype=jnp.float32)  # noqa: E731
        return ClipArrays(
            qpos=f(self.qpos),
            qvel=f(self.qvel),
            frame_times=f(self.frame_times),
            lowest_point=f(self.lowest_point),
            cycle_shift=f(shift if self.loop else np.zeros(2)),
            cycle_yaw=f(dyaw if self.loop else 0.0),
            loop=self.loop,
            frame_qvel=f(frame_velocities(self.qvel, self.frame_times, self.loop, dyaw)) if velocity == "central" else None,
        )


def load_clip(name_or_path: str) -> Clip:
    """Load a DeepMimic clip by name (`walk`) or path; see `clipstore.find_clip` for the lookup."""
    path = clipstore.find_clip(str(name_or_path))
    loop, frames = parse_clip_file(path)
    model = model_lib.load_model()
    qpos = frames_to_qpos(model, frames)
    frame_times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])
    qvel = finite_difference_qvel(qpos, frames[:, 0])
    ee, com, low, low_body = forward_kinematics(model, qpos)
    return Clip(
        name=clipstore.clip_name(path),
        path=path,
        loop=loop,
        frame_times=frame_times,
        qpos=qpos,
        qvel=qvel,
        end_effectors=ee,
        com=com,
        lowest_point=low,
        lowest_body=low_body,
    )


def geom_lowest_z(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Lowest world z of every geom [ngeom] after kinematics (spheres, capsules, boxes, planes)."""
    z = data.geom_xpos[:, 2]
    size = model.geom_size
    rz = data.geom_xmat.reshape(-1, 3, 3)[:, 2, :]  # world z of each local axis
    low = np.full(model.ngeom, np.inf)
    t = model.geom_type
    sphere = t == mujoco.mjtGeom.mjGEOM_SPHERE
    low[sphere] = z[sphere] - size[sphere, 0]
    cap = t == mujoco.mjtGeom.mjGEOM_CAPSULE
    low[cap] = z[cap] - np.abs(rz[cap, 2]) * size[cap, 1] - size[cap, 0]
    box = t == mujoco.mjtGeom.mjGEOM_BOX
    low[box] = z[box] - np.sum(np.abs(rz[box]) * size[box], axis=1)
    return low


def forward_kinematics(model: mujoco.MjModel, qpos: np.ndarray):
    """End effectors [T,4,3], COM [T,3], lowest point [T] and its body for each frame."""
    data = mujoco.MjData(model)
    ee_ids = model_lib.body_ids(model, model_lib.END_EFFECTORS)
    root = model_lib.body_ids(model, ["root"])[0]
    body_geoms = model.geom_bodyid > 0
    ee, com, low, low_body = [], [], [], []
    for q in qpos:
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        ee.append(data.xpos[ee_ids].copy())
        com.append(data.subtree_com[root].copy())
        z = np.where(body_geoms, geom_lowest_z(model, data), np.inf)
        g = int(np.argmin(z))
        low.append(z[g])
        low_body.append(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g]))
    return np.array(ee), np.array(com), np.array(low), tuple(low_body)


def _cycle_transform(arr: ClipArrays, cycles):
    """Heading quaternion and horizontal offset that carry cycle 0 to cycle `cycles`.

    One cycle maps the root's horizontal position z (as a complex number) by
    M(z) = e^{iΔ}(z − z0) + zT. Applying it c times gives
    e^{icΔ}(z − z0) + z0 + d·S_c with d = zT − z0 and S_c = Σ_{k<c} e^{ikΔ}
    = e^{i(c−1)Δ/2} sin(cΔ/2)/sin(Δ/2), which tends to c as Δ → 0.
    """
    dyaw = arr.cycle_yaw
    half = 0.5 * dyaw
    small = jnp.abs(jnp.sin(half)) < 1e-6
    mag = jnp.where(small, cycles, jnp.sin(cycles * half) / jnp.where(small, 1.0, jnp.sin(half)))
    ang = (cycles - 1) * half
    d = arr.cycle_shift
    s = mag * jnp.stack([jnp.cos(ang) * d[0] - jnp.sin(ang) * d[1], jnp.sin(ang) * d[0] + jnp.cos(ang) * d[1]])
    return cycles * dyaw, s


def sample(arr: ClipArrays, t):
    """Reference (qpos [nq], qvel [nv], lowest_point []) at time t (s); jit-able, scalar t.

    Looping clips continue past their end with the root carried by the cycle's displacement
    and heading change; non-looping clips hold their last frame (with zero velocity).
    """
    duration = arr.frame_times[-1]
    if arr.loop:
        cycles = jnp.floor(t / duration)
        tau = t - cycles * duration
    else:
        cycles = jnp.zeros_like(t)
        tau = jnp.clip(t, 0.0, duration)
    n = arr.frame_times.shape[0]
    i = jnp.clip(jnp.searchsorted(arr.frame_times, tau, side="right", method="compare_all") - 1, 0, n - 2)
    t0, t1 = arr.frame_times[i], arr.frame_times[i + 1]
    a = jnp.clip((tau - t0) / (t1 - t0), 0.0, 1.0)
    q0, q1 = arr.qpos[i], arr.qpos[i + 1]
    qpos = q0 + a * (q1 - q0)
    qpos = qpos.at[3:7].set(quat.slerp(q0[3:7], q1[3:7], a))
    if arr.frame_qvel is not None:  # central
        qvel = arr.frame_qvel[i] + a * (arr.frame_qvel[i + 1] - arr.frame_qvel[i])
    else:  # forward: the exact derivative of this piecewise-linear pose
        qvel = arr.qvel[i]
    if not arr.loop:
        qvel = jnp.where(t >= duration, jnp.zeros_like(qvel), qvel)
    low = arr.lowest_point[i] + a * (arr.lowest_point[i + 1] - arr.lowest_point[i])

    yaw, shift = _cycle_transform(arr, cycles)
    rot = quat.yaw_quat(yaw)
    origin = arr.qpos[0, 0:2]
    xy = quat.rotate(rot, jnp.concatenate([qpos[0:2] - origin, jnp.zeros(1)]))[:2] + origin + shift
    qpos = qpos.at[0:2].set(xy).at[3:7].set(quat.mul(rot, qpos[3:7]))
    qvel = qvel.at[0:3].set(quat.rotate(rot, qvel[0:3]))
    return qpos, qvel, low


def integrate_qvel(qpos0: np.ndarray, qvel: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Integrate qvel [T, nv] from qpos0 with steps dt [T] (MuJoCo's free-joint convention)."""
    steps = quat.exp(qvel[:, 3:6] * dt[:, None])
    out = [np.asarray(qpos0, dtype=np.float64)]
    for t in range(qvel.shape[0] - 1):
        q = out[-1].copy()
        q[0:3] += qvel[t, 0:3] * dt[t]
        q[3:7] = quat.mul(q[3:7], steps[t])
        q[7:] += qvel[t, 6:] * dt[t]
        out.append(q)
    return np.array(out)


def check_clip(clip: Clip) -> dict:
    """Validate a loaded clip against the model; returns a JSON-able report.

    `ok` is False only when the conversion itself is wrong: a joint's rotation rebuilt by
    forward kinematics from the hinge angles differs from the clip's quaternion, or qvel does
    not integrate back to qpos. Floor penetration and joint-range excursions are properties
    of the mocap: reported, never "fixed".
    """
    model = model_lib.load_model()
    _, frames = parse_clip_file(clip.path)
    data = mujoco.MjData(model)
    sph = [j for j in model_lib.JOINTS if j in model_lib.SPHERICAL]
    bodies = model_lib.body_ids(model, sph)
    parents = model.body_parentid[bodies]
    local = np.zeros((clip.num_frames, len(sph), 4))
    for t in range(clip.num_frames):
        data.qpos[:] = clip.qpos[t]
        mujoco.mj_kinematics(model, data)
        local[t] = quat.mul(quat.conj(data.xquat[parents]), data.xquat[bodies])
    target = np.stack([frames[:, _OFFSETS[j][0] : _OFFSETS[j][0] + 4] for j in sph], axis=1)
    target = yup_to_zup_quat(target / np.linalg.norm(target, axis=-1, keepdims=True))
    worst_rot = float(np.max(quat.angle(quat.mul(quat.conj(local), target))))
    rebuilt = integrate_qvel(clip.qpos[0], clip.qvel, np.diff(clip.frame_times, append=clip.frame_times[-1]))
    drift = float(np.max(np.abs(rebuilt[:, 7:] - clip.qpos[:, 7:])))
    drift = max(drift, float(np.max(np.abs(rebuilt[:, :3] - clip.qpos[:, :3]))))
    out_of_range = []
    for j in range(1, model.njnt):
        lo, hi = model.jnt_range[j]
        a = clip.qpos[:, model.jnt_qposadr[j]]
        excess = np.maximum(lo - a, a - hi)
        bad = np.nonzero(excess > 1e-6)[0]
        if bad.size:
            k = int(bad[np.argmax(excess[bad])])
            out_of_range.append(
                {"joint": mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j), "frames": int(bad.size),
                 "worst_frame": k, "value": round(float(a[k]), 4), "range": [float(lo), float(hi)]}
            )  # fmt: skip
    deepest = int(np.argmin(clip.lowest_point))
    return {
        "name": clip.name,
        "ok": bool(worst_rot < 1e-4 and drift < 1e-6),
        "rotation_error_rad": worst_rot,
        "qvel_integration_error": drift,
        "deepest_frame": deepest,
        "deepest_body": clip.lowest_body[deepest],
        "depth_m": round(float(max(0.0, -clip.lowest_point[deepest])), 4),
        "joints_out_of_range": out_of_range,
    }
