"""The one seam between the environment and the simulator.

Every other module reaches the humanoid's physics through a `Physics` object, one subclass
per backend (`make(mj_model, backend)` builds one; BACKEND_CLASSES lists them):

* `put(qpos, qvel, ctrl) -> PhysicsState`  a physics state (no kinematics yet)
* `step(state) -> (state, diverged)`       one 30 Hz control step (`substeps` physics steps)
* `forward_kinematics(state) -> state`     body poses, velocities and geom frames of qpos/qvel
* `lowest_geom_z(state) -> [ngeom]`         each geom's lowest point, for falls from geometry

Two backends advance the state, and everything else (kinematics, observation, reward,
termination) is the same JAX code for both:

* `mjx`: MuJoCo MJX, `mjx.step` traced into the program. The choice on an accelerator.
* `native`: MuJoCo's own C engine through `mujoco.rollout` (a persistent thread pool), called
  once per control step for the whole batch through `jax.pure_callback`. On a CPU it runs
  ~8-15x faster than MJX there (per env step, whole training iteration to physics alone) and
  compiles in a fraction of the time (BENCHMARKS.md; docs/notes/benchmarks_history.md).

The physics state is a `PhysicsState` for both, so a `State` has one type whatever the
backend: what a control step continues from (time, qpos, qvel, act, ctrl and MJX's solver warm
start) and the kinematics the environment reads, 13 arrays. Not a whole `mjx.Data` (84 arrays,
51 KB per humanoid, most of them the constraint Jacobian, mass matrix and contacts that the next
step recomputes from the first five anyway): every array the rollout carries is selected at each
auto-reset and copied through the `lax.scan`, per control step (BENCHMARKS.md, "Physics
backends"). What crosses the native boundary is MuJoCo's full physics state (`mjSTATE_FULLPHYSICS`: time,
qpos, qvel, act) and the controls; each environment is rolled out on its own from that, so a
result never depends on how the batch was split among threads or calls. One difference is
stated, not hidden: `mujoco.rollout` starts every call's constraint solver from a zero warm
start (it returns no `qacc_warmstart`), where MJX carries the last one; with 4 Newton
iterations the solver converges either way (tests/test_physics.py measures the agreement).

MuJoCo C resets an unstable simulation to the model's default pose and carries on. The native
step feeds every rollout a fixed clock (`_CLOCK0`) and flags as `diverged` any environment whose
clock did not advance by exactly the control period: a reset sets time back to 0. The env
ends, resets and counts such an episode just as it does non-finite MJX physics.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import threading

import flax.struct
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from mimic_mjx import model as model_lib
from mimic_mjx.errors import MimicError

with contextlib.redirect_stdout(io.StringIO()):
    # mujoco.mjx prints "Failed to import warp" to stdout when the optional Warp backend is
    # absent; that line would corrupt `--json` output.
    from mujoco import mjx


# The clock every native rollout starts from. Any value > 0 works (a reset sets time to 0);
# 1.0 keeps time + 5 * (1/150) exact to float64 rounding.
_CLOCK0 = 1.0

_GEOM_SPHERE, _GEOM_CAPSULE, _GEOM_BOX = (int(mujoco.mjtGeom.mjGEOM_SPHERE), int(mujoco.mjtGeom.mjGEOM_CAPSULE),
                                          int(mujoco.mjtGeom.mjGEOM_BOX))


@flax.struct.dataclass
class PhysicsState:
    """The simulated humanoid. Shapes for one environment; batches add leading axes.

    The first six fields are all a control step continues from, exactly, on either backend
    (`mjx.step` recomputes everything else from them; MuJoCo C's full-physics state is time,
    qpos, qvel, act). The rest are `Physics.forward_kinematics` of qpos/qvel, stale from
    `put` or `step` until it is called; the names and meanings are mjx.Data's.
    """

    time: jax.Array  # [] s
    qpos: jax.Array  # [nq]
    qvel: jax.Array  # [nv]
    act: jax.Array  # [na]
    ctrl: jax.Array  # [nu]
    qacc_warmstart: jax.Array  # [nv] MJX's solver warm start (mujoco.rollout takes none back: zeros)
    xpos: jax.Array  # [nbody, 3] body frame origins, world
    xquat: jax.Array  # [nbody, 4] body orientations, world
    xipos: jax.Array  # [nbody, 3] body centres of mass, world
    subtree_com: jax.Array  # [nbody, 3] centre of mass of each body's subtree
    cvel: jax.Array  # [nbody, 6] (angular, linear) velocity, linear at the root subtree_com[1] (MuJoCo's cvel)
    geom_xpos: jax.Array  # [ngeom, 3]
    geom_xmat: jax.Array  # [ngeom, 3, 3]


# PhysicsState's kinematics: what forward_kinematics copies from mjx.kinematics/com_pos/com_vel.
KINEMATICS_FIELDS = ("xpos", "xquat", "xipos", "subtree_com", "cvel", "geom_xpos", "geom_xmat")




def default_threads() -> int:
    """Usable cores (the process's CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Physics:
    """The humanoid's simulator behind one interface: what every backend shares (the state,
    its kinematics, the lowest geom points). A backend is a subclass with a `name` and a
    `step`, registered in BACKEND_CLASSES; `make` builds one by name.

    Holds only constants (models, index tables, the native thread pool), so its methods are
    pure functions of their array arguments and vmap/jit like any JAX function.
    """

    name: str = ""  # the env.physics value that selects it
    how: str = ""  # how a control step runs, for bench notes
    preferred_on: tuple[str, ...] = ()  # JAX platforms where `auto` picks it
    on_device: bool = True  # steps on JAX's device (False: on the host, whatever the device)

    def __init__(self, mj_model: mujoco.MjModel, threads: int | None = None):
        self.backend = self.name
        self.mj_model = mj_model
        # This process's own device: MJX's default is jax.devices()[0], which in a multi-process
        # run (distributed.py) belongs to process 0 and cannot hold the other processes' arrays.
        device = jax.local_devices()[0]
        self.mjx_model = mjx.put_model(mj_model, device=device)
        self.data0 = mjx.make_data(self.mjx_model, device=device)
        self.substeps = model_lib.substeps(mj_model)
        self.control_dt = self.substeps * mj_model.opt.timestep
        m = mj_model
        self._geom_type = np.asarray(m.geom_type)
        self._geom_size = np.asarray(m.geom_size)
        unknown = set(self._geom_type[m.geom_bodyid > 0].tolist()) - {_GEOM_SPHERE, _GEOM_CAPSULE, _GEOM_BOX}
        if unknown:
            raise MimicError(f"physics: body geoms of types {sorted(unknown)} have no lowest-point rule "
                             "(sphere, capsule and box do)")

    # ----------------------------------------------------------------------- state
    def put(self, qpos, qvel, ctrl=None) -> PhysicsState:
        """A physics state at `qpos [nq]`, `qvel [nv]` with controls `ctrl [nu]` (default 0),
        at rest otherwise (time 0, no warm start); its kinematics are mjx.make_data's zeros."""
        d = self.data0
        ctrl = d.ctrl if ctrl is None else ctrl
        return PhysicsState(time=d.time, qpos=qpos, qvel=qvel, act=d.act, ctrl=ctrl, qacc_warmstart=d.qacc_warmstart,
                            **{f: getattr(d, f) for f in KINEMATICS_FIELDS})

    # ------------------------------------------------------------------------ step
    def step(self, state: PhysicsState) -> tuple[PhysicsState, jax.Array]:
        """One control step under `state.ctrl`: `(state after it, diverged [] bool)`.

        `diverged` is True where MuJoCo C reset an unstable simulation (native); MJX reports
        instability as non-finite numbers instead, which the caller checks for both. The
        kinematics fields are left as they were (call `forward_kinematics`).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ kinematics
    def forward_kinematics(self, state: PhysicsState) -> PhysicsState:
        """Body and geom poses (xpos, xquat, geom_xpos, geom_xmat), subtree COM and body
        velocities (cvel) of `state.qpos`/`state.qvel`: the same JAX code for both backends.
        qpos comes back with its quaternions normalised, as mjx.kinematics leaves it."""
        d = self.data0.replace(qpos=state.qpos, qvel=state.qvel)
        d = mjx.com_vel(self.mjx_model, mjx.com_pos(self.mjx_model, mjx.kinematics(self.mjx_model, d)))
        return state.replace(qpos=d.qpos, **{f: getattr(d, f) for f in KINEMATICS_FIELDS})

    def lowest_geom_z(self, data: PhysicsState) -> jax.Array:
        """Height of each geom's lowest point [ngeom], m, from a data with kinematics done.

        Sphere: centre - r. Capsule (axis = local z, half-length size[1]): centre - |R_zz| h - r.
        Box: centre - sum_i |R_zi| size_i. Other types (the floor plane) get +inf.
        """
        z = data.geom_xpos[:, 2]
        rz = jnp.abs(data.geom_xmat[:, 2, :])  # [ngeom, 3]: |z-component of each local axis|
        size = jnp.asarray(self._geom_size)
        sphere = z - size[:, 0]
        capsule = z - rz[:, 2] * size[:, 1] - size[:, 0]
        box = z - jnp.sum(rz * size, axis=-1)
        kind = jnp.asarray(self._geom_type)
        return jnp.where(kind == _GEOM_SPHERE, sphere,
                         jnp.where(kind == _GEOM_CAPSULE, capsule, jnp.where(kind == _GEOM_BOX, box, jnp.inf)))


class MjxPhysics(Physics):
    """MuJoCo MJX: `mjx.step` traced into the program, `substeps` of them in a `lax.scan`."""

    name = "mjx"
    how = "vmap(mjx.step)"
    preferred_on = ("gpu", "tpu")

    def step(self, state: PhysicsState) -> tuple[PhysicsState, jax.Array]:
        def substep(d, _):
            return mjx.step(self.mjx_model, d), None

        d = self.data0.replace(time=state.time, qpos=state.qpos, qvel=state.qvel, act=state.act, ctrl=state.ctrl,
                               qacc_warmstart=state.qacc_warmstart)
        d, _ = jax.lax.scan(substep, d, None, length=self.substeps)
        return state.replace(time=d.time, qpos=d.qpos, qvel=d.qvel, act=d.act,
                             qacc_warmstart=d.qacc_warmstart), jnp.zeros((), bool)


class NativePhysics(Physics):
    """MuJoCo's C engine: one `jax.pure_callback` per control step for the whole batch
    (`_NativeStepper`), `threads` rollout threads (None: the usable cores)."""

    name = "native"
    how = "pure_callback(mujoco.rollout)"
    preferred_on = ("cpu",)
    on_device = False

    def __init__(self, mj_model: mujoco.MjModel, threads: int | None = None):
        super().__init__(mj_model, threads)
        self._native = _NativeStepper(mj_model, self.substeps, threads or default_threads())

    def step(self, state: PhysicsState) -> tuple[PhysicsState, jax.Array]:
        return self._native.step(state)


# Every backend, by the env.physics value that selects it. A new backend is one subclass
# of Physics added here; the config's choices, `auto` and bench's --physics follow.
BACKEND_CLASSES = {cls.name: cls for cls in (MjxPhysics, NativePhysics)}
BACKENDS = ("auto", *BACKEND_CLASSES)


def resolve_backend(name: str, jax_backend: str | None = None) -> str:
    """`auto` -> the backend preferred on JAX's default platform (`preferred_on`: mjx on an
    accelerator, native on CPU); any other name is checked and returned."""
    if name not in BACKENDS:
        raise MimicError(f"env.physics must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    jax_backend = jax.default_backend() if jax_backend is None else jax_backend
    for cls in BACKEND_CLASSES.values():
        if jax_backend in cls.preferred_on:
            return cls.name
    return MjxPhysics.name  # an accelerator no backend names: MJX is the traced one


def make(mj_model: mujoco.MjModel, backend: str = "auto", threads: int | None = None) -> Physics:
    """The `backend` (a name in BACKENDS; `auto` resolved) simulator of `mj_model`."""
    return BACKEND_CLASSES[resolve_backend(backend)](mj_model, threads)


class _NativeStepper:
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
        self.expected_time = _CLOCK0 + substeps * m.opt.timestep
        self._tolerance = 1e-9
        self._lock = threading.Lock()
        self._pool = None

    def _rollout(self):
        # Built on first use, on the host thread that runs callbacks; the pool persists.
        if self._pool is None:
            self._datas = [mujoco.MjData(self.model) for _ in range(self.threads)]
            self._pool = mj_rollout.Rollout(nthread=self.threads if self.threads > 1 else 0)
        return self._pool

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
        state0[:, 0] = _CLOCK0
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

    def step(self, data: PhysicsState) -> tuple[PhysicsState, jax.Array]:
        nq, nv, na = self.nq, self.nv, self.na
        dtype = data.qpos.dtype
        packed = jnp.concatenate([data.qpos, data.qvel, data.act.astype(dtype), data.ctrl.astype(dtype)], axis=-1)
        shape = jax.ShapeDtypeStruct(data.qpos.shape[:-1] + (nq + nv + na + 1,), dtype)
        # broadcast_all: under vmap (and a sweep's nested vmap) the callback sees the whole
        # batch at once, one call per control step.
        out = jax.pure_callback(self._host_step, shape, packed, vmap_method="broadcast_all")
        data = data.replace(qpos=out[..., :nq], qvel=out[..., nq:nq + nv],
                            act=out[..., nq + nv:nq + nv + na].astype(data.act.dtype),
                            time=data.time + self.substeps * self.model.opt.timestep)
        return data, out[..., -1] > 0.5
