"""Native kinematics from MuJoCo C against MJX's kinematics in JAX, in one process
(docs/notes/cpu_speed.md). Times jitted scans of `steps` control steps at `batch`,
interleaved, median of `reps`, and prints one JSON line:

    python tools/kinematics_probe.py [batch] [steps] [reps]

- `c_kinematics` / `jax_kinematics`: `vmap(env.advance)` with the native backend's
  kinematics from C (today's code) and with the base class's MJX kinematics in JAX.
- `..._restarts`: `step_batch` with zero actions, so episodes end every ~26 steps and
  nearly every step runs a restart round.
- `jax_work_only`: `advance` with the physics replaced by a cheap stand-in.
- `physics_only`: the native step's callback alone.
Compile times are printed beside the env steps/s.
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mimic_mjx import batch as batch_lib
from mimic_mjx import env as env_lib
from mimic_mjx import physics as physics_lib
from mimic_mjx import runconfig

batch, steps, reps = (int(a) for a in (sys.argv[1:] + ["64", "64", "5"][len(sys.argv) - 1:])[:3])
config = runconfig.load_train_config("walk_cpu", ["env.physics_threads=1"])


def build(kinematics: str, mode: str):
    env = env_lib.ImitationEnv(config.env, reward_config=config.reward)
    phys = env.physics
    if kinematics == "jax":  # the base class's path: MJX's kinematics traced into the program
        phys.forward_kinematics = lambda s: physics_lib.Physics.forward_kinematics(phys, s)
        phys.step_with_kinematics = lambda s, r: physics_lib.Physics.step_with_kinematics(phys, s, r)
    if mode == "stub":
        phys.step = lambda s: (s.replace(qpos=s.qpos + 1e-4 * jnp.sin(s.qpos)), jnp.zeros((), bool))
    state = batch_lib.reset_batch(env, jax.random.PRNGKey(0), batch)
    actions = jnp.zeros((batch, env.action_size))
    if mode == "physics":
        def physics_step(d, _):
            return jax.vmap(phys.step)(d)[0], None
        return jax.jit(lambda s: jax.lax.scan(physics_step, s, None, length=steps)[0]), state.data
    def body(s, _):
        if mode == "restarts":
            return batch_lib.step_batch(env, s, actions), None
        return jax.vmap(env.advance)(s, actions), None
    return jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps)[0]), state


cases = {"c_kinematics": ("c", "advance"), "jax_kinematics": ("jax", "advance"),
         "c_kinematics_restarts": ("c", "restarts"), "jax_kinematics_restarts": ("jax", "restarts"),
         "jax_work_only": ("jax", "stub"), "physics_only": ("c", "physics")}
built, compile_s = {}, {}
for name, (kin, mode) in cases.items():
    fn, state = build(kin, mode)
    start = time.perf_counter()
    jax.block_until_ready(fn(state))
    compile_s[name] = round(time.perf_counter() - start, 1)
    built[name] = (fn, state)
times = {name: [] for name in cases}
for _ in range(reps):
    for name, (fn, state) in built.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(state))
        times[name].append(time.perf_counter() - start)
print(json.dumps({"batch": batch, "steps": steps, "reps": reps,
                  "env_steps_per_s": {k: round(batch * steps / float(np.median(v))) for k, v in times.items()},
                  "ms_per_control_step": {k: round(1e3 * float(np.median(v)) / steps, 2) for k, v in times.items()},
                  "first_call_s (compile + one run)": compile_s}))
