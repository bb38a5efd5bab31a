"""Reward diagnosis before training: is there a learning signal at all?

Runs a batch of environments under three fixed policies — `reference` (PD targets = the
reference pose one step ahead: a good imitation), `zero` (neutral targets) and `random`
(uniform actions) — in one compiled program, keeps each step's raw reward errors, and reports
per policy the reward per step against its maximum, every term, episode length and the spread
of discounted returns. Warnings name dead, saturated or undiscriminating rewards with the
likely cause and a concrete fix. Because the raw errors are kept, `rescore` evaluates any
number of reward configs on the same rollouts without simulating again: the fast sweep.
"""

import itertools
import math
import time

import flax.struct
import jax
import jax.numpy as jnp

from mimic_mjx import batch as batch_lib
from mimic_mjx import env as env_lib
from mimic_mjx import reward as reward_lib
from mimic_mjx.errors import MimicError

POLICIES = ("reference", "zero", "random")
GAMMA = 0.95  # DeepMimic's discount (Peng et al. 2018, Sec. 7)
# A policy earning under this fraction of the maximum per step gives returns too flat to
# learn from; the trainer's alarm uses the same threshold (reward.VANISHING_FRACTION says why).
VANISHING = reward_lib.VANISHING_FRACTION
SATURATED = 0.9  # every policy above this fraction: the reward cannot tell them apart
TARGET_TERM = 0.3  # suggested scales put the random policy's term value near 0.3


@flax.struct.dataclass
class Rollouts:
    """Per-step records of P policies x N environments over T steps ([T, P, N, ...])."""

    errors: reward_lib.Errors  # raw errors, each [T, P, N]
    actions: jax.Array  # [T, P, N, A]
    # env.step's own rewards under the env's reward config: a terminating step earns 0 there.
    rewards: jax.Array  # [T, P, N]
    reward_terms: dict  # name -> [T, P, N]
    terminated: jax.Array  # [T, P, N] bool
    truncated: jax.Array  # [T, P, N] bool


def make_rollout(env: env_lib.ImitationEnv, num_envs: int, steps: int):
    """A jitted `rollout(rng[, state]) -> (Rollouts, final State)` of the three policies side by side.

    Environments [p*N, (p+1)*N) run policy p of POLICIES; `state`, if given, is a batched
    env State of P*N environments to start from (tests use it to set up falls and NaNs).
    """
    num_policies = len(POLICIES)
    policy = jnp.repeat(jnp.arange(num_policies), num_envs)  # [P*N] policy id per env

    def act(state, key):
        reference = jax.vmap(env.reference_action)(state)
        random = jax.random.uniform(key, reference.shape, minval=-1.0, maxval=1.0)
        choice = policy[:, None]
        return jnp.where(choice == 0, reference, jnp.where(choice == 1, 0.0, random))

    def body(carry, _):
        state, key = carry
        key, sub = jax.random.split(key)
        action = act(state, sub)
        state = batch_lib.step_batch(env, state, action)
        return (state, key), (state.errors, action, state.reward, state.reward_terms, state.terminated, state.truncated)

    def rollout(rng, state=None):
        """Rollouts of `steps` steps, and the final batched env State ([P*N] envs)."""
        rng, reset_key = jax.random.split(rng)
        if state is None:
            state = batch_lib.reset_batch(env, reset_key, num_policies * num_envs)
        (state, _), (errors, actions, rewards, terms, term, trunc) = jax.lax.scan(
            body, (state, rng), None, length=steps)
        split = lambda x: x.reshape((steps, num_policies, num_envs) + x.shape[2:])  # noqa: E731
        return Rollouts(errors=jax.tree.map(split, errors), actions=split(actions), rewards=split(rewards),
                        reward_terms=jax.tree.map(split, terms), terminated=split(term),
                        truncated=split(trunc)), state

    return jax.jit(rollout)


def step_rewards(rollouts: Rollouts, config: reward_lib.RewardConfig):
    """Rewards [T, P, N] and terms of the stored rollouts re-scored under `config`.

    Scored as env.step scores them (`reward.step_reward`, which holds the rule that a
    terminating step earns 0), so under the env's own config this reproduces
    `rollouts.rewards` (tests/test_env.py checks it). The diagnosis itself reads
    `rollouts.rewards` (`summarize(..., own=True)`).
    """
    return reward_lib.step_reward(rollouts.errors, rollouts.actions, config, rollouts.terminated)


