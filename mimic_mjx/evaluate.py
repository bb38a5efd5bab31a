"""One yardstick for every policy: deterministic actions, a fixed reference reward.

Each evaluation episode starts at clip time 0 (or, with `--rsi`, at a random clip time), acts with
the policy's mean action, and runs until it falls or reaches a full-length episode:
`env.max_steps` (the 20 s time limit, 600 steps) for looping clips, the clip's length in
steps for clips that do not loop. Every step is re-scored from the env's raw errors under
the `deepmimic_paper` reward (each step in [0, 1], 0 on the step that falls), whatever
reward the run trained on, so runs with different rewards compare on one scale:

    normalized_return = mean over episodes of (sum of reference-reward steps) / (full steps)

with the maximum reward 1 per step, so 1 is perfect tracking for a full episode and falling
early lowers it. An episode's full steps count from its own start: from a random clip time
(`--rsi`) of a clip that does not loop, what is left of the clip (`episode_full_steps`).

With RSI off and a deterministic policy every episode starts in the same state, so on CPU the
episodes of one call are identical; `episodes` > 1 guards against rare non-determinism on
accelerators and keeps the batch shape the trainer's sweep members share. `--rsi` starts
each episode at its own random clip time (DeepMimic's training distribution) and runs it
until its time limit or, for a clip that does not loop, the clip's end.

`normalized_return_code` scores the same steps with DeepMimic's released reward
(`deepmimic_code`: joint errors as a weighted mean, not the paper's plain sums; a root term;
COM velocity), the scale DeepMimic's Table 2 is on as far as we can tell. It is the number to
hold beside Table 2; `normalized_return` stays the yardstick (the paper's formula, stricter).

`root_drift_m` is the horizontal distance between the character's root and the reference
root at each episode's last scored step (after 20 s for an episode that does not fall): a
policy that stands or shuffles in place drifts by the distance the clip walks.

Pure core: `rollout_scores` and `summarize` (jit/vmap-able, e.g. over sweep members);
host side: `evaluate_state` (an in-memory TrainState) and `evaluate` (a run directory).
"""

from __future__ import annotations

import json
import pathlib

import flax.struct
import jax
import jax.numpy as jnp

from mimic_mjx import batch as batch_lib
from mimic_mjx import compiled
from mimic_mjx import env as env_lib
from mimic_mjx import networks as nets
from mimic_mjx import policy as policy_lib
from mimic_mjx import reward as reward_lib
from mimic_mjx import runconfig, train as train_lib
from mimic_mjx.errors import MimicError

REFERENCE_PRESET = "deepmimic_paper"
# The same rollout scored by DeepMimic's released code (weighted mean joint errors, a root
# term, COM velocity: reward.py `deepmimic_code`), the scale its Table 2 is on as far as we
# can tell; milder than the paper's sums, so `normalized_return_code` > `normalized_return`.
CODE_PRESET = "deepmimic_code"
# The keys `mimic-mjx eval --json` promises; others may be added.
KEYS = ("normalized_return", "normalized_return_code", "reward_per_step", "episode_length_mean",
        "joint_angle_error_rad", "end_effector_error_m", "root_drift_m", "fall_rate")
DEFAULT_EPISODES = 10


@flax.struct.dataclass
class EpisodeScores:
    """Per-episode totals of one evaluation batch, each `[E]`."""

    reference_return: jax.Array  # sum over the episode of the reference (paper) reward
    code_return: jax.Array  # the same under CODE_PRESET, over its maximum per step
    train_return: jax.Array  # the same under the run's own reward
    length: jax.Array  # steps until the fall or the end (int32)
    terminated: jax.Array  # bool: ended by a fall (or non-finite physics), not the time/clip limit
    angle_error_sum: jax.Array  # Σ over scored steps of mean joint angle error, rad
    end_effector_error_sum: jax.Array  # Σ over scored steps of mean end-effector distance, m
    scored_steps: jax.Array  # steps whose errors were summed (all but the final one)
    root_drift: jax.Array  # horizontal root distance from the reference at the last scored step, m
    termination: dict  # reason -> [E] bool, why the episode ended (env.TERMINATIONS)
    full_steps: jax.Array  # steps the episode lasts if it never falls, from its start (`episode_full_steps`)


