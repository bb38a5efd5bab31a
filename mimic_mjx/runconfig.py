"""The run config and the preset lookup: what a training run is told, and where it comes from.

`TrainConfig` (with `NetworkConfig`) is every number a run needs; `config.yaml` in a run
directory is one, resolved. `default_config` picks the preset a command without `--config`
runs (train, diagnose, config, bench and sweep all start from it), `find_config` finds a
preset by name, and `load_train_config` is the one loader every override goes through.
"""

from __future__ import annotations

import pathlib

import flax.struct
import jax

from mimic_mjx import config as cfglib
from mimic_mjx import env as env_lib
from mimic_mjx import reward as reward_lib
from mimic_mjx import trpo as trpo_lib
from mimic_mjx.errors import MimicError

@flax.struct.dataclass
class NetworkConfig:
    """Policy and value network shapes (static: they fix parameter shapes)."""

    # DeepMimic's actor and critic are both fc_2layers_1024units (Peng et al. 2018, Sec. 7).
    policy_hidden: tuple[int, ...] = cfglib.field((1024, 512), "policy MLP hidden widths", static=True, ge=1)
    value_hidden: tuple[int, ...] = cfglib.field((1024, 512), "value MLP hidden widths", static=True, ge=1)
    init_log_std: float = cfglib.field(-1.0, "initial log std of the Gaussian policy (action units)", static=True)


# GPU: DeepMimic-scale batches (4096 x 32 = 131k samples per update), not measured here
# (`mimic-mjx bench` does). CPU: a 2-core machine runs ~500-650 env steps/s at 16 envs
# (measured with cpu_tiny.yaml), so 16 keeps an iteration near a second.
GPU_NUM_ENVS = 4096
CPU_NUM_ENVS = 16
DEFAULT_REWARD = "deepmimic_paper"


@flax.struct.dataclass
class TrainConfig:
    """Everything a training run needs; `config.yaml` in the run directory is this, resolved."""

    env: env_lib.EnvConfig = cfglib.field(env_lib.EnvConfig(), "environment")
    # The section is the RewardConfig itself; `reward: {preset: NAME, FIELD: VALUE}` in YAML
    # (config.py, "preset sections"). Saved configs hold every resolved number.
    reward: reward_lib.RewardConfig = cfglib.field(
        reward_lib.preset(DEFAULT_REWARD), "reward: a preset plus overrides of its fields")
    trpo: trpo_lib.TrpoConfig = cfglib.field(trpo_lib.TrpoConfig(), "TRPO, GAE and value-fit hyper-parameters")
    network: NetworkConfig = cfglib.field(NetworkConfig(), "policy and value networks")
    num_envs: int | None = cfglib.field(
        None, f"parallel environments; null: {GPU_NUM_ENVS} on a GPU, {CPU_NUM_ENVS} on CPU", static=True, ge=1)
    # 32 steps ≈ 1 s at 30 Hz; with 4096 envs that is 131k samples per update.
    horizon: int = cfglib.field(32, "steps per environment per iteration (rollout length)", static=True, ge=1)
    iterations: int = cfglib.field(1000, "training iterations (TRPO updates)", static=True, ge=1)
    seed: int = cfglib.field(0, "random seed (networks, env resets, sampling)", static=True, ge=0)
    checkpoint_every: int = cfglib.field(
        50, "save a checkpoint every this many iterations (and at the end)", static=True, ge=1)
    keep_checkpoints: int = cfglib.field(3, "newest checkpoints kept in the run directory", static=True, ge=1)
    eval_every: int = cfglib.field(
        0, "score the deterministic policy (mimic-mjx eval's yardstick) into eval.jsonl every this many "
        "iterations (and at the end); 0: never", static=True, ge=0)
    # RSI off and mean actions: every episode starts at t = 0 the same way, so one is enough.
    eval_episodes: int = cfglib.field(1, "episodes per periodic evaluation", static=True, ge=1)
    eval_rsi_episodes: int = cfglib.field(
        0, "periodic evaluation also scores this many episodes from random clip times (eval --rsi), "
        "each time the same ones; the best/ policy is chosen on the mean of both returns; 0: t = 0 only",
        static=True, ge=0)
    decay_alarm_margin: float = cfglib.field(
        0.05, "the decay alarm fires when decay_alarm_evals periodic evaluations in a row score more than "
        "this below the run's best (normalised return)", static=True, gt=0)
    decay_alarm_evals: int = cfglib.field(
        3, "periodic evaluations in a row below the best by decay_alarm_margin that raise the decay alarm",
        static=True, ge=1)
    # An adaptive step tied to the run's own yardstick: no per-seed guess of where the peak is
    # (docs/learning.md, issue 29: a max_kl schedule that starts before seed 1's peak also stops
    # its climb). Host-side, from eval.jsonl, so a resumed run recomputes it.
    kl_plateau_evals: int = cfglib.field(
        0, "adaptive step: multiply trpo.max_kl by kl_plateau_factor each time this many periodic evaluations "
        "in a row fail to beat the run's best selection score (needs eval_every); 0: off", static=True, ge=0)
    kl_plateau_factor: float = cfglib.field(
        0.5, "what each plateau of kl_plateau_evals evaluations multiplies trpo.max_kl by", static=True, gt=0, le=1)
    kl_plateau_floor: float = cfglib.field(
        0.1, "the adaptive step never takes trpo.max_kl below this fraction of it", static=True, gt=0, le=1)
    kl_plateau_min_score: float = cfglib.field(
        0.0, "the adaptive step counts evaluations only once the run's best selection score has reached this "
        "(normalised return): before that the policy is still learning the clip", static=True, ge=0)
    devices: int = cfglib.field(
        0, "devices the environment batch is split over (num_envs must divide evenly); 0: every device JAX "
        "sees (one CPU unless XLA_FLAGS forces more)", static=True, ge=0)
    time_limit_minutes: float | None = cfglib.field(
        None, "stop (with a checkpoint) once this much wall clock has passed since the command started, "
        "compile included; null: no limit. --resume continues a stopped run", static=True, gt=0)


