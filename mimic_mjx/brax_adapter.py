"""Our imitation environment in Brax's `Env` interface, for Brax's trainers (PPO, SAC, ...).

`mimic-mjx bench` trains Brax PPO on it as a peer of our TRPO trainer. Brax is optional (the
`bench` extra); nothing here imports it at module level.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mimic_mjx import batch as batch_lib
from mimic_mjx import env as env_lib


def brax_unavailable() -> str | None:
    """Why the Brax row cannot run here, or None."""
    try:
        import brax  # noqa: F401
        from brax.training.agents.ppo import train  # noqa: F401
    except ImportError as e:
        return f"brax not installed ({e.name or e}); install the bench extra: pip install -e '.[bench]'"
    return None


def restore_device_put_replicated() -> None:
    """Brax 0.14.2's PPO calls `jax.device_put_replicated`, which jax 0.10 removed. This puts
    back its documented behaviour (x stacked once per device, one slice on each) for Brax only;
    it is a no-op on a jax that still has it."""
    if hasattr(jax, "device_put_replicated"):
        return

    def device_put_replicated(x, devices):
        mesh = jax.sharding.Mesh(np.array(devices), ("i",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("i"))
        return jax.tree.map(lambda a: jax.device_put(np.stack([np.asarray(a)] * len(devices)), sharding), x)

    jax.device_put_replicated = device_put_replicated


def brax_env(env: env_lib.ImitationEnv):
    """`env`, batched, in Brax's `Env` interface (what Brax's VmapWrapper + EpisodeWrapper give
    PPO: `info` carries truncation and episode bookkeeping). Our env resets itself inside
    `step`, so PPO must run with `wrap_env=False`."""
    from brax.envs.base import Env, State

    def info(done, truncated, sum_reward, length):
        return {"truncation": truncated, "episode_done": done,
                "episode_metrics": {"sum_reward": sum_reward, "length": length}}

    class ImitationBraxEnv(Env):
        def reset(self, rng):  # rng [B, 2]
            s = jax.vmap(env.reset)(rng)
            zeros = jnp.zeros(rng.shape[:-1])
            return State(pipeline_state=s, obs=s.obs, reward=zeros, done=zeros, metrics={},
                         info=info(zeros, zeros, zeros, zeros))

        def step(self, state, action):
            s = batch_lib.step_batch(env, state.pipeline_state, action)
            done = s.done.astype(jnp.float32)
            keep = 1.0 - state.info["episode_done"]
            episode = state.info["episode_metrics"]
            return state.replace(pipeline_state=s, obs=s.obs, reward=s.reward, done=done,
                                 info=info(done, s.truncated.astype(jnp.float32),
                                           episode["sum_reward"] * keep + s.reward, episode["length"] * keep + 1.0))

        @property
        def observation_size(self):
            return env.observation_size

        @property
        def action_size(self):
            return env.action_size

        @property
        def backend(self):
            return "mjx"

    return ImitationBraxEnv()
