"""Health alarms and the adaptive step: pure rules the training loop (runner.py) applies.

* `check_health(metrics, health)`: alarms from one iteration's metrics (a vanishing reward,
  flat advantages, a stalled line search, non-finite numbers), each printed once per run.
* `check_decay(scores, margin, evals)`: the decay alarm, from the periodic evaluation scores.
* `plateau_fraction(scores, evals, factor, floor)`: the adaptive step's fraction of max_kl.

Pure functions of their arguments, so a live run and a reading of its logs decide alike.
"""

from __future__ import annotations

import dataclasses
import math

from mimic_mjx import reward as reward_lib


@dataclasses.dataclass(frozen=True)
class Health:
    """Host-side alarm memory: which alarms were printed, and the rejected-step streak."""

    raised: frozenset = frozenset()
    rejected_streak: int = 0


# Below this fraction of its maximum the reward gives TRPO nothing to climb; the same
# threshold as diagnose's warning (reward.VANISHING_FRACTION says why 1e-2).
VANISHING_REWARD_FRACTION = reward_lib.VANISHING_FRACTION
# Raw advantages this flat mean every sample scored the same (trpo.py floors std at 1e-8).
FLAT_ADVANTAGE_STD = 1e-6
# One rejected line search happens; several in a row means the policy has stopped moving.
REJECTED_STREAK = 3


def check_health(metrics: dict, health: Health, motion: str = "walk") -> tuple[Health, list[str]]:
    """Alarms for one iteration's metrics: `(new health, messages to print)`.

    Each alarm is printed once per run: symptom, likely cause, fix. Pure (no printing).
    """
    found = {}
    bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        found["nonfinite"] = (
            f"non-finite metrics ({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}): a numeric blow-up in the "
            "update or the value fit. Fix: lower trpo.max_kl or trpo.value_lr, and check training/nonfinite_episodes.")
    if metrics.get("training/nonfinite_episodes", 0.0) > 0:
        found["nonfinite_physics"] = (
            f"{metrics['training/nonfinite_episodes']:.0f} episode(s) ended with non-finite physics (reset and "
            "counted): the actions drove the simulation unstable (most likely under env.control=torque). "
            "Fix: use env.control=pd, or a smaller trpo.max_kl; watch training/nonfinite_episodes.")
    fraction = metrics.get("training/reward_fraction_of_max", 1.0)
    if math.isfinite(fraction) and fraction < VANISHING_REWARD_FRACTION:
        found["vanishing_reward"] = (
            f"reward vanishingly small: {fraction:.1e} of its maximum per step, so TRPO has no signal to climb. "
            f"Likely cause: reward scales too large for the errors this policy makes. Fix: run "
            f"`mimic-mjx diagnose --motion {motion}` and change the reward scales (--set reward.pose_scale=...); "
            "the remedies for a dead imitation reward, side by side: docs/seed_remedies.md.")
    adv_std = metrics.get("training/advantage_std", 1.0)
    if math.isfinite(adv_std) and adv_std < FLAT_ADVANTAGE_STD:
        found["flat_advantages"] = (
            f"advantage std is {adv_std:.1e} (~0): every sample scores the same, so the policy gradient is empty. "
            "Likely cause: a constant or zero reward. Fix: look at the reward/<term> metrics and the reward scales.")
    rejected = metrics.get("trpo/accepted", 1.0) < 0.5 or metrics.get("losses/kl", 1.0) == 0.0
    streak = health.rejected_streak + 1 if rejected else 0
    if streak >= REJECTED_STREAK:
        found["stalled_policy"] = (
            f"the TRPO line search rejected the step {streak} iterations in a row (KL 0): the policy is not changing. "
            "Likely cause: no signal in the advantages, or non-finite gradients (trpo/nonfinite). "
            "Fix: check the alarms above, training/advantage_std and reward/<term>; try --set trpo.max_kl=0.003.")
    new = [k for k in found if k not in health.raised]
    messages = [f"ALARM {k}: {found[k]}" for k in new]
    return Health(raised=health.raised | frozenset(new), rejected_streak=streak), messages


def check_decay(scores: list[float], margin: float, evals: int) -> str | None:
    """The decay alarm's text, or None: the last `evals` periodic evaluation scores (the
    best/ selection score, in order) all lie more than `margin` below the best score before
    them. Pure, so it is decided the same from a live run or from `eval.jsonl`."""
    if len(scores) <= evals:
        return None
    peak = max(scores[:-evals])
    recent = scores[-evals:]
    if not all(score < peak - margin for score in recent):
        return None
    at = scores.index(peak) + 1
    return (f"the policy is unlearning: the last {evals} evaluations ({', '.join(f'{x:.3f}' for x in recent)}) are "
            f"more than {margin:g} below the best, {peak:.3f} (evaluation {at}); best/ keeps that policy. "
            "Likely causes (docs/learning.md, late decay): a learned std that keeps shrinking (losses/entropy falling), "
            "an observation normaliser that keeps moving, full max_kl steps on a noisy gradient once the true one is "
            "small, the policy trading tracking for survival (episodes lengthening while reward/pose falls). "
            "Fix: more samples per update (num_envs), --set trpo.learn_std=0, trpo.normalizer_samples=1e6, "
            "a max_kl schedule (trpo.max_kl_decay_start, trpo.max_kl_decay_steps, trpo.max_kl_final_fraction).")


def plateau_fraction(scores: list[float], evals: int, factor: float, floor: float, min_score: float = 0.0) -> float:
    """The fraction of `trpo.max_kl` the adaptive step leaves after these periodic evaluation
    scores (in order): times `factor` each time `evals` evaluations in a row fail to beat the
    best score before them (the count starts again after each cut and at each new best), never
    below `floor`; 1.0 when `evals` is 0. Evaluations count only once the best has reached
    `min_score`: flat scores before the policy has learned the clip mean it is still searching
    (walk seed 0 hovers at 0.1-0.2 from 6M to 12M env steps before it climbs), not unlearning.
    Pure, so a resumed run recomputes it from eval.jsonl."""
    fraction, best, since = 1.0, -math.inf, 0
    if evals <= 0:
        return fraction
    for score in scores:
        if score > best:
            best, since = score, 0
            continue
        if best < min_score:
            continue
        since += 1
        if since == evals:
            fraction, since = max(floor, fraction * factor), 0
    return fraction
