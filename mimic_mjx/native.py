"""MuJoCo's C engine for the `native` physics backend (physics.NativePhysics): the batch's
control step and its kinematics, one `jax.pure_callback` each way.

* `NativeStepper.step`: `substeps` MuJoCo steps of every environment through `mujoco.rollout`
  (a persistent thread pool), from MuJoCo's full physics state (time, qpos, qvel, act).
* `NativeStepper.kinematics` / `step_with_kinematics`: forward kinematics from MuJoCo C, read
  as sensors of a 1-step rollout of `kinematics_model` (a copy of the humanoid with sensors on
  every body), fused into the step's own call. A rollout records a step's sensors from the
  forward pass that starts it, so a 1-step rollout's sensors are exactly the kinematics of its
  initial state. Why not MJX's kinematics in JAX: the same numbers to float32 rounding, and
  the native programs compile ~3x faster without MJX's kinematics in them
  (docs/notes/cpu_speed.md has the measurements, throughput included).

Numpy and MuJoCo on the host; nothing here is traced but the packing around each callback.
"""

from __future__ import annotations

import copy
import threading

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from mimic_mjx import model as model_lib
from mimic_mjx import quaternion as quat
from mimic_mjx.errors import MimicError


# The clock every native rollout starts from. Any value > 0 works (a reset sets time to 0);
# 1.0 keeps time + 5 * (1/150) exact to float64 rounding.
CLOCK0 = 1.0


