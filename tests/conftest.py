"""Shared test setup: CPU-safe XLA flags, a persistent compile cache, small fixtures."""

import os
import pathlib

# Must precede the first JAX import (see mimic_mjx/__init__.py for the deadlock it avoids).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=false")

import jax  # noqa: E402

_CACHE = pathlib.Path(os.environ.get("MIMIC_MJX_TEST_CACHE", pathlib.Path.home() / ".cache" / "mimic_mjx" / "jax_test_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
