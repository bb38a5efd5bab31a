"""Shared test setup: CPU-safe XLA flags, a persistent compile cache, small fixtures."""

import os
import pathlib

# Must precede the first JAX import: mimic_mjx sets the CPU XLA flags (a deadlock fix and
# faster compiles; see mimic_mjx/__init__.py).
import mimic_mjx  # noqa: E402, F401

import jax  # noqa: E402

_CACHE = pathlib.Path(os.environ.get("MIMIC_MJX_TEST_CACHE", pathlib.Path.home() / ".cache" / "mimic_mjx" / "jax_test_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402

# One compiled rollout of the walk environment serves the env and diagnose tests: compiling
# an MJX humanoid step costs over a minute on CPU. 8 envs per policy, 60 steps, episodes
# capped at 1.5 s (45 steps) so time-limit truncations happen inside the window.
WALK_ENVS = 8
WALK_STEPS = 60


@pytest.fixture(scope="session")
def walk_env():
    from mimic_mjx import env as env_lib

    return env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk", episode_seconds=1.5))


@pytest.fixture(scope="session")
def walk_rollout(walk_env):
    from mimic_mjx import diagnose

    return diagnose.make_rollout(walk_env, WALK_ENVS, WALK_STEPS)


@pytest.fixture(scope="session")
def walk_reset(walk_env):
    from mimic_mjx import batch as batch_lib
    from mimic_mjx import diagnose

    n = len(diagnose.POLICIES) * WALK_ENVS
    return jax.jit(lambda key: batch_lib.reset_batch(walk_env, key, n))(jax.random.PRNGKey(1))


@pytest.fixture(scope="session")
def walk_rollouts(walk_rollout, walk_reset):
    """Unmodified rollouts of the reference, zero and random policies on walk."""
    return walk_rollout(jax.random.PRNGKey(2), walk_reset)