class NativeStepper:
    """MuJoCo C behind `jax.pure_callback`: one call per control step for a whole batch."""

    def __init__(self, mj_model: mujoco.MjModel, substeps: int, threads: int):
        m = mj_model
        spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.nstate = mujoco.mj_stateSize(m, spec)
        self.nq, self.nv, self.na, self.nu = m.nq, m.nv, m.na, m.nu
        if self.nstate != 1 + m.nq + m.nv + m.na:
            # The layout below (time, qpos, qvel, act) holds for models without mocap bodies,
            # history buffers, equality toggles or plugins, as humanoid3d.xml is.
            raise MimicError(f"physics: the native backend needs a full-physics state of time, qpos, qvel, act "
                             f"({1 + m.nq + m.nv + m.na} numbers); this model's has {self.nstate}")
        if m.ntree == 1:
            # Island discovery splits the constraints by kinematic tree, and a humanoid alone
            # is one tree: MuJoCo C finds that one island every substep for nothing. Off, a step
            # takes ~4% less (20.7 -> 19.9 us) with bit-identical qpos after 32 x 150 steps
            # (2-core AMD EPYC, 2026-12-06). The MJX model is left as it is.
            m = copy.copy(m)
            m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_ISLAND)
        self.model = m
        self.substeps = substeps
        self.threads = max(1, int(threads))
        self.expected_time = CLOCK0 + substeps * m.opt.timestep
        self._tolerance = 1e-9
        self._lock = threading.Lock()
        self._pool = None
        self._kin_model, self._fixed = kinematics_model(mj_model)
        self.nsensor = self._kin_model.nsensordata

    def _rollout(self):
        # Built on first use, on the host thread that runs callbacks; the pool persists.
        if self._pool is None:
            self._datas = [mujoco.MjData(self.model) for _ in range(self.threads)]
            self._kin_datas = [mujoco.MjData(self._kin_model) for _ in range(self.threads)]
            self._pool = mj_rollout.Rollout(nthread=self.threads if self.threads > 1 else 0)
        return self._pool

    def _host_sensors(self, flat):
        """`flat [n, nq + nv]` (qpos, qvel) -> `[n, nsensor]`: the kinematics sensors of each.

        A rollout records a step's sensors from the forward pass that starts the step, so the
        sensors of a 1-step rollout are those of its initial state: exactly the kinematics of
        qpos/qvel (what the step then integrates is thrown away).
        """
        n = flat.shape[0]
        state0 = np.zeros((n, self.nstate))
        state0[:, 1:1 + self.nq + self.nv] = flat
        sensors = np.empty((n, 1, self.nsensor))
        with self._lock:
            self._rollout().rollout(self._kin_model, self._kin_datas, state0, np.zeros((n, 1, self.nu)),
                                    state=np.empty((n, 1, self.nstate)), sensordata=sensors)
        return sensors[:, 0]

    def _host_kinematics(self, packed):
        packed = np.asarray(packed)
        lead = packed.shape[:-1]
        flat = packed.reshape(-1, packed.shape[-1]).astype(np.float64)
        return self._host_sensors(flat).astype(packed.dtype).reshape(lead + (self.nsensor,))

    def _host_step_kinematics(self, packed):
        """`[..., nq + nv + na + nu + nq + nv]` (the state to step, the reference's qpos/qvel)
        -> `[..., nq + nv + na + 1 + 2 nsensor]`: `_host_step`'s result, then the kinematics
        sensors of the stepped state and of the reference. One call, one array each way."""
        packed = np.asarray(packed)
        nq, nv, na, nu = self.nq, self.nv, self.na, self.nu
        lead = packed.shape[:-1]
        flat = packed.reshape(-1, packed.shape[-1])
        n = flat.shape[0]
        stepped = self._host_step(flat[:, :nq + nv + na + nu])
        both = np.concatenate([stepped[:, :nq + nv], flat[:, nq + nv + na + nu:]]).astype(np.float64)
        sensors = self._host_sensors(both).astype(packed.dtype)
        out = np.concatenate([stepped, sensors[:n], sensors[n:]], axis=1)
        return out.reshape(lead + (out.shape[-1],))

    def _from_sensors(self, data, sensors):
        """`data` (a physics.PhysicsState, one environment) with its kinematics fields from
        `kinematics_model`'s sensors [nsensor]: each body's frame origin, orientation, subtree
        COM, angular and linear velocity (world frame). Centres of mass and geom frames are
        fixed offsets in their body's frame, so they are composed here, as MuJoCo does."""
        n = self.model.nbody - 1
        xpos, xquat, com, angvel, linvel = jnp.split(sensors, np.cumsum([3 * n, 4 * n, 3 * n, 3 * n]), axis=-1)
        xpos, com, angvel, linvel = (x.reshape(n, 3) for x in (xpos, com, angvel, linvel))
        xquat = xquat.reshape(n, 4)
        k = self._fixed
        xpos = jnp.concatenate([k["world_xpos"], xpos])
        xquat = jnp.concatenate([k["world_xquat"], xquat])
        xipos = xpos + quat.rotate(xquat, k["body_ipos"])
        body = k["geom_body"]
        geom_xpos = xpos[body] + quat.rotate(xquat[body], k["geom_pos"])
        geom_xmat = quat.to_matrix(quat.mul(xquat[body], k["geom_quat"]))
        # MuJoCo's cvel: (angular, linear) with the linear part at the tree's centre of mass
        # subtree_com[1] (body_rootid is 1 for every body of the humanoid); the sensors give
        # the velocity of each body frame's origin: v(c) = v(origin) + w x (c - origin).
        lin_at_com = linvel + jnp.cross(angvel, com[:1] - xpos[1:])
        cvel = jnp.concatenate([jnp.zeros((1, 6), sensors.dtype), jnp.concatenate([angvel, lin_at_com], axis=-1)])
        root = data.qpos[3:7]
        return data.replace(
            qpos=data.qpos.at[3:7].set(root / jnp.linalg.norm(root)),  # as mjx.kinematics leaves it
            # The world body's subtree is the whole humanoid (the world has no mass).
            xpos=xpos, xquat=xquat, xipos=xipos, subtree_com=jnp.concatenate([com[:1], com]), cvel=cvel,
            geom_xpos=geom_xpos, geom_xmat=geom_xmat)

    def _decode(self, data, sensors):
        """`_from_sensors` over any leading batch axes (vmap, or a batch passed as it is)."""
        decode = self._from_sensors
        for _ in range(data.qpos.ndim - 1):
            decode = jax.vmap(decode)
        return decode(data, sensors)

    def kinematics(self, data):
        dtype = data.qpos.dtype
        packed = jnp.concatenate([data.qpos, data.qvel], axis=-1)
        shape = jax.ShapeDtypeStruct(data.qpos.shape[:-1] + (self.nsensor,), dtype)
        sensors = jax.pure_callback(self._host_kinematics, shape, packed, vmap_method="broadcast_all")
        return self._decode(data, sensors)

    def step_with_kinematics(self, data, ref):
        nq, nv, na = self.nq, self.nv, self.na
        dtype = data.qpos.dtype
        packed = jnp.concatenate([data.qpos, data.qvel, data.act.astype(dtype), data.ctrl.astype(dtype),
                                  ref.qpos.astype(dtype), ref.qvel.astype(dtype)], axis=-1)
        width = nq + nv + na + 1
        shape = jax.ShapeDtypeStruct(data.qpos.shape[:-1] + (width + 2 * self.nsensor,), dtype)
        out = jax.pure_callback(self._host_step_kinematics, shape, packed, vmap_method="broadcast_all")
        data, diverged = self._stepped(data, out)
        data = self._decode(data, out[..., width:width + self.nsensor])
        ref = self._decode(ref, out[..., width + self.nsensor:])
        return data, ref, diverged

    def _stepped(self, data, out):
        """`(data after the step, diverged)` from a host result that starts with `_host_step`'s
        `[qpos, qvel, act, diverged]`; the kinematics fields are left as they were."""
        nq, nv, na = self.nq, self.nv, self.na
        data = data.replace(qpos=out[..., :nq], qvel=out[..., nq:nq + nv],
                            act=out[..., nq + nv:nq + nv + na].astype(data.act.dtype),
                            time=data.time + self.substeps * self.model.opt.timestep)
        return data, out[..., nq + nv + na] > 0.5

    def _host_step(self, packed):
        """numpy in, numpy out; any number of leading batch axes (vmap, nested vmap).

        `packed [..., nq + nv + na + nu]` is qpos, qvel, act, ctrl; the result `[..., nq + nv +
        na + 1]` is qpos, qvel, act and the diverged flag (1.0 or 0.0). One array each way
        because JAX's callback machinery costs per array: on the 2-core CPU an empty callback
        took 0.19 ms with one argument and one result, 0.41 ms with four and four (2026-12-04).
        """
        packed = np.asarray(packed)
        nq, nv, na = self.nq, self.nv, self.na
        lead = packed.shape[:-1]
        n = int(np.prod(lead, dtype=np.int64))
        flat = packed.reshape(n, packed.shape[-1])
        state0 = np.empty((n, self.nstate))
        state0[:, 0] = CLOCK0
        state0[:, 1:] = flat[:, :nq + nv + na]
        control = np.repeat(flat[:, None, nq + nv + na:].astype(np.float64), self.substeps, axis=1)
        out = np.empty((n, self.substeps, self.nstate))
        with self._lock:
            self._rollout().rollout(self.model, self._datas, state0, control, state=out,
                                    initial_warmstart=np.zeros((n, self.nv)))
        last = out[:, -1]
        result = np.empty((n, nq + nv + na + 1), packed.dtype)
        result[:, :-1] = last[:, 1:]
        result[:, -1] = np.abs(last[:, 0] - self.expected_time) > self._tolerance
        return result.reshape(lead + (nq + nv + na + 1,))

    def step(self, data):
        nq, nv, na = self.nq, self.nv, self.na
        dtype = data.qpos.dtype
        packed = jnp.concatenate([data.qpos, data.qvel, data.act.astype(dtype), data.ctrl.astype(dtype)], axis=-1)
        shape = jax.ShapeDtypeStruct(data.qpos.shape[:-1] + (nq + nv + na + 1,), dtype)
        # broadcast_all: under vmap (and a sweep's nested vmap) the callback sees the whole
        # batch at once, one call per control step.
        out = jax.pure_callback(self._host_step, shape, packed, vmap_method="broadcast_all")
        return self._stepped(data, out)


