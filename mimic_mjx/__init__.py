"""mimic_mjx: DeepMimic-style motion imitation on MuJoCo MJX, trained with TRPO."""

import os as _os

# jax 0.10.2 on CPU: a jitted, vmapped MJX humanoid step at batch >= 64 deadlocked with
# every thread idle; disabling the concurrency-optimised scheduler fixed it at no cost
# (measured on the 2-core development machine). It must be set before JAX starts, so it
# lives here, in the first module any entry point imports. A user's own XLA_FLAGS wins.
_os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=false")

__version__ = "0.1.0"
