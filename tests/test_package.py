"""Importing the package sets the CPU XLA flags before JAX starts, unless the user set XLA_FLAGS."""

import os
import subprocess
import sys

import numpy as np
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
    import mimic_mjx

    flags = _flags_after_import(None)  # the subprocess asserts XLA did not abort on them
    assert flags == mimic_mjx.cpu_xla_flags()
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in flags.split()


def test_cpu_flags_follow_the_jaxlib_version():
    # Seen by running jax with each flag: jaxlib 0.11 aborts on the fusion-emitter flag.
    from mimic_mjx import cpu_xla_flags

    scheduler, fusion = "--xla_cpu_enable_concurrency_optimized_scheduler=false", "--xla_cpu_use_fusion_emitters=false"
    assert cpu_xla_flags("0.10.2").split() == [scheduler, fusion]
    assert cpu_xla_flags("0.11.2").split() == [scheduler]
    assert cpu_xla_flags("0.12.0") == cpu_xla_flags("not-a-version") == ""


_PRINT_PRECISION = "{before}; import mimic_mjx, jax; print(jax.config.jax_default_matmul_precision)"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("env_value, before, expected", [
    (None, "pass", "highest"),  # the package's choice
    (None, "import jax", "highest"),  # JAX imported first: set through jax.config
    ("default", "pass", "default"),  # the user's variable wins (JAX's own TF32-on-GPU default)
    (None, "import jax; jax.config.update('jax_default_matmul_precision', 'float32')", "float32"),
])
def test_matmul_precision_is_highest_unless_the_user_chose(env_value, before, expected):
    env = {k: v for k, v in os.environ.items() if k != "JAX_DEFAULT_MATMUL_PRECISION"}
    if env_value is not None:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = env_value
    out = subprocess.run([sys.executable, "-c", _PRINT_PRECISION.format(before=before)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


@pytest.mark.timeout(180)
def test_a_users_xla_flags_are_left_alone():
    assert _flags_after_import("--xla_cpu_enable_fast_math=false") == "--xla_cpu_enable_fast_math=false"


_PHYSICS = """
import sys, numpy as np, jax, jax.numpy as jnp
from mimic_mjx import bench, model, motion, physics
m = model.load_model()
qpos, qvel, ctrl = bench.initial_physics_states(motion.load_clip("walk"), m, 4)
p = physics.make(m, "mjx")
d = jax.vmap(p.put)(jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32), jnp.asarray(ctrl, jnp.float32))
d, _ = jax.jit(bench.physics_chunk(p, 4))(d)  # 4 control steps = 20 MJX steps
np.savez(sys.argv[1], qpos=np.asarray(d.qpos), qvel=np.asarray(d.qvel))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_compile_flag_changes_physics_results_only_by_rounding(tmp_path):
    # The fusion-emitter flag is chosen for compile time; the physics it compiles must agree
    # with XLA's default codegen: 20 MJX steps of 4 mocap poses, run in two processes. (On
    # jaxlib 0.11, which has no such flag, both processes run the same flags.)
    out = {}
    for name, flags in (("default", "--xla_cpu_enable_concurrency_optimized_scheduler=false"), ("ours", None)):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if flags is not None:
            env["XLA_FLAGS"] = flags
        path = tmp_path / f"{name}.npz"
        run = subprocess.run([sys.executable, "-c", _PHYSICS, str(path)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        out[name] = np.load(path)
    np.testing.assert_allclose(out["ours"]["qpos"], out["default"]["qpos"], atol=1e-5)
    np.testing.assert_allclose(out["ours"]["qvel"], out["default"]["qvel"], atol=1e-3)
