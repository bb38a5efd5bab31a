"""The device layout: one run (or sweep) over several devices, with JAX's own engine.

The environment batch is split over a `jax.sharding.Mesh` with one axis, `batch`: the batched
leaves of the training state (the environments and their running returns) are sharded on
their batch axis, everything else (networks, normaliser, optimiser, TRPO leaves) is
replicated. XLA partitions the iteration from those shardings and inserts the collectives:
the policy's forward pass runs on each device's shard, and the means, gradients,
Fisher-vector products, line search and value fit reduce over the global batch.

The environment step is the one piece placed by hand: `jax.shard_map` runs it on each
device's shard, so native physics gets one MuJoCo C callback per device with that device's
environments (under plain `jit` a callback runs once, on device 0, with the whole batch
gathered to it; docs/notes/scale_out.md).

A sweep's mesh has two axes, `members` × `batch`: with M members on D devices, the members
are split into g = gcd(M, D) groups, one per row of devices, and each member's environments
over the D / g devices of its row. Eight members on eight GPUs: one member per GPU, no
collectives between them; four members on eight: two GPUs per member; three members on two
devices: every member's environments split over both. The members axis reaches the
environment step's `shard_map` through `jax.vmap(..., spmd_axis_name="members")`. Over several
processes (distributed.py) the members stay whole and every member's environments are split
over all devices: process 0 scores every member's policy, so it must hold all of them.

Built on `jax.sharding` only; several hosts join one mesh through `jax.distributed`
(distributed.py), and nothing here changes: `jax.devices()` is then every process's devices.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mimic_mjx.errors import MimicError

AXIS = "batch"
MEMBERS = "members"


def make_mesh(devices: int, num_envs: int, members: int = 0) -> Mesh:
    """A mesh over the first `devices` devices (0: all of them), refusing in one line a count
    this machine lacks or a batch the count does not divide. One axis (`batch`) for a run;
    `members` > 0 (a sweep's member count): two, `members` × `batch` (the module docstring)."""
    available = jax.devices()
    count = len(available) if devices == 0 else devices
    if count > len(available):
        raise MimicError(f"devices = {devices}, but JAX sees {len(available)} {available[0].platform.upper()} "
                         f"device(s) here")
    # Over several processes the members stay whole on every device: the yardstick, which
    # process 0 alone runs, needs every member's policy on its own host.
    groups = math.gcd(members, count) if members and jax.process_count() == 1 else 1
    per_member = count // groups
    if num_envs % per_member:
        if members:
            raise MimicError(f"num_envs = {num_envs} does not split evenly over the {per_member} devices each member "
                             f"gets ({members} members on {count} devices: {groups} group(s) of {per_member}); "
                             f"choose a multiple of {per_member}")
        raise MimicError(f"num_envs = {num_envs} does not split evenly over {count} devices "
                         f"(devices = {devices}); choose a multiple of {count}")
    if not members:
        return Mesh(np.array(available[:count]), (AXIS,))
    return Mesh(np.array(available[:count]).reshape(groups, per_member), (MEMBERS, AXIS))


def describe(mesh: Mesh, num_envs: int) -> str:
    """The layout in words, for progress lines and bench rows."""
    if MEMBERS not in mesh.axis_names:
        return f"{num_envs // mesh.size} envs on each of {mesh.size} device(s)"
    groups, per_member = mesh.shape[MEMBERS], mesh.shape[AXIS]
    return (f"members in {groups} group(s) of devices, each member's {num_envs} envs split over "
            f"{per_member} device(s) ({num_envs // per_member} each)")


def vmap_members(fn: Callable, mesh: Mesh | None) -> Callable:
    """`jax.vmap(fn)` over a sweep's leading members axis, telling the environment step's
    `shard_map` inside that this axis is the mesh's `members` axis when the mesh has one."""
    if mesh is not None and MEMBERS in mesh.axis_names:
        return jax.vmap(fn, spmd_axis_name=MEMBERS)
    return jax.vmap(fn)


def env_step(step_batch: Callable, mesh: Mesh | None) -> Callable:
    """`step_batch(state, actions)` run on each device's shard of the batch (leading axis).

    No mesh (one device): `step_batch` itself, the same program as before meshes.
    """
    if mesh is None or mesh.size == 1:
        return step_batch
    # check_vma off: MJX's solver has lax.conds whose branches JAX's varying-axes check
    # rejects inside shard_map ("cond branches must have equal output types"); every value
    # here is per-shard anyway (no collectives inside the environment step).
    return jax.shard_map(step_batch, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P(AXIS), check_vma=False)


def shardings(tree: Any, mesh: Mesh, batched: Callable[[tuple], bool], members: bool = False) -> Any:
    """A tree of NamedShardings like `tree`: leaves whose path `batched(path)` accepts are
    split on their batch axis (axis 1 under a sweep's leading members axis), the rest replicated;
    on a mesh with a members axis, every leaf's leading (members) axis is split over it."""
    lead = (MEMBERS,) if MEMBERS in mesh.axis_names else (None,)
    split = P(*lead, AXIS) if members else P(AXIS)
    whole = P(*lead) if members and lead != (None,) else P()

    def one(path, _):
        return NamedSharding(mesh, split if batched(path) else whole)

    return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def local_copy(x: jax.Array) -> np.ndarray:
    """`x` on the host: the whole array when this process holds all of it (one process, any
    layout); over several processes, this process's first shard (under a batch split, the
    leading environments of that shard)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(x.addressable_shards[0].data)


def jit(fn: Callable, out_shardings: Any = None) -> Callable:
    """`jax.jit(fn)`, with its outputs pinned to `out_shardings` when given (a layout over
    several devices: leaves made inside the program, like resets, keep their place)."""
    return jax.jit(fn) if out_shardings is None else jax.jit(fn, out_shardings=out_shardings)
