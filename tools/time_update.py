"""Time the training update's parts on one real rollout (BENCHMARKS.md, issue 12).

    python tools/time_update.py [KEY=VALUE ...]      # walk_cpu with --set style overrides
    python tools/time_update.py trpo.value_epochs=2 trpo.fvp_subsample=5   # the preset before 2026-12-06

Trains 30 iterations (so the policy has moved off its initialisation), takes one rollout, then
prints the median of 31 calls of each part: GAE, the whole `train.update`, `trpo.trpo_step` and
`trpo.fit_value` without and with the values GAE computed (`values_before`). Run it on an idle
machine; `taskset -c 0` pins it to one core.
"""

import statistics
import sys
import time

import jax

import mimic_mjx  # noqa: F401  (the CPU XLA flags, before JAX starts)
from mimic_mjx import networks as nets
from mimic_mjx import critic, runconfig, train
from mimic_mjx import trpo as trpo_lib


def median_ms(fn, *args, calls: int = 31) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(overrides: list[str]) -> None:
    config = runconfig.resolve_defaults(runconfig.load_train_config("walk_cpu", overrides))
    env, _ = train.build_env(config)
    policy, value = train.make_networks(env, config)
    state = jax.jit(lambda k: train.init(env, config, k, config.reward))(jax.random.PRNGKey(0))
    iteration = jax.jit(train.make_iteration(env, config))
    for _ in range(30):
        state, _ = iteration(state)
    state, traj = jax.jit(lambda s: train.rollout(env, policy, s, jax.random.PRNGKey(1), config.horizon))(state)

    hyper = config.trpo
    gae = jax.jit(lambda s, tr: train.compute_advantages(value, s.value_params, s.normalizer, tr, s.trpo))
    adv, returns, values = gae(state, traj)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    obs = flat(nets.normalize(state.normalizer, traj.obs))
    batch = trpo_lib.TrpoBatch(obs=obs, actions=flat(traj.actions), advantages=flat(adv))
    key = jax.random.PRNGKey(2)
    # Arrays go in as arguments: closed over, XLA would constant-fold the batch at compile time.
    update = jax.jit(lambda s, tr, a, r, v: train.update(policy, value, s, tr, a, r, v, key,
                                                         hyper.value_epochs, hyper.value_minibatches))
    step = jax.jit(lambda p, b, c: trpo_lib.trpo_step(policy.apply, p, b, c))

    def fit(obs, targets, values_before=None):
        return critic.fit_value(value.apply, state.value_params, state.value_opt_state, critic.value_optimizer(),
                                  obs, targets, key, hyper.value_epochs, hyper.value_minibatches,
                                  learning_rate=state.trpo.value_lr, values_before=values_before)

    fit_jit = jax.jit(fit)
    print(f"walk_cpu {' '.join(overrides)}: fvp_subsample {hyper.fvp_subsample}, value_epochs {hyper.value_epochs}, "
          f"batch {obs.shape[0]} x {obs.shape[1]}")
    print(f"GAE {median_ms(gae, state, traj):.1f} ms | update {median_ms(update, state, traj, adv, returns, values):.1f} ms | "
          f"trpo_step {median_ms(step, state.policy_params, batch, state.trpo):.1f} ms | "
          f"fit_value {median_ms(fit_jit, obs, flat(returns)):.1f} ms, "
          f"with GAE's values {median_ms(fit_jit, obs, flat(returns), flat(values)):.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