def discounted_returns(rewards, done, gamma):
    """G_t = r_t + γ G_{t+1}, cut at episode ends, no bootstrap past the window; [T, ...]."""

    def back(g, x):
        r, d = x
        g = r + gamma * g * (1.0 - d)
        return g, g

    _, g = jax.lax.scan(back, jnp.zeros_like(rewards[0]), (rewards, done.astype(rewards.dtype)), reverse=True)
    return g


def _stats(rollouts: Rollouts, config: reward_lib.RewardConfig, rewards, terms):
    done = rollouts.terminated | rollouts.truncated
    returns = discounted_returns(rewards, done, GAMMA)
    steps = rewards.shape[0] * rewards.shape[2]
    # Episodes per policy: finished ones plus the one each env is still in at the end.
    episodes = jnp.sum(done, axis=(0, 2)) + jnp.sum(~done[-1], axis=-1)
    over = lambda x: (x.mean(axis=(0, 2)), x.min(axis=(0, 2)), x.max(axis=(0, 2)))  # noqa: E731
    return {
        "reward": over(rewards),
        "terms": {k: over(v) for k, v in terms.items()},
        "episode_length": steps / episodes,
        "return_std": returns.std(axis=(0, 2)),
        "fall_rate": jnp.sum(rollouts.terminated, axis=(0, 2)) / episodes,
        "term_errors": {k: v.mean(axis=(0, 2)) for k, v in reward_lib.term_errors(rollouts.errors, config).items()},
    }


def _rescored_stats(rollouts: Rollouts, config: reward_lib.RewardConfig):
    return _stats(rollouts, config, *step_rewards(rollouts, config))


_policy_stats = jax.jit(_rescored_stats)
_own_stats = jax.jit(_stats)


def summarize(rollouts: Rollouts, config: reward_lib.RewardConfig, own: bool = False) -> dict:
    """Per-policy report (the `policies` part of diagnose's JSON) under `config`.

    `own=True`: read env.step's rewards (`config` must be the env's reward config, the one
    the rollouts ran with); otherwise re-score the raw errors under `config`.
    """
    if own:
        stats = jax.device_get(_own_stats(rollouts, config, rollouts.rewards, rollouts.reward_terms))
    else:
        stats = jax.device_get(_policy_stats(rollouts, config))
    max_reward = float(reward_lib.max_reward(config))
    out = {}
    for p, name in enumerate(POLICIES):
        out[name] = {
            "reward_mean": float(stats["reward"][0][p]),
            "reward_max_possible": max_reward,
            "reward_fraction": float(stats["reward"][0][p]) / max_reward if max_reward > 0 else float("nan"),
            "episode_length_mean": float(stats["episode_length"][p]),
            "fall_rate": float(stats["fall_rate"][p]),
            "return_std": float(stats["return_std"][p]),
            "terms": {
                k: {"mean": float(v[0][p]), "min": float(v[1][p]), "max": float(v[2][p])}
                for k, v in stats["terms"].items()
            },
            "term_errors": {k: float(v[p]) for k, v in stats["term_errors"].items()},
        }
    return out


def warnings_for(policies: dict, config: reward_lib.RewardConfig) -> list[str]:
    """Plain-words warnings: vanishing, saturated, or reference not beating random."""
    cfg = reward_lib.config_to_dict(config)
    out = []
    for name, p in policies.items():
        if p["reward_fraction"] < VANISHING:
            out.append(
                f"vanishing reward: the {name} policy earns {p['reward_mean']:.3g} per step, "
                f"{p['reward_fraction']:.1e} of the maximum {p['reward_max_possible']:.3g}; advantages, KL and "
                f"policy updates will be ~0 and nothing will learn. {_culprit(policies, cfg)}"
            )
    if all(p["reward_fraction"] > SATURATED for p in policies.values()):
        out.append(
            "saturated reward: every policy, random included, earns over "
            f"{SATURATED:.0%} of the maximum, so the reward cannot tell good imitation from bad. "
            "Likely cause: scales too small for the errors. Fix: raise the term scales "
            f"(--scales to compare), e.g. {_suggest(policies, cfg)}"
        )
    ref, rnd = policies["reference"], policies["random"]
    gap = ref["reward_mean"] - rnd["reward_mean"]
    if gap < 0.05 * ref["reward_max_possible"]:
        out.append(
            f"reference does not clearly beat random: {ref['reward_mean']:.3g} vs {rnd['reward_mean']:.3g} per step "
            f"(gap {gap:.3g}, under 5% of the maximum). Likely cause: terms that ignore the pose "
            "(alive bonus, action penalty) dominate, or scales make every error look alike. "
            f"Fix: weight the tracking terms and set scales near {_suggest(policies, cfg)}"
        )
    return out


