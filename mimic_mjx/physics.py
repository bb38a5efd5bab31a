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
step feeds every rollout a fixed clock (`native.CLOCK0`) and flags as `diverged` any environment whose
clock did not advance by exactly the control period: a reset sets time back to 0. The env
ends, resets and counts such an episode just as it does non-finite MJX physics.
"""

from __future__ import annotations

import contextlib
import io
import os

import flax.struct
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mimic_mjx import model as model_lib
from mimic_mjx import native as native_lib
from mimic_mjx.errors import MimicError

with contextlib.redirect_stdout(io.StringIO()):
    # mujoco.mjx prints "Failed to import warp" to stdout when the optional Warp backend is
    # absent; that line would corrupt `--json` output.
    from mujoco import mjx


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

    def step_with_kinematics(self, state: PhysicsState, ref: PhysicsState
                             ) -> tuple[PhysicsState, PhysicsState, jax.Array]:
        """What one control step of the environment needs from the simulator: `(state after
        step(state), ref, diverged)`, both states with forward kinematics done. `ref` is the
        reference pose at the step's end (its own kinematics are needed beside the stepped
        state's). A backend may fuse the three; the default steps, then runs both kinematics
        through one vmapped call, which compiles MJX's kinematics once instead of twice (they
        are a large share of the step's compile; BENCHMARKS.md, "CPU compile time")."""
        data, diverged = self.step(state)
        both = jax.vmap(self.forward_kinematics)(jax.tree.map(lambda a, b: jnp.stack([a, b]), data, ref))
        data, ref = (jax.tree.map(lambda x, i=i: x[i], both) for i in range(2))
        return data, ref, diverged

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
    (`native.NativeStepper`), `threads` rollout threads (None: the usable cores)."""

    name = "native"
    how = "pure_callback(mujoco.rollout)"
    preferred_on = ("cpu",)
    on_device = False

    def __init__(self, mj_model: mujoco.MjModel, threads: int | None = None):
        super().__init__(mj_model, threads)
        self._native = native_lib.NativeStepper(mj_model, self.substeps, threads or default_threads())

    def step(self, state: PhysicsState) -> tuple[PhysicsState, jax.Array]:
        return self._native.step(state)

    # MuJoCo C computes the kinematics in every forward pass: read them there (sensors of a
    # 1-step rollout, native.py) instead of tracing MJX's kinematics into the program. The
    # same env steps/s, and native programs compile 2.6-3x faster (docs/notes/cpu_speed.md).
    def forward_kinematics(self, state: PhysicsState) -> PhysicsState:
        return self._native.kinematics(state)

    def step_with_kinematics(self, state: PhysicsState, ref: PhysicsState
                             ) -> tuple[PhysicsState, PhysicsState, jax.Array]:
        return self._native.step_with_kinematics(state, ref)


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
