"""Running compiled programs: the persistent compile cache, compiles whose cache key depends
only on the program, and what a compiled program costs in memory.

Every command that compiles a humanoid program (train, sweep, eval, render, bench) goes
through here, because on a CPU one compile takes from seconds to minutes.
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable

import jax

from mimic_mjx import parallel


def enable_compile_cache() -> None:
    """Keep compiled programs on disk between commands (CPU compiles take minutes).

    Directory: `$MIMIC_MJX_COMPILE_CACHE`, else ~/.cache/mimic_mjx/jax_cache; set the
    variable to `off` to disable. A cache directory configured elsewhere (tests) is kept.
    It serves MJX and pure-JAX programs only: JAX never writes a program that holds a host
    callback (`_cache_write` in jax/_src/compiler.py), so native-physics programs compile anew
    in every process.
    """
    where = os.environ.get("MIMIC_MJX_COMPILE_CACHE", str(pathlib.Path.home() / ".cache" / "mimic_mjx" / "jax_cache"))
    if where == "off" or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    # Only programs worth caching: the env's step functions take tens of seconds on CPU.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def compile_fresh(fn: Callable, *args, out_shardings=None) -> Callable:
    """`jax.jit(fn)` compiled ahead of time for `args`, lowered from empty tracing caches.

    JAX reuses traces of inner jitted functions (jnp.where, take, ...) across programs, which
    renumbers the private functions of the next lowered module: the same program then misses
    the persistent compile cache (minutes of CPU compile) because of what the process traced
    before. Clearing the caches first makes the lowered text, and so the cache key, a
    function of `fn` and `args` alone. `out_shardings` pins where the outputs live (a
    multi-device run); the inputs' shardings come from `args`.
    """
    jax.clear_caches()
    return parallel.jit(fn, out_shardings).lower(*args).compile()


def peak_device_bytes() -> int | None:
    """Process-wide peak device memory so far (GPU); None where JAX keeps no stats (CPU)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def program_bytes(compiled) -> int | None:
    """XLA's static size of a compiled program's buffers: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