def kinematics_model(mj_model: mujoco.MjModel) -> tuple[mujoco.MjModel, dict]:
    """A copy of the humanoid that only reads kinematics: sensors for every body's frame
    (origin, orientation, subtree COM, angular and linear velocity), grouped by kind, with
    contacts, constraints, gravity and actuation off, since its step's dynamics are thrown away.
    And the fixed arrays `_from_sensors` composes with: the world body's pose, each body's
    centre of mass and each geom's pose in its body's frame.
    """
    spec = mujoco.MjSpec.from_file(str(model_lib.XML_PATH))
    obj, sens = mujoco.mjtObj, mujoco.mjtSensor
    bodies = [mj_model.body(b).name for b in range(1, mj_model.nbody)]
    for kind, objtype in ((sens.mjSENS_FRAMEPOS, obj.mjOBJ_XBODY), (sens.mjSENS_FRAMEQUAT, obj.mjOBJ_XBODY),
                          (sens.mjSENS_SUBTREECOM, obj.mjOBJ_BODY), (sens.mjSENS_FRAMEANGVEL, obj.mjOBJ_XBODY),
                          (sens.mjSENS_FRAMELINVEL, obj.mjOBJ_XBODY)):
        for name in bodies:
            spec.add_sensor(type=kind, objtype=objtype, objname=name)
    model = spec.compile()
    same = ("nq", "nv", "nbody", "ngeom")
    if any(getattr(model, k) != getattr(mj_model, k) for k in same) or np.any(mj_model.body_rootid[1:] != 1):
        raise MimicError("physics: the native kinematics model does not match the simulated one "
                         f"({model_lib.XML_PATH.name}: one tree rooted at body 1 is assumed)")
    off = mujoco.mjtDisableBit
    for flag in (off.mjDSBL_CONSTRAINT, off.mjDSBL_CONTACT, off.mjDSBL_GRAVITY, off.mjDSBL_ACTUATION,
                 off.mjDSBL_SPRING, off.mjDSBL_DAMPER, off.mjDSBL_ISLAND, off.mjDSBL_WARMSTART):
        model.opt.disableflags |= int(flag)
    model.opt.integrator = int(mujoco.mjtIntegrator.mjINT_EULER)
    m = mj_model
    fixed = {"world_xpos": np.zeros((1, 3)), "world_xquat": np.array([[1.0, 0.0, 0.0, 0.0]]),
             "body_ipos": m.body_ipos, "geom_body": m.geom_bodyid, "geom_pos": m.geom_pos, "geom_quat": m.geom_quat}
    if np.any(m.body_pos[0] != 0) or np.any(m.body_quat[0] != [1, 0, 0, 0]):
        raise MimicError("physics: the native kinematics assume the world body at the origin")
    return model, {k: (jnp.asarray(v, jnp.int32) if k == "geom_body" else jnp.asarray(v, jnp.float32))
                   for k, v in fixed.items()}
