"""mimic_mjx: DeepMimic-style motion imitation on MuJoCo MJX, trained with TRPO."""

import importlib.metadata as _metadata
import os as _os

# XLA flags for CPU runs. They must be set before JAX starts, so they live here, in the first
# module every entry point imports. A user's own XLA_FLAGS wins (nothing is added to it).
#
# - concurrency-optimised scheduler off: with jax 0.10.2 a jitted, vmapped MJX humanoid step
#   at batch >= 64 deadlocked with every thread idle; this fixed it at no cost.
# - fusion emitters off (XLA's older elemental emitter): measured on the 2-core development
#   machine, jax 0.10.2, batch 32: compiling `lax.scan` of 160 `mjx.step`s 36 s -> 15 s and
#   running it 3.0K -> 5.0K physics steps/s; the env step 63 s -> 36 s, 666 -> 734 env
#   steps/s; results equal to float32 rounding (BENCHMARKS.md, "CPU compile").
#
# XLA aborts the process on a flag it does not know, so they are set only for jaxlib
# versions whose XLA has both (checked in the 0.10.2 and 0.11.2 binaries). GPU programs
# ignore CPU flags.
CPU_XLA_FLAGS = "--xla_cpu_enable_concurrency_optimized_scheduler=false --xla_cpu_use_fusion_emitters=false"


def _jaxlib_knows_cpu_flags() -> bool:
    try:
        major, minor = (int(x) for x in _metadata.version("jaxlib").split(".")[:2])
    except (_metadata.PackageNotFoundError, ValueError):
        return False
    return (0, 10) <= (major, minor) < (0, 12)


if "XLA_FLAGS" not in _os.environ and _jaxlib_knows_cpu_flags():
    _os.environ["XLA_FLAGS"] = CPU_XLA_FLAGS

__version__ = "0.1.0"