def full_episode_steps(env: env_lib.ImitationEnv) -> int:
    """Steps of a full-length evaluation episode from clip time 0.

    Looping clips: the time limit; otherwise until the env's float32 clock reaches the clip's
    end. One rule for both: `episode_full_steps` at start time 0.
    """
    return int(episode_full_steps(env, jnp.zeros((1,), jnp.float32))[0])


def tracking_errors(env: env_lib.ImitationEnv, state: env_lib.State) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mean joint angle error [rad], mean end-effector distance [m], horizontal root distance
    [m]) of one env vs its reference.

    Angles are the rotation angles of sim⁻¹·ref local joint rotations over the 12 tracked
    joints; end-effector distances are in the root's heading frame with heights above the
    floor, as the reward compares them.
    """
    sim = env.kinematics(state.data)
    ref_data, _ = env.reference(state.time)
    ref = env.kinematics(ref_data)
    angle = jnp.mean(reward_lib.quat_diff_angle(sim.joint_quat, ref.joint_quat))
    distance = jnp.mean(jnp.linalg.norm(sim.end_effectors - ref.end_effectors, axis=-1))
    drift = jnp.linalg.norm(sim.root_pos[:2] - ref.root_pos[:2])
    return angle, distance, drift


def rollout_scores(env: env_lib.ImitationEnv, policy: nets.PolicyNetwork, policy_params,
                   normalizer: nets.NormalizerState, reward_config: reward_lib.RewardConfig,
                   rng: jax.Array, episodes: int, steps: int) -> EpisodeScores:
    """Run `episodes` envs for `steps` steps with the mean action; score each one's first episode.

    Episodes start at clip time 0 when `env` has `rsi=False`. Steps after an env's first episode ends are ignored. The
    errors of an episode's final step are not scored: the env has already replaced that
    state by a reset one (its fall is counted by `terminated` instead).
    """
    reference = reward_lib.preset(REFERENCE_PRESET)
    best = reward_lib.max_reward(reference)
    code = reward_lib.preset(CODE_PRESET)
    code_best = reward_lib.max_reward(code)
    state0 = batch_lib.reset_batch(env, rng, episodes, reward_config)
    zeros = jnp.zeros((episodes,), jnp.float32)
    falses = jnp.zeros((episodes,), bool)
    scores0 = EpisodeScores(zeros, zeros, zeros, jnp.zeros((episodes,), jnp.int32), falses, zeros, zeros, zeros, zeros,
                            {k: falses for k in env_lib.TERMINATIONS}, episode_full_steps(env, state0.time))

    def step(carry, _):
        state, alive, scores = carry
        mean, _ = policy.apply(policy_params, nets.normalize(normalizer, state.obs))
        nxt = batch_lib.step_batch(env, state, mean)
        ref_reward, _ = reward_lib.step_reward(nxt.errors, mean, reference, nxt.terminated)
        ref_reward = ref_reward / best
        code_reward, _ = reward_lib.step_reward(nxt.errors, mean, code, nxt.terminated)
        done = nxt.terminated | nxt.truncated
        angle, distance, drift = jax.vmap(lambda s: tracking_errors(env, s))(nxt)
        scored = alive & ~done
        scores = EpisodeScores(
            reference_return=scores.reference_return + jnp.where(alive, ref_reward, 0.0),
            code_return=scores.code_return + jnp.where(alive, code_reward / code_best, 0.0),
            train_return=scores.train_return + jnp.where(alive, nxt.reward, 0.0),
            length=scores.length + alive.astype(jnp.int32),
            terminated=scores.terminated | (alive & nxt.terminated),
            angle_error_sum=scores.angle_error_sum + jnp.where(scored, angle, 0.0),
            end_effector_error_sum=scores.end_effector_error_sum + jnp.where(scored, distance, 0.0),
            scored_steps=scores.scored_steps + scored.astype(jnp.float32),
            root_drift=jnp.where(scored, drift, scores.root_drift),
            termination={k: scores.termination[k] | (alive & nxt.termination[k]) for k in scores.termination},
            full_steps=scores.full_steps,
        )
        return (nxt, alive & ~done, scores), None

    (_, _, scores), _ = jax.lax.scan(step, (state0, jnp.ones((episodes,), bool), scores0), None, length=steps)
    return scores


def episode_full_steps(env: env_lib.ImitationEnv, start_times: jax.Array) -> jax.Array:
    """Steps [E] (float32) an episode starting at clip time `start_times [E]` lasts if it never
    falls: until the time limit, or for a clip that does not loop until its end.

    The env's own float32 clock, step by step (as `full_episode_steps` for time 0), so an
    episode from a random clip time of a clip that does not loop is scored against what is
    left of the clip: otherwise a perfect policy would score about 0.5 with `--rsi` on kick.
    """
    duration = env.clip_arrays.duration

    def step(carry, _):
        t, steps, running = carry
        steps = steps + running.astype(jnp.float32)
        t = t + env.dt
        ended = steps >= env.max_steps
        if not env.clip.loop:
            ended = ended | (t >= duration)
        return (t, steps, running & ~ended), None

    start = jnp.asarray(start_times, jnp.float32)
    carry = (start, jnp.zeros_like(start), jnp.ones(start.shape, bool))
    (_, steps, _), _ = jax.lax.scan(step, carry, None, length=env.max_steps)  # scalar steps: cheap
    return steps


def summarize(scores: EpisodeScores) -> dict[str, jax.Array]:
    """The evaluation metrics (scalars) from per-episode totals; pure, vmappable.

    `normalized_return` is the mean over episodes of each one's return over its full length
    (`scores.full_steps`, the maximum reward 1 per step); capped at 1 only against float32
    rounding of a perfect score.
    """
    length = scores.length.astype(jnp.float32)
    scored = jnp.maximum(jnp.sum(scores.scored_steps), 1.0)
    return {
        "normalized_return": jnp.minimum(jnp.mean(scores.reference_return / scores.full_steps), 1.0),
        "normalized_return_code": jnp.minimum(jnp.mean(scores.code_return / scores.full_steps), 1.0),
        "reward_per_step": jnp.sum(scores.reference_return) / jnp.maximum(jnp.sum(length), 1.0),
        "train_reward_per_step": jnp.sum(scores.train_return) / jnp.maximum(jnp.sum(length), 1.0),
        "episode_length_mean": jnp.mean(length),
        "episode_length_fraction": jnp.mean(length / scores.full_steps),
        "joint_angle_error_rad": jnp.sum(scores.angle_error_sum) / scored,
        "end_effector_error_m": jnp.sum(scores.end_effector_error_sum) / scored,
        "root_drift_m": jnp.mean(scores.root_drift),
        "fall_rate": jnp.mean(scores.terminated.astype(jnp.float32)),
        **{f"termination/{k}": jnp.sum(v.astype(jnp.float32)) for k, v in scores.termination.items()},
    }


def eval_env(config: runconfig.TrainConfig, rsi: bool = False) -> env_lib.ImitationEnv:
    """The run's environment, RSI off by default (episodes start at clip time 0).

    A training-time `max_root_drift` or `max_body_error` is turned off: the evaluation measures
    the drift (`root_drift_m`) and the tracking errors instead of ending the episode on them, so
    the fall rate counts falls.
    """
    env_config = config.env.replace(rsi=rsi, max_root_drift=0.0, max_body_error=0.0)
    return env_lib.ImitationEnv(env_config, reward_config=config.reward)


def make_evaluation(env: env_lib.ImitationEnv, config: runconfig.TrainConfig, episodes: int):
    """`score(policy_params, normalizer, reward_config, rng) -> metrics` (pure; jit/vmap it)."""
    if episodes < 1:
        raise MimicError(f"episodes must be >= 1, got {episodes}")
    policy, _ = train_lib.make_networks(env, config)
    steps = full_episode_steps(env)

    def score(policy_params, normalizer, reward_config, rng):
        scores = rollout_scores(env, policy, policy_params, normalizer, reward_config, rng, episodes, steps)
        return summarize(scores)

    return score


def evaluate_state(state: train_lib.TrainState, config: runconfig.TrainConfig, episodes: int = 4,
                   seed: int = 0, env: env_lib.ImitationEnv | None = None) -> dict[str, float]:
    """Evaluate an in-memory (unbatched) TrainState; returns plain floats."""
    reward_config = jax.tree.map(lambda x: x[0], state.env_state.reward_config)
    return evaluate_params(state.policy_params, state.normalizer, reward_config, config, episodes, seed, env)


def evaluate_params(policy_params, normalizer, reward_config, config: runconfig.TrainConfig, episodes: int,
                    seed: int = 0, env: env_lib.ImitationEnv | None = None) -> dict[str, float]:
    """Evaluate policy weights and normaliser under `config`'s environment; plain floats."""
    env = eval_env(config) if env is None else env
    args = (policy_params, normalizer, reward_config, jax.random.PRNGKey(seed))
    metrics = compiled.compile_fresh(make_evaluation(env, config, episodes), *args)(*args)
    out = {k: float(v) for k, v in jax.device_get(metrics).items()}
    out["full_episode_steps"] = full_episode_steps(env)
    return out