def resolve_defaults(config: TrainConfig, backend: str | None = None) -> TrainConfig:
    """Fill host-dependent defaults (`num_envs: null` -> GPU or CPU batch) and validate.

    Done on the host, not in the dataclass defaults, so one YAML preset fits both machines;
    the run directory's `config.yaml` keeps the resolved numbers. Checks every declared
    range (a config built in code skips the loader's checks) and the batch-size relations.
    """
    backend = jax.default_backend() if backend is None else backend
    if config.num_envs is None:
        config = config.replace(num_envs=GPU_NUM_ENVS if backend == "gpu" else CPU_NUM_ENVS)
    cfglib.validate(config)
    samples = config.num_envs * config.horizon
    if config.trpo.value_minibatches > samples:
        raise MimicError(f"trpo.value_minibatches ({config.trpo.value_minibatches}) exceeds the batch "
                         f"num_envs * horizon = {samples}")
    return config


# ---------------------------------------------------------------------------- presets

# The presets ship inside the package (mimic_mjx/configs is a link to the repository's
# configs/, copied into wheels), so a non-editable install finds them too.
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = "walk"
# What `mimic-mjx train` with no --config runs: a preset that learns on the machine it runs on.
DEFAULT_CONFIG_CPU = "walk_cpu"


def default_config(backend: str | None = None, motion: str | None = None) -> tuple[str, str]:
    """`(preset, why)` for a command given no --config (train, diagnose, config): from JAX's
    default backend and, for `--motion CLIP`, the clip's own preset where one ships
    (`configs/<clip>_cpu.yaml` on a CPU, `configs/<clip>.yaml` on an accelerator)."""
    backend = jax.default_backend() if backend is None else backend
    clip = motion if motion and pathlib.Path(motion).name == motion and not pathlib.Path(motion).suffix else None
    if backend == "cpu":
        if clip and (CONFIG_DIR / f"{clip}_cpu.yaml").exists():
            return f"{clip}_cpu", (f"JAX's default device is a CPU: {clip}'s CPU preset, walk_cpu's recipe with "
                                   "DeepMimic's per-clip settings (native MuJoCo physics, 256 environments)")
        return DEFAULT_CONFIG_CPU, ("JAX's default device is a CPU: native MuJoCo physics, 256 environments; "
                                    "the GPU preset would run 16 MJX environments and learn nothing in hours")
    if clip and (CONFIG_DIR / f"{clip}.yaml").exists():
        return clip, f"JAX's default device is a {backend.upper()}: {clip}'s preset, MJX physics, 4096 environments"
    return DEFAULT_CONFIG, f"JAX's default device is a {backend.upper()}: MJX physics, 4096 environments"


def announce_default(motion: str | None = None, stream=None, prefix: str = "") -> str:
    """`default_config`'s preset, said in one line on `stream` (stdout by default) so a user
    sees which config a command without --config runs; every such command calls this."""
    name, why = default_config(motion=motion)
    print(f"{prefix}config: {name} ({why}; choose another with --config)", file=stream, flush=True)
    return name


def find_config(name_or_path: str) -> pathlib.Path:
    """A YAML path as given, or a preset name (`walk`) looked up in the shipped `configs/`."""
    path = pathlib.Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    presets = ", ".join(known) or "none found"
    raise MimicError(f"config '{name_or_path}' not found: not a file, nor a preset ({presets})")


def load_train_config(path: str | pathlib.Path | None, overrides: list[str]) -> TrainConfig:
    """TrainConfig from a YAML file (or preset name) and `--set` overrides; MimicError on mistakes."""
    path = find_config(str(path)) if path is not None else None
    return cfglib.load_config(TrainConfig, path, overrides)