def _active_terms(cfg):
    return [t for t in reward_lib.TERM_NAMES if cfg[f"{t}_weight"] > 0]


def _suggest(policies, cfg) -> str:
    parts = []
    for t in _active_terms(cfg):
        err = policies["random"]["term_errors"][t]
        if err > 0:
            parts.append(f"reward.{t}_scale={_scale_for(err, cfg['form']):.3g}")
    return ", ".join(parts) or "(no active tracking term)"


def _scale_for(err: float, form: float) -> float:
    """Scale k that makes f(k * err) = TARGET_TERM for the given form."""
    if form == reward_lib.FORM_LINEAR:
        return (1 - TARGET_TERM) / err
    if form == reward_lib.FORM_QUADRATIC:
        return (1 - math.sqrt(TARGET_TERM)) / err
    if form == reward_lib.FORM_ONE_MINUS_SQUARE:
        return math.sqrt(1 - TARGET_TERM) / err
    return -math.log(TARGET_TERM) / err


def _culprit(policies, cfg) -> str:
    """The term whose scaled error is largest for the random policy, and a scale to fix it."""
    rnd = policies["random"]
    active = _active_terms(cfg)
    if not active:
        return "Likely cause: no tracking term has a positive weight."
    t = max(active, key=lambda k: cfg[f"{k}_scale"] * rnd["term_errors"][k])
    err, k = rnd["term_errors"][t], cfg[f"{t}_scale"]
    return (
        f"Likely cause: term '{t}' has error {err:.3g} under the random policy and scale {k:g}, "
        f"so f({k * err:.3g}) ≈ 0. Fix: --set reward.{t}_scale={_scale_for(err, cfg['form']):.3g} "
        f"(puts the random policy's {t} term near {TARGET_TERM}), or use the deepmimic_paper preset. "
        "The remedies for a dead imitation reward, side by side: docs/seed_remedies.md."
    )


def parse_scales(items: list[str]) -> list[dict]:
    """`["pose_scale=1,2", "end_effector_scale=10,40"]` -> the grid of override dicts."""
    if not items:
        return []
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().removeprefix("reward.")
        if not sep or not values:
            raise MimicError(f"--scales {item!r}: expected FIELD=V1,V2,...")
        try:
            nums = [float(v) for v in values.split(",")]
        except ValueError:
            raise MimicError(f"--scales {item!r}: values must be numbers") from None
        axes.append([(key, v) for v in nums])
    return [dict(combo) for combo in itertools.product(*axes)]


_rescore_stats = jax.jit(jax.vmap(_rescored_stats, in_axes=(None, 0)))


def rescore(rollouts: Rollouts, base: reward_lib.RewardConfig, grid: list[dict]) -> list[dict]:
    """Score the stored rollouts under each config of `grid` (vmapped, one program)."""
    configs = [reward_lib.with_overrides(base, overrides) for overrides in grid]
    stacked = reward_lib.stack_configs(configs)
    stats = jax.device_get(_rescore_stats(rollouts, stacked))
    rows = []
    for i, (overrides, config) in enumerate(zip(grid, configs)):
        max_reward = float(reward_lib.max_reward(config))
        fractions = {name: float(stats["reward"][0][i][p]) / max_reward for p, name in enumerate(POLICIES)}
        rows.append(
            {
                "overrides": overrides,
                "reward_fraction": fractions,
                "reference_minus_random": fractions["reference"] - fractions["random"],
                "return_std": {name: float(stats["return_std"][i][p]) for p, name in enumerate(POLICIES)},
            }
        )
    return rows


def check_inputs(reward_config: reward_lib.RewardConfig, num_envs: int, steps: int,
                 scales: list[str] | None) -> list[dict]:
    """Refuse bad sizes and a bad `--scales` grid before anything is built; returns the grid."""
    for flag, value in (("--envs", num_envs), ("--steps", steps)):
        if value < 1:
            raise MimicError(f"{flag} must be >= 1, got {value}")
    grid = parse_scales(scales or [])
    for overrides in grid:  # unknown fields and out-of-range values, before any simulation
        reward_lib.with_overrides(reward_config, overrides)
    return grid


