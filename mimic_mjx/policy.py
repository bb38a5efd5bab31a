"""A trained policy on its own: weights, observation normaliser and the config it was trained
under, loadable from a run directory, an exported policy folder, or by name when shipped
inside the package (`mimic_mjx/policies/<name>/`, e.g. `walk`).

An exported policy folder holds `config.yaml` (the run's resolved TrainConfig),
`policy.msgpack` (policy parameters and normaliser, written by `checkpoint.save_tree`) and
`meta.json` (where it came from: run, iteration, env steps). Loading checks the weights
against the networks and observation the config builds; a policy that does not fit is a
one-line MimicError naming the folder and the first mismatching entry.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mimic_mjx import checkpoint
from mimic_mjx import config as cfglib
from mimic_mjx import env as env_lib
from mimic_mjx import networks as nets
from mimic_mjx import runconfig, train as train_lib
from mimic_mjx.errors import MimicError

SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "policies"
WEIGHTS = "policy.msgpack"
CONFIG = "config.yaml"
META = "meta.json"


@dataclasses.dataclass(frozen=True)
class PolicyBundle:
    config: runconfig.TrainConfig
    policy_params: Any
    normalizer: nets.NormalizerState
    env_steps: int
    source: str
    iteration: int = 0


def shipped() -> list[str]:
    """Names of the policies shipped inside the package."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / WEIGHTS).exists()) if SHIPPED_DIR.is_dir() else []


def act(bundle: PolicyBundle, env: env_lib.ImitationEnv) -> Callable[[jax.Array], jax.Array]:
    """`obs [B, D] -> mean actions [B, A]`: the deterministic policy (jittable)."""
    policy, _ = train_lib.make_networks(env, bundle.config)

    def mean_action(obs):
        mean, _ = policy.apply(bundle.policy_params, nets.normalize(bundle.normalizer, obs))
        return mean

    return mean_action


def _template(config: runconfig.TrainConfig) -> dict:
    """Shapes of what a policy file holds under `config` (no compute)."""
    env = env_lib.ImitationEnv(config.env, reward_config=config.reward)
    policy, _ = train_lib.make_networks(env, config)
    dummy = jnp.zeros((1, env.observation_size))
    return {
        "policy_params": jax.eval_shape(lambda k: policy.init(k, dummy), jax.random.PRNGKey(0)),
        "normalizer": jax.eval_shape(lambda: nets.init_normalizer(env.observation_size)),
    }


def export(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Write the latest checkpoint of `run_dir` as a policy folder `out_dir`."""
    bundle = load(str(run_dir))
    meta = {"run": str(run_dir), "iteration": bundle.iteration, "env_steps": bundle.env_steps}
    return write(out_dir, bundle.config, bundle.policy_params, bundle.normalizer, meta)


def write(out_dir: str | pathlib.Path, config: runconfig.TrainConfig, policy_params, normalizer,
          meta: dict) -> pathlib.Path:
    """Write a policy folder (config, weights, `meta`: at least iteration and env_steps).

    For the trainer, which rewrites `best/` in place: the weights are written under a
    temporary name and renamed into place, so a kill never leaves a half-written weights
    file; `meta.json`, where the trainer reads the best score back, goes last, so a kill
    between the two leaves new weights under the older, lower score, which the next better
    evaluation replaces.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfglib.save_config(config, out / CONFIG)
    partial = out / (WEIGHTS + ".partial")
    checkpoint.save_tree(partial, {"policy_params": policy_params, "normalizer": normalizer})
    partial.replace(out / WEIGHTS)
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _load_config(path: pathlib.Path) -> runconfig.TrainConfig:
    return runconfig.resolve_defaults(cfglib.load_config(runconfig.TrainConfig, path, []))


def load(source: str, report=None) -> PolicyBundle:
    """A policy from a shipped name, an exported policy folder, or a run directory (its newest
    checkpoint that restores; `report`, default stderr, hears of any damaged newer one)."""
    path = pathlib.Path(source)
    if not path.exists() and (SHIPPED_DIR / source / WEIGHTS).exists():
        path = SHIPPED_DIR / source
    if (path / WEIGHTS).exists():
        config = _load_config(path / CONFIG)
        tree = checkpoint.load_tree(path / WEIGHTS, _template(config))
        meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
        return PolicyBundle(config, tree["policy_params"], tree["normalizer"], int(meta.get("env_steps", 0)),
                            str(path), int(meta.get("iteration", 0)))
    if (path / CONFIG).exists() and (path / checkpoint.SUBDIR).is_dir():
        config = _load_config(path / CONFIG)
        env, _ = train_lib.build_env(config)
        report = report or (lambda line: print(line, file=sys.stderr))
        # Only the weights and the normaliser are used, so fields added since the run was
        # written do not matter here.
        state, step = checkpoint.restore_newest(path, train_lib.abstract_state(env, config), report=report,
                                                fillable=train_lib.UPGRADABLE)
        return PolicyBundle(config, state.policy_params, state.normalizer, int(state.env_steps), str(path), int(step))
    names = ", ".join(shipped()) or "none"
    raise MimicError(f"policy '{source}' not found: not a run directory (config.yaml + checkpoints/), "
                     f"not a policy folder ({WEIGHTS}), nor a shipped policy ({names})")
