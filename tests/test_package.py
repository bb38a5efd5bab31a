"""Importing the package sets the CPU XLA flags before JAX starts, unless the user set XLA_FLAGS."""

import os
import subprocess
import sys

import pytest

_PRINT_FLAGS = "import mimic_mjx, os, jax; jax.numpy.zeros(1).block_until_ready(); print(os.environ['XLA_FLAGS'])"


def _flags_after_import(env_flags):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    out = subprocess.run([sys.executable, "-c", _PRINT_FLAGS], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # XLA aborts on a flag it does not know
    return out.stdout.strip()


@pytest.mark.timeout(180)
def test_cpu_flags_are_set_and_known_to_this_xla():
    flags = _flags_after_import(None)
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in flags.split()
    assert "--xla_cpu_use_fusion_emitters=false" in flags.split()


@pytest.mark.timeout(180)
def test_a_users_xla_flags_are_left_alone():
    assert _flags_after_import("--xla_cpu_enable_fast_math=false") == "--xla_cpu_enable_fast_math=false"