def diagnose(env_config: env_lib.EnvConfig, reward_config: reward_lib.RewardConfig, reward_name: str,
             num_envs: int = 16, steps: int = 90, seed: int = 0, scales: list[str] | None = None,
             progress=print) -> dict:  # fmt: skip
    """Run the diagnosis of `reward_config` (named `reward_name` in the report) on the clip
    `env_config.motion`; returns the JSON-able report (and timings)."""
    config = reward_lib.validate(reward_config)
    grid = check_inputs(config, num_envs, steps, scales)
    env = env_lib.ImitationEnv(env_config, reward_config=config)
    rollout = make_rollout(env, num_envs, steps)
    progress(f"compiling {len(POLICIES)} x {num_envs} environments x {steps} steps of '{env.clip.name}' ...")
    t0 = time.perf_counter()
    compiled = rollout.lower(jax.random.PRNGKey(seed)).compile()  # timed apart from running
    compile_s = time.perf_counter() - t0
    progress(f"compiled in {compile_s:.0f} s; simulating ...")
    t0 = time.perf_counter()
    rollouts, _ = jax.block_until_ready(compiled(jax.random.PRNGKey(seed)))
    simulate_s = time.perf_counter() - t0
    policies = summarize(rollouts, config, own=True)
    report = {
        "motion": env.clip.name,
        "reward": reward_name,
        "reward_config": reward_lib.config_to_dict(config),
        "num_envs_per_policy": num_envs,
        "steps": steps,
        "policies": policies,
        "warnings": warnings_for(policies, config),
        "timing": {"compile_s": compile_s, "simulate_s": simulate_s},
    }
    if grid:
        rescore(rollouts, config, grid)  # compile the re-scorer for this grid size, untimed
        t0 = time.perf_counter()
        report["scales"] = rescore(rollouts, config, grid)
        rescore_s = time.perf_counter() - t0
        report["timing"]["rescore_s"] = rescore_s
        report["timing"]["rescore_configs"] = len(grid)
    return report


def format_report(report: dict) -> str:
    """Human-readable tables of a diagnose report."""
    lines = [f"motion {report['motion']}, reward {report['reward']}, "
             f"{report['num_envs_per_policy']} envs x {report['steps']} steps per policy"]  # fmt: skip
    # Only terms that contribute: zero-weight ones would be columns of zeros.
    terms = [t for t, v in report["policies"]["reference"]["terms"].items()
             if any(p["terms"][t]["min"] != 0 or p["terms"][t]["max"] != 0 for p in report["policies"].values())]
    head = f"{'policy':<10} {'reward':>8} {'of max':>8} {'ep.len':>7} {'falls':>6} {'ret.std':>8}  " + " ".join(
        f"{t[:12]:>12}" for t in terms
    )
    lines += ["", head]
    for name, p in report["policies"].items():
        lines.append(
            f"{name:<10} {p['reward_mean']:8.4f} {p['reward_fraction']:8.2e} {p['episode_length_mean']:7.1f} "
            f"{p['fall_rate']:6.2f} {p['return_std']:8.4f}  "
            + " ".join(f"{p['terms'][t]['mean']:12.4g}" for t in terms)
        )
    lines.append(f"(terms: mean per step; min/max in --json; maximum reward per step "
                 f"{report['policies']['reference']['reward_max_possible']:.3g})")  # fmt: skip
    if "scales" in report:
        lines += ["", f"re-scored {len(report['scales'])} configs on the same rollouts in "
                  f"{report['timing']['rescore_s']:.2f} s (simulating took {report['timing']['simulate_s']:.2f} s "
                  f"+ {report['timing']['compile_s']:.0f} s compile):"]  # fmt: skip
        lines.append(f"{'overrides':<44} {'reference':>10} {'zero':>10} {'random':>10} {'ref-rand':>9}")
        for row in report["scales"]:
            o = " ".join(f"{k}={v:g}" for k, v in row["overrides"].items())
            f = row["reward_fraction"]
            lines.append(f"{o:<44} {f['reference']:10.3g} {f['zero']:10.3g} {f['random']:10.3g} "
                         f"{row['reference_minus_random']:9.3f}")  # fmt: skip
    lines.append("")
    lines += [f"WARNING: {w}" for w in report["warnings"]] or ["no warnings: the reward has a usable signal"]
    return "\n".join(lines)
