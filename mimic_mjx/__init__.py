"""mimic_mjx: DeepMimic-style motion imitation on MuJoCo MJX, trained with TRPO."""

import importlib.metadata as _metadata
import os as _os

# XLA flags for CPU runs. They must be set before JAX starts, so they live here, in the first
# module every entry point imports. A user's own XLA_FLAGS wins (nothing is added to it).
#
# - concurrency-optimised scheduler off: with jax 0.10.2 a jitted, vmapped MJX humanoid step
#   at batch >= 64 deadlocked with every thread idle; this fixed it at no cost.
# - fusion emitters off (XLA's older elemental emitter): on the 2-core development machine,
#   jax 0.10.2, batch 32, every humanoid program compiled 26-43% faster (the env step
#   68 s -> 39-43 s) with run time unchanged within noise and physics equal to rounding
#   (BENCHMARKS.md, "CPU compile time"; tests/test_package.py).
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
