"""Trust Region Policy Optimization (Schulman et al. 2015): the policy step.

The critic (GAE, value targets, the value fit) is critic.py.

Pure functions over pytrees: the caller jits (and, for a sweep, vmaps over a leading member
axis) the whole training iteration. Array shapes: `T` time steps, `B` environments, `N = T·B`
flattened samples, `D` observation dims, `A` action dims, `P` flat policy parameters.
Nothing here raises inside jit; bad data is reported through `trpo/nonfinite` and a rejected
step instead.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from mimic_mjx.config import field
from mimic_mjx.errors import MimicError
from mimic_mjx.networks import gaussian_entropy, gaussian_kl, gaussian_log_prob

Params = Any
PolicyApply = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]

# Advantage std below this is treated as zero (all advantages equal): the normalised
# advantages are then 0 and the step is rejected for lack of improvement.
_ADV_STD_FLOOR = 1e-8


@struct.dataclass
class TrpoConfig:
    """TRPO, GAE and value-fit hyper-parameters.

    Float fields are array leaves (a sweep stacks configs and vmaps); int fields fix loop
    counts or shapes and are static (`pytree_node=False`).
    """

    # Schulman et al. 2015 (TRPO) and Spinning Up's TRPO both use δ = 0.01.
    max_kl: float = field(0.01, "trust-region radius: max mean KL(old||new) per update", gt=0)
    # Spinning Up TRPO damping_coeff.
    damping: float = field(0.1, "multiple of the identity added to the Fisher in CG", gt=0)
    # modular_rl / baselines residual_tol.
    cg_tol: float = field(1e-10, "stop CG once the squared residual norm is below this", ge=0)
    # modular_rl linesearch: fractions 0.5**k, accept_ratio 0.1.
    backtrack_coeff: float = field(0.5, "line-search step fractions are backtrack_coeff**k", gt=0, lt=1)
    accept_ratio: float = field(0.1, "min actual/expected surrogate improvement to accept a step", ge=0)
    # baselines' trpo_mpi accepts KL <= 1.5 max_kl: the quadratic model puts the full step's
    # KL at exactly max_kl, so 1.0 (Spinning Up) often wastes half the step on one backtrack.
    kl_accept_factor: float = field(1.5, "accept a step whose mean KL <= kl_accept_factor * max_kl", gt=0)
    # DeepMimic (Peng et al. 2018, Sec. 7): γ = 0.95, λ = 0.95.
    gamma: float = field(0.95, "discount factor", ge=0, le=1)
    gae_lambda: float = field(0.95, "GAE lambda", ge=0, le=1)
    # Spinning Up TRPO vf_lr.
    value_lr: float = field(1e-3, "Adam learning rate of the value fit (fit_value learning_rate=)", gt=0)
    # Spinning Up / baselines cg_iters; modular_rl max_backtracks.
    cg_iters: int = field(10, "max conjugate-gradient iterations", static=True, ge=1)
    backtrack_iters: int = field(10, "line-search step fractions tried: backtrack_coeff**k", static=True, ge=1)
    # Our choice (baselines fits the value function for 3-5 epochs); not yet measured.
    value_epochs: int = field(5, "value-fit epochs over the batch", static=True, ge=1)
    value_minibatches: int = field(8, "value-fit minibatches per epoch (at most num_envs * horizon)", static=True, ge=1)
    # A stride, not a random subset, so it is static and deterministic; baselines' trpo_mpi
    # computes Fisher-vector products on every 5th sample.
    fvp_subsample: int = field(1, "Fisher-vector products use every k-th sample (1 = all)", static=True, ge=1)
    # Stabilisers (docs/learning.md, "Late decay"). Leaves, so a sweep varies them in one program.
    # DeepMimic fixes its exploration noise (its code asserts "noise std should not change");
    # MimicKit (actor_std_type FIXED), ProtoMotions and IsaacGymEnvs' AMP humanoid do too.
    learn_std: float = field(1.0, "1: TRPO trains the policy's log std; 0: log std is held where it is "
                             "(network.init_log_std from a fresh start: DeepMimic's fixed exploration noise)",
                             choices=(0, 1))
    # DeepMimic's NormalizerSamples: 1e6 (then the input scaling is fixed under the policy).
    normalizer_samples: float = field(
        0.0, "stop updating the observation normaliser once it has merged this many samples "
        "(DeepMimic: 1e6); 0: never stop", ge=0)
    max_kl_final_fraction: float = field(
        1.0, "max_kl falls linearly to max_kl * this over max_kl_decay_steps env steps (1: constant)", gt=0, le=1)
    max_kl_decay_steps: float = field(
        0.0, "env steps over which max_kl falls to max_kl * max_kl_final_fraction; 0: at once", ge=0)
    # Full-size steps while the policy still improves fast; walk_cpu peaks at ~12-20M env steps.
    max_kl_decay_start: float = field(
        0.0, "env steps at full max_kl before the fall over max_kl_decay_steps begins", ge=0)
    # DeepMimic's exploration rate (rl_agent.py _update_exp_params; ct_agent_humanoid_ppo.txt
    # ExpParamsBeg/End Rate 1 -> 0.2 over ExpAnnealSamples 64M): only a share of the steps
    # carries noise, the rest act with the mean, and the actor learns from the noisy ones only.
    # Late in a run most of the rollout is then the deterministic policy that is evaluated.
    explore_rate_final: float = field(
        1.0, "share of rollout steps whose action carries the exploration noise, reached after "
        "explore_anneal_steps (linearly from 1); the other steps act with the policy's mean and "
        "are left out of the policy step (DeepMimic: 0.2); 1: every step", gt=0, le=1)
    explore_anneal_steps: float = field(
        0.0, "env steps over which the exploration rate falls from 1 to explore_rate_final "
        "(DeepMimic: 64M samples); 0: at once", ge=0)
    # DeepMimic clips value targets to [r_min, r_max] / (1 - γ), the range any return can take.
    clip_value_targets: float = field(
        0.0, "1: clip the value fit's targets to [min, max] per-step reward / (1 - gamma); 0: off", choices=(0, 1))


@struct.dataclass
class TrpoBatch:
    """One on-policy batch, flattened over time and environments.

    The old (behaviour) distribution is recomputed from the policy parameters passed to
    `trpo_step` on these `obs`, so `obs` must be normalised with the normaliser the rollout
    used (update the normaliser after the policy step).
    """

    obs: jax.Array  # [N, D], normalised
    actions: jax.Array  # [N, A], as sampled (before any clipping to actuator range)
    advantages: jax.Array  # [N], raw GAE; trpo_step normalises them
    mask: jax.Array | None = None  # [N], 1.0 = valid sample; None = all valid


def linear_ramp(env_steps: jax.Array, start, duration) -> jax.Array:
    """0 before `start` env steps, rising linearly to 1 over `duration` steps, then 1; with
    `duration` 0, a step from 0 to 1 at `start`. The shape of every schedule here."""
    steps = jnp.asarray(env_steps, jnp.float32) - jnp.asarray(start, jnp.float32)
    horizon = jnp.asarray(duration, jnp.float32)
    ramp = jnp.clip(steps / jnp.where(horizon > 0, horizon, 1.0), 0.0, 1.0)
    return jnp.where(horizon > 0, ramp, (steps >= 0).astype(jnp.float32))


def scheduled_max_kl(config: TrpoConfig, env_steps: jax.Array) -> jax.Array:
    """The trust-region radius after `env_steps` env steps: `max_kl` until
    `max_kl_decay_start`, then falling linearly to `max_kl * max_kl_final_fraction` over
    `max_kl_decay_steps` steps, then constant.

    Why: once the true gradient is small, a full `max_kl` step from a few thousand samples is
    mostly noise (walk_cpu's late decay, docs/learning.md).
    """
    progress = linear_ramp(env_steps, config.max_kl_decay_start, config.max_kl_decay_steps)
    return config.max_kl * (1.0 + (config.max_kl_final_fraction - 1.0) * progress)


def explore_rate(config: TrpoConfig, env_steps: jax.Array) -> jax.Array:
    """The share of rollout steps that explore after `env_steps` env steps: 1 at the start,
    falling linearly to `explore_rate_final` over `explore_anneal_steps`, then constant."""
    progress = linear_ramp(env_steps, 0.0, config.explore_anneal_steps)
    return 1.0 + (jnp.asarray(config.explore_rate_final, jnp.float32) - 1.0) * progress


def conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, iters: int, tol: jax.Array | float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Solve `A x = b` for symmetric positive-definite `A` given only `matvec(v) = A v`.

    Starts from x = 0; stops after `iters` iterations or once the squared residual norm
    ‖r‖² ≤ `tol` (the convention of modular_rl and baselines). `b` is flat `[P]`.
    Returns `(x [P], residual_sq [], iterations_used [] int32)`.
    """

    def keep_going(carry):
        _, _, _, rdotr, i = carry
        return (i < iters) & (rdotr > tol)

    def body(carry):
        x, r, p, rdotr, i = carry
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        # Guard 0/0 when p = 0: under vmap a finished member still runs the body.
        alpha = rdotr / jnp.where(pap != 0, pap, 1.0)
        x = x + alpha * p
        r = r - alpha * ap
        new_rdotr = jnp.vdot(r, r)
        p = r + (new_rdotr / jnp.where(rdotr != 0, rdotr, 1.0)) * p
        return x, r, p, new_rdotr, i + 1

    init = (jnp.zeros_like(b), b, b, jnp.vdot(b, b), jnp.asarray(0, jnp.int32))
    x, _, _, rdotr, i = jax.lax.while_loop(keep_going, body, init)
    return x, rdotr, i


def fisher_vector_product(
    outputs_fn: Callable[[jax.Array], Any],
    kl_of_outputs: Callable[[Any], jax.Array],
    params_flat: jax.Array,
    damping: jax.Array | float,
) -> Callable[[jax.Array], jax.Array]:
    """`v -> (F + damping·I) v`, F the Fisher of the policy at `params_flat`, never formed.

    `outputs_fn(flat [P])` gives the distribution's parameters (a pytree, e.g. `(mean, log_std)`)
    and `kl_of_outputs(outputs) -> []` the mean KL from the fixed old distribution to them. At
    the old parameters the KL's gradient in output space is zero, so its Hessian in parameter
    space is exactly the Gauss-Newton product Jᵀ H J (J = d outputs / dθ, H the KL's Hessian in
    output space, elementwise for a Gaussian). The network is linearised once, here, and each
    product is one forward-mode and one reverse-mode pass through it reusing those residuals:
    about a third of the cost of the Hessian-vector product by jvp-of-grad, which redoes the
    forward and backward passes for every CG iteration. Returns a function of `v [P] -> [P]`.
    """
    outputs, jvp_fn = jax.linearize(outputs_fn, params_flat)
    # The transpose of the linearisation is the vjp, without a second forward pass.
    vjp_fn = jax.linear_transpose(jvp_fn, params_flat)
    grad_out = jax.grad(kl_of_outputs)

    def fvp(v: jax.Array) -> jax.Array:
        tangent = jvp_fn(v)
        h_tangent = jax.jvp(grad_out, (outputs,), (tangent,))[1]
        return vjp_fn(h_tangent)[0] + damping * v

    return fvp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def normalize_advantages(advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero-mean, unit-std advantages over valid samples; invalid ones become 0. `[N] -> [N]`."""
    mean = masked_mean(advantages, mask)
    std = jnp.sqrt(masked_mean((advantages - mean) ** 2, mask))
    scaled = (advantages - mean) / jnp.maximum(std, _ADV_STD_FLOOR)
    return jnp.where(mask > 0, scaled, 0.0)


def all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _sanitize_batch(batch: TrpoBatch) -> tuple[TrpoBatch, jax.Array, jax.Array]:
    """Zero invalid rows (so NaNs there cannot leak) and check the valid rows are finite.

    Returns `(clean batch with a float mask, mask [N], inputs_finite [])`.
    """
    n = batch.obs.shape[0]
    mask = jnp.ones((n,), batch.obs.dtype) if batch.mask is None else batch.mask.astype(batch.obs.dtype)
    valid = mask > 0

    def rows(x):
        return jnp.where(valid.reshape((n,) + (1,) * (x.ndim - 1)), x, 0.0)

    obs, actions, adv = rows(batch.obs), rows(batch.actions), rows(batch.advantages)
    finite = all_finite((obs, actions, adv))
    return TrpoBatch(obs=obs, actions=actions, advantages=adv, mask=mask), mask, finite


def _line_search(evaluate, flat0, full_step, expected_full, surr_before, config: TrpoConfig):
    """Try `flat0 + backtrack_coeff**k · full_step` for k = 0, 1, ... and stop at the first pass.

    A candidate passes if its surrogate and KL are finite, mean KL ≤ kl_accept_factor·max_kl,
    actual improvement > 0 and actual ≥ accept_ratio · expected. Candidates are evaluated one
    at a time in a `while_loop`: the full step usually passes, so this is one policy pass over
    the batch instead of `backtrack_iters` (under a sweep's vmap the loop runs until every
    member has found its step; each member still keeps its own first pass). Returns
    `(any_passed [], first [] int, fraction [], chosen)`, `chosen` a dict of scalars
    (surrogate, kl, entropy, expected, actual) of candidate `first`; `first` is 0 when none
    passed, so diagnostics then describe the full step.
    """

    def candidate(k):
        fraction = jnp.asarray(config.backtrack_coeff, flat0.dtype) ** k.astype(flat0.dtype)
        surr, kl, entropy = evaluate(flat0 + fraction * full_step)
        expected = fraction * expected_full
        actual = surr - surr_before
        passes = (
            jnp.isfinite(surr)
            & jnp.isfinite(kl)
            & (kl <= config.kl_accept_factor * config.max_kl)
            & (actual > 0)
            & (actual >= config.accept_ratio * expected)
        )
        values = {"surrogate": surr, "kl": kl, "entropy": entropy, "expected": expected, "actual": actual}
        return passes, fraction, values

    def keep_going(carry):
        k, passed, _, _ = carry
        return ~passed & (k < config.backtrack_iters - 1)

    def body(carry):
        k, _, _, _ = carry
        return (k + 1, *candidate(k + 1))

    k0 = jnp.asarray(0, jnp.int32)
    full = candidate(k0)
    k, passed, fraction, values = jax.lax.while_loop(keep_going, body, (k0, *full))
    pick = lambda found, first_try: jnp.where(passed, found, first_try)  # noqa: E731
    chosen = jax.tree.map(pick, values, full[2])
    return passed, jnp.where(passed, k, 0), pick(fraction, full[1]), chosen


def trpo_step(
    policy_apply: PolicyApply, policy_params: Params, batch: TrpoBatch, config: TrpoConfig,
    trainable: Params | None = None,
) -> tuple[Params, dict[str, jax.Array]]:
    """One TRPO policy update: natural-gradient direction by CG, KL-scaled, line-searched.

    `policy_apply(params, obs [N, D]) -> (mean [N, A], log_std [A] or [N, A])`. The old
    policy is `policy_params` itself (see `TrpoBatch`). Surrogate L(θ) = mean(ratio · Â) with
    Â the normalised advantages; s solves (F + damping·I) s = ∇L by CG; the full step is
    sqrt(2·max_kl / sᵀ(F + damping·I)s) · s; then `_line_search` backtracks from it. If no candidate passes, or
    anything is non-finite, the params come back bit-for-bit unchanged with accepted = 0.

    `trainable`, a pytree like `policy_params` of 1.0 (trained) and 0.0 (held), restricts the
    step to the trained coordinates: CG solves (M F M + damping·I) s = M ∇L with M = diag(trainable),
    whose solution is exactly 0 on the held ones (their rows are damping·s = 0), so held
    parameters come back bit-for-bit. All ones (or None) is the plain step.

    Returns `(new_params, metrics)`, metrics a flat dict of scalars:
    `losses/surrogate_before|after`, `losses/kl` (mean KL(old‖returned), 0 if rejected),
    `losses/entropy` (of the returned policy), `trpo/expected_improvement` and
    `trpo/actual_improvement` (of the accepted step, or the full step if rejected),
    `trpo/cg_residual` (‖r‖²), `trpo/cg_iterations`, `trpo/sFs` (sᵀ(F + damping·I)s),
    `trpo/backtracks` (halvings taken; backtrack_iters if rejected), `trpo/accepted`,
    `trpo/grad_norm`, `trpo/nonfinite` (1 if the inputs or the step were non-finite).
    """
    batch, mask, inputs_finite = _sanitize_batch(batch)
    flat0, unravel = ravel_pytree(policy_params)
    adv = normalize_advantages(batch.advantages, mask)
    old_mean, old_log_std = jax.lax.stop_gradient(policy_apply(policy_params, batch.obs))
    old_logp = gaussian_log_prob(old_mean, old_log_std, batch.actions)

    def evaluate(flat):
        mean, log_std = policy_apply(unravel(flat), batch.obs)
        ratio = jnp.exp(gaussian_log_prob(mean, log_std, batch.actions) - old_logp)
        surrogate = masked_mean(ratio * adv, mask)
        kl = masked_mean(gaussian_kl(old_mean, old_log_std, mean, log_std), mask)
        entropy = masked_mean(gaussian_entropy(jnp.broadcast_to(log_std, mean.shape)), mask)
        return surrogate, kl, entropy

    k = config.fvp_subsample
    if k < 1:  # static, so checked once at trace time
        raise MimicError(f"trpo.fvp_subsample must be >= 1, got {k}")
    sub_obs, sub_mask, sub_old_mean = batch.obs[::k], mask[::k], old_mean[::k]
    sub_old_log_std = old_log_std[::k] if old_log_std.ndim == 2 else old_log_std

    def sub_kl(outputs):
        mean, log_std = outputs
        return masked_mean(gaussian_kl(sub_old_mean, sub_old_log_std, mean, log_std), sub_mask)

    fvp = fisher_vector_product(lambda flat: policy_apply(unravel(flat), sub_obs), sub_kl, flat0, config.damping)
    surr_before, grad = jax.value_and_grad(lambda f: evaluate(f)[0])(flat0)
    if trainable is not None:
        keep = ravel_pytree(trainable)[0].astype(flat0.dtype)
        full_fvp = fvp
        # m·(F + dI)(m·v) + d(1 - m)·v = (M F M + d I) v for a 0/1 mask m.
        fvp = lambda v: keep * full_fvp(keep * v) + config.damping * (1.0 - keep) * v  # noqa: E731
        grad = keep * grad
    step_dir, cg_residual, cg_used = conjugate_gradient(fvp, grad, config.cg_iters, config.cg_tol)
    sfs = jnp.vdot(step_dir, fvp(step_dir))
    # Scale so the quadratic KL model ½ sᵀFs of the full step equals max_kl.
    scale = jnp.sqrt(2.0 * config.max_kl / jnp.where(sfs > 0, sfs, 1.0))
    full_step = jnp.where(sfs > 0, scale, 0.0) * step_dir
    nonfinite = ~(inputs_finite & all_finite((surr_before, grad, step_dir, sfs, full_step)))

    passed, first, fraction, chosen = _line_search(
        evaluate, flat0, full_step, jnp.vdot(grad, full_step), surr_before, config
    )
    accepted = passed & ~nonfinite
    new_params = jax.tree.map(
        lambda new, old: jnp.where(accepted, new, old), unravel(flat0 + fraction * full_step), policy_params
    )
    entropy_before = masked_mean(gaussian_entropy(jnp.broadcast_to(old_log_std, old_mean.shape)), mask)
    dtype = flat0.dtype
    metrics = {
        "losses/surrogate_before": surr_before,
        "losses/surrogate_after": jnp.where(accepted, chosen["surrogate"], surr_before),
        "losses/kl": jnp.where(accepted, chosen["kl"], 0.0),
        "losses/entropy": jnp.where(accepted, chosen["entropy"], entropy_before),
        "trpo/expected_improvement": chosen["expected"],
        "trpo/actual_improvement": chosen["actual"],
        "trpo/cg_residual": cg_residual,
        "trpo/cg_iterations": cg_used.astype(dtype),
        "trpo/sFs": sfs,
        "trpo/backtracks": jnp.where(accepted, first, config.backtrack_iters).astype(dtype),
        "trpo/accepted": accepted.astype(dtype),
        "trpo/grad_norm": jnp.linalg.norm(grad),
        "trpo/nonfinite": nonfinite.astype(dtype),
    }
    return new_params, metrics
