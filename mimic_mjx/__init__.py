"""mimic_mjx: DeepMimic-style motion imitation on MuJoCo MJX, trained with TRPO."""

import importlib.metadata as _metadata
import os as _os
import sys as _sys

# XLA flags for CPU runs. They must be set before JAX starts, so they live here, in the first
# module every entry point imports. A user's own XLA_FLAGS wins (nothing is added to it).
#
# - concurrency-optimised scheduler off: with jax 0.10.2 a jitted, vmapped MJX humanoid step
#   at batch >= 64 deadlocked with every thread idle; this fixed it at no cost.
# - fusion emitters off (XLA's older elemental emitter): on the 2-core development machine,
#   jax 0.10.2, batch 32, every humanoid program compiled 26-43% faster (the env step
#   68 s -> 39-43 s) with run time unchanged within noise and physics equal to rounding
#   (BENCHMARKS.md, "CPU compile time"; tests/test_package.py). jaxlib 0.11 removed the flag
#   (its XLA aborts on it: "Unknown flag in XLA_FLAGS"), so 0.11 gets the scheduler flag only.
#
# XLA aborts the process on a flag it does not know, so each jaxlib minor version gets only
# the flags its XLA was seen to accept (by running jax with each flag, jaxlib 0.10.2 and
# 0.11.2), and an unlisted version gets none. GPU programs ignore CPU flags.
_SCHEDULER_OFF = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
_FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"
_CPU_FLAGS_BY_JAXLIB = {(0, 10): (_SCHEDULER_OFF, _FUSION_EMITTERS_OFF), (0, 11): (_SCHEDULER_OFF,)}


def cpu_xla_flags(jaxlib_version: str | None = None) -> str:
    """The CPU XLA flags for `jaxlib_version` (default: the installed jaxlib); "" if unknown."""
    try:
        version = _metadata.version("jaxlib") if jaxlib_version is None else jaxlib_version
        major, minor = (int(x) for x in version.split(".")[:2])
    except (_metadata.PackageNotFoundError, ValueError):
        return ""
    return " ".join(_CPU_FLAGS_BY_JAXLIB.get((major, minor), ()))


CPU_XLA_FLAGS = cpu_xla_flags()
if "XLA_FLAGS" not in _os.environ and CPU_XLA_FLAGS:
    _os.environ["XLA_FLAGS"] = CPU_XLA_FLAGS

# Matmul precision: full float32 ("highest") unless the user chose (JAX_DEFAULT_MATMUL_PRECISION,
# or jax.config before this import). JAX's default lets NVIDIA GPUs since Ampere run float32
# matrix products in TF32 (10-bit mantissa); MuJoCo Playground's README warns that this harms
# training stability and recommends JAX_DEFAULT_MATMUL_PRECISION=highest. Set everywhere, not
# only on GPU: telling the backend apart would start JAX at import, and on CPU "highest" costs
# nothing (float32 either way: a 512x225 @ 225x1024 @ 1024x512 network gave bit-identical
# outputs and equal times, jax 0.10.2 and 0.11.2). The price on a GPU is measured by
# `tools/gpu_check.sh` (a bench run with JAX_DEFAULT_MATMUL_PRECISION=default beside one without).
MATMUL_PRECISION = "highest"
if "JAX_DEFAULT_MATMUL_PRECISION" not in _os.environ:
    if "jax" in _sys.modules:  # JAX already read the variable: use its config, unless set there
        if _sys.modules["jax"].config.jax_default_matmul_precision is None:
            _sys.modules["jax"].config.update("jax_default_matmul_precision", MATMUL_PRECISION)
    else:  # read by JAX when it is imported; subprocesses inherit it
        _os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = MATMUL_PRECISION

__version__ = "0.1.0"
