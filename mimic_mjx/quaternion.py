"""Quaternion and heading-frame maths shared by the clip loader, the environment and the reward.

Quaternions are w-x-y-z (MuJoCo's order), arrays of shape [..., 4]. Each function computes
with NumPy when every input is a NumPy array or number (the clip loader: eager jax.numpy would
compile every operation anew for each clip length) and with jax.numpy otherwise (inside jit).
"""

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*xs):
    return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def mul(a, b):
    """Hamilton product a ⊗ b, [..., 4]."""
    xp = _xp(a, b)
    aw, ax, ay, az = xp.moveaxis(xp.asarray(a), -1, 0)
    bw, bx, by, bz = xp.moveaxis(xp.asarray(b), -1, 0)
    return xp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def conj(q):
    """Conjugate (the inverse of a unit quaternion), [..., 4]."""
    xp = _xp(q)
    q = xp.asarray(q)
    return q * xp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def normalize(q):
    xp = _xp(q)
    q = xp.asarray(q)
    return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def rotate(q, v):
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4]."""
    xp = _xp(q, v)
    q = xp.asarray(q)
    v = xp.asarray(v)
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * xp.cross(u, v)
    return v + w * t + xp.cross(u, t)


def from_axis_angle(axis, angle):
    """Unit quaternion for a rotation by `angle` [...] about unit `axis` [..., 3]."""
    xp = _xp(axis, angle)
    half = 0.5 * xp.asarray(angle)[..., None]
    return xp.concatenate([xp.cos(half), xp.sin(half) * xp.asarray(axis)], axis=-1)


def angle(q):
    """Rotation angle in [0, pi] of unit quaternions [..., 4]; q and -q give the same angle."""
    xp = _xp(q)
    q = xp.asarray(q)
    return 2.0 * xp.arctan2(xp.linalg.norm(q[..., 1:], axis=-1), xp.abs(q[..., 0]))


def log(q):
    """Rotation vector (axis * angle) [..., 3] of unit quaternions, shortest rotation."""
    xp = _xp(q)
    q = xp.asarray(q)
    q = xp.where(q[..., :1] < 0, -q, q)
    s = xp.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    ang = 2.0 * xp.arctan2(s, q[..., :1])
    # For tiny rotations angle/s -> 2; the guarded division keeps gradients finite.
    scale = xp.where(s > 1e-9, ang / xp.where(s > 1e-9, s, 1.0), 2.0)
    return q[..., 1:] * scale


def exp(v):
    """Unit quaternion [..., 4] for rotation vectors v [..., 3]."""
    xp = _xp(v)
    v = xp.asarray(v)
    ang = xp.linalg.norm(v, axis=-1, keepdims=True)
    safe = xp.where(ang > 1e-12, ang, 1.0)
    axis = xp.where(ang > 1e-12, v / safe, xp.zeros_like(v))
    return xp.concatenate([xp.cos(0.5 * ang), xp.sin(0.5 * ang) * axis], axis=-1)


def slerp(a, b, t):
    """Spherical interpolation between unit quaternions a and b [..., 4] at fraction t [...]."""
    xp = _xp(a, b, t)
    a = xp.asarray(a)
    b = xp.asarray(b)
    b = xp.where(xp.sum(a * b, axis=-1, keepdims=True) < 0, -b, b)
    rel = log(mul(conj(a), b))
    return mul(a, exp(rel * xp.asarray(t)[..., None]))


def yaw(q):
    """Heading angle [...] (rad, about world z) of the body x-axis of unit quaternions [..., 4]."""
    xp = _xp(q)
    fwd = rotate(q, xp.broadcast_to(xp.array([1.0, 0.0, 0.0]), xp.shape(q)[:-1] + (3,)))
    return xp.arctan2(fwd[..., 1], fwd[..., 0])


def yaw_quat(psi):
    """Unit quaternion [..., 4] of a rotation by psi [...] about world z."""
    xp = _xp(psi)
    psi = xp.asarray(psi)
    z = xp.zeros_like(psi)
    return xp.stack([xp.cos(0.5 * psi), z, z, xp.sin(0.5 * psi)], axis=-1)


def to_matrix(q):
    """Rotation matrices [..., 3, 3] of unit quaternions [..., 4]."""
    xp = _xp(q)
    w, x, y, z = xp.moveaxis(normalize(q), -1, 0)
    return xp.stack(
        [
            xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            xp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            xp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )
