"""Evaluate a policy with a tracking termination switched on, to choose `env.max_body_error`.

`mimic-mjx eval` turns training-time terminations off; this runs the same evaluation
(`evaluate.evaluate_params`, 10 episodes, from t = 0 and from random clip times) with
`env.max_body_error` set to each given threshold and the drift rule off, so
`termination/body_error` counts the episodes a threshold would have ended.

    python tools/body_error_probe.py walk 0.2 0.3
"""

import sys

from mimic_mjx import env as env_lib
from mimic_mjx import evaluate as ev
from mimic_mjx import policy as policy_lib

KEYS = ("normalized_return", "episode_length_mean", "fall_rate", "termination/body_error")


def main(source: str, thresholds: list[float]) -> None:
    bundle = policy_lib.load(source)
    for threshold in thresholds:
        for rsi in (False, True):
            env_config = bundle.config.env.replace(rsi=rsi, max_root_drift=0.0, max_body_error=threshold)
            env = env_lib.ImitationEnv(env_config, reward_config=bundle.config.reward)
            m = ev.evaluate_params(bundle.policy_params, bundle.normalizer, bundle.config.reward, bundle.config,
                                   10, 0, env)
            print(f"max_body_error {threshold} {'rsi' if rsi else 't=0'}: "
                  + ", ".join(f"{k} {m[k]:.3f}" for k in KEYS), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [float(v) for v in sys.argv[2:]])
