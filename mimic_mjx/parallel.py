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
gathered to it; docs/notes/scale_out.md). A sweep's members axis stays unsharded: the
mesh splits each member's environments.

Built on `jax.sharding` only; several hosts join one mesh through `jax.distributed`
(distributed.py), and nothing here changes: `jax.devices()` is then every process's devices.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mimic_mjx.errors import MimicError

AXIS = "batch"


def make_mesh(devices: int, num_envs: int) -> Mesh:
    """A one-axis mesh over the first `devices` devices (0: all of them), refusing in one
    line a count this machine lacks or a batch the count does not divide."""
    available = jax.devices()
    count = len(available) if devices == 0 else devices
    if count > len(available):
        raise MimicError(f"devices = {devices}, but JAX sees {len(available)} {available[0].platform.upper()} "
                         f"device(s) here")
    if num_envs % count:
        raise MimicError(f"num_envs = {num_envs} does not split evenly over {count} devices "
                         f"(devices = {devices}); choose a multiple of {count}")
    return Mesh(np.array(available[:count]), (AXIS,))


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
    split on their batch axis (axis 1 under a sweep's leading members axis), the rest replicated."""
    split = P(None, AXIS) if members else P(AXIS)

    def one(path, _):
        return NamedSharding(mesh, split if batched(path) else P())

    return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def local_copy(x: jax.Array) -> np.ndarray:
    """This process's first shard of `x` on the host: the whole array when it is replicated
    or on one device; under a batch split, the leading environments of that shard."""
    return np.asarray(x.addressable_shards[0].data)


def jit(fn: Callable, out_shardings: Any = None) -> Callable:
    """`jax.jit(fn)`, with its outputs pinned to `out_shardings` when given (a layout over
    several devices: leaves made inside the program, like resets, keep their place)."""
    return jax.jit(fn) if out_shardings is None else jax.jit(fn, out_shardings=out_shardings)