def evaluate(source: str | pathlib.Path, episodes: int = DEFAULT_EPISODES, seed: int = 0,
             rsi: bool = False) -> dict[str, float]:
    """Evaluate a run directory's latest checkpoint, a policy folder or a shipped policy
    (`policy.load`); see the module docstring for the keys."""
    bundle = policy_lib.load(str(source))
    config = bundle.config
    env = eval_env(config, rsi=rsi)
    metrics = evaluate_params(bundle.policy_params, bundle.normalizer, config.reward, config,
                              episodes, seed, env)
    metrics.update(iteration=bundle.iteration, env_steps=bundle.env_steps, rsi=rsi, episodes=episodes)
    return metrics


def add_arguments(parser) -> None:
    """`mimic-mjx eval` arguments."""
    parser.add_argument("run_dir", metavar="RUN_OR_POLICY",
                        help="a training run directory (config.yaml and checkpoints/), an exported policy folder, "
                             "or a shipped policy name (e.g. walk)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help=f"evaluation episodes (default: {DEFAULT_EPISODES})")
    parser.add_argument("--rsi", action="store_true",
                        help="start each episode at a random clip time (default: clip time 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_cli(args) -> int:
    """Run `mimic-mjx eval`; MimicError propagates to the CLI's one-line handler."""
    if args.episodes < 1:
        raise MimicError(f"--episodes must be >= 1, got {args.episodes}")
    compiled.enable_compile_cache()
    metrics = evaluate(args.run_dir, episodes=args.episodes, seed=args.seed, rsi=getattr(args, "rsi", False))
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        start = "random clip times (--rsi)" if metrics["rsi"] else "clip time 0"
        print(f"{args.run_dir}: iteration {metrics['iteration']}, {metrics['env_steps']:,} env steps, "
              f"{args.episodes} episode(s) of up to {metrics['full_episode_steps']} steps from {start}")
        for key in KEYS:
            print(f"  {key:<24} {metrics[key]:.4f}")
        ended = ", ".join(f"{k[len('termination/'):]} {metrics[k]:.0f}" for k in metrics
                          if k.startswith("termination/") and metrics[k] > 0)
        print(f"  {'episodes ended by':<24} {ended or 'none (all ran the full length)'}")
    return 0
