"""The evaluation yardstick: episode length bookkeeping, the summary arithmetic by hand, and
one evaluation of a short humanoid run through the CLI entry point (keys, ranges, identities).
"""

import argparse
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimic_mjx import config as cfglib
from mimic_mjx import env as env_lib
from mimic_mjx import evaluate, runconfig, runner
from mimic_mjx import policy as policy_lib
from mimic_mjx import reward as reward_lib
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(120)

# test_train.TINY: the same shapes (a cache hit on MJX; native programs always compile).
TINY = [
    "num_envs=16", "horizon=16", "network.policy_hidden=[32,32]", "network.value_hidden=[32,32]",
    "network.init_log_std=-1.6", "trpo.value_minibatches=4", "trpo.fvp_subsample=1", "checkpoint_every=2",
]


def test_full_episode_steps():
    # Looping clip: the time limit, 20 s x 30 Hz = 600 steps.
    assert evaluate.full_episode_steps(env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk"))) == 600
    # getup_faceup does not loop and lasts 3.76652 s: ceil(3.76652 x 30) = ceil(112.995) = 113 steps.
    once = env_lib.ImitationEnv(env_lib.EnvConfig(motion="getup_faceup"))
    assert not once.clip.loop
    assert evaluate.full_episode_steps(once) == math.ceil(once.clip.duration * 30) == 113
    # A time limit shorter than the clip wins: 2 s x 30 Hz = 60 steps.
    short = env_lib.ImitationEnv(env_lib.EnvConfig(motion="getup_faceup", episode_seconds=2.0))
    assert evaluate.full_episode_steps(short) == 60


def test_summarize_by_hand():
    scores = evaluate.EpisodeScores(
        reference_return=jnp.array([6.0, 2.0]),
        code_return=jnp.array([8.0, 3.0]),
        train_return=jnp.array([3.0, 1.0]),
        length=jnp.array([10, 4], jnp.int32),
        terminated=jnp.array([False, True]),
        angle_error_sum=jnp.array([0.9, 0.3]),
        end_effector_error_sum=jnp.array([0.45, 0.15]),
        scored_steps=jnp.array([9.0, 3.0]),
        root_drift=jnp.array([0.2, 0.6]),
        termination={"fall_contact": jnp.array([False, True]), "time_limit": jnp.array([True, False])},
        full_steps=jnp.array([10.0, 10.0]),
    )
    m = {k: float(v) for k, v in evaluate.summarize(scores).items()}
    assert m["normalized_return"] == pytest.approx((6 / 10 + 2 / 10) / 2)  # 0.4
    assert m["normalized_return_code"] == pytest.approx((8 / 10 + 3 / 10) / 2)  # 0.55
    assert m["reward_per_step"] == pytest.approx(8 / 14)  # (6 + 2) / (10 + 4) steps
    assert m["train_reward_per_step"] == pytest.approx(4 / 14)
    assert m["episode_length_mean"] == pytest.approx(7.0)
    assert m["joint_angle_error_rad"] == pytest.approx(1.2 / 12)  # (0.9 + 0.3) / (9 + 3) steps
    assert m["end_effector_error_m"] == pytest.approx(0.6 / 12)
    assert m["fall_rate"] == pytest.approx(0.5)
    assert m["root_drift_m"] == pytest.approx(0.4)  # (0.2 + 0.6) / 2 episodes
    assert m["termination/fall_contact"] == 1 and m["termination/time_limit"] == 1
    # Episodes that could last 10 and 4 steps (an RSI start late in a clip that does not loop):
    # each return over its own full length, (6/10 + 2/4) / 2 = 0.55; lengths 10/10 and 4/4.
    late = scores.replace(full_steps=jnp.array([10.0, 4.0]))
    m = {k: float(v) for k, v in evaluate.summarize(late).items()}
    assert m["normalized_return"] == pytest.approx(0.55) and m["episode_length_fraction"] == pytest.approx(1.0)


def test_an_episode_is_scored_against_what_is_left_of_a_clip_that_does_not_loop():
    kick = env_lib.ImitationEnv(env_lib.EnvConfig(motion="kick"))
    assert not kick.clip.loop
    d = float(kick.clip.duration)  # 1.5333 s: ceil(1.5333 x 30) = 46 steps from time 0
    # Start times away from step edges: ceil((d - t0) x 30) steps, the last step may end past d.
    starts = [0.0, 0.01, 0.75, d - 0.5 / 30]
    want = [math.ceil((d - t0) * 30) for t0 in starts]
    assert want == [46, 46, 24, 1]
    got = jax.jit(lambda t: evaluate.episode_full_steps(kick, t))(jnp.array(starts))
    assert np.asarray(got).tolist() == want
    # A looping clip: the time limit from any start (walk: 20 s x 30 Hz).
    walk = env_lib.ImitationEnv(env_lib.EnvConfig(motion="walk"))
    got = jax.jit(lambda t: evaluate.episode_full_steps(walk, t))(jnp.array([0.0, 0.6, 1.2]))
    assert np.asarray(got).tolist() == [600, 600, 600]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    config = cfglib.load_config(runconfig.TrainConfig, None, TINY + ["iterations=2", "eval_every=1", "eval_episodes=1",
                                                                    "eval_rsi_episodes=2"])
    runner.train(config, out, progress=lambda _: None)
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_cli_json_keys_and_ranges(run_dir, capsys):
    code = evaluate.run_cli(argparse.Namespace(run_dir=str(run_dir), episodes=2, seed=0, json=True))
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert set(evaluate.KEYS) <= set(m)
    assert {"normalized_return", "episode_length_mean", "joint_angle_error_rad", "end_effector_error_m",
            "fall_rate"} <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    assert m["iteration"] == 2 and m["env_steps"] == 2 * 16 * 16
    full = m["full_episode_steps"]
    assert full == 600  # walk loops: the 20 s time limit
    assert 0.0 <= m["normalized_return"] <= 1.0
    assert 0.0 <= m["reward_per_step"] <= 1.0
    assert 1.0 <= m["episode_length_mean"] <= full
    assert 0.0 <= m["fall_rate"] <= 1.0
    assert 0.0 <= m["joint_angle_error_rad"] <= math.pi
    assert m["end_effector_error_m"] >= 0.0
    # Identity: Σ return / E / full = (Σ return / Σ length) · (Σ length / E) / full.
    assert m["normalized_return"] == pytest.approx(m["reward_per_step"] * m["episode_length_mean"] / full, rel=1e-5)
    # A policy after 2 updates falls within seconds: far from a full, perfect episode.
    assert m["fall_rate"] == 1.0 and m["normalized_return"] < 0.2
    # Deterministic policy, RSI off: both episodes are the same episode.
    assert m["episode_length_mean"] == int(m["episode_length_mean"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_evaluates_every_eval_every_iterations(run_dir):
    lines = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [x["training/iteration"] for x in lines] == [1, 2]
    assert [x["training/env_steps"] for x in lines] == [16 * 16, 2 * 16 * 16]  # TINY: 16 envs x 16 steps
    assert all(0.0 <= x["eval/normalized_return"] <= 1.0 for x in lines)
    # The same yardstick as `mimic-mjx eval` of the final checkpoint (RSI off, deterministic).
    final = evaluate.evaluate(run_dir, episodes=1)
    assert lines[-1]["eval/episode_length_mean"] == final["episode_length_mean"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_best_policy_is_the_periodic_evaluation_with_the_best_mean_return(run_dir):
    lines = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    for x in lines:
        mean = 0.5 * (x["eval/normalized_return"] + x["eval_rsi/normalized_return"])
        assert x["eval/selection_score"] == pytest.approx(mean, rel=1e-9)
    best = max(lines, key=lambda x: x["eval/selection_score"])  # the first of equals, as the trainer keeps
    # A second method: `mimic-mjx eval` of best/ (seed 0, the trainer's fixed evaluation key)
    # reproduces that line's scores from t = 0 and from random clip times.
    t0 = evaluate.evaluate(run_dir / runner.BEST_DIR, episodes=1)
    rsi = evaluate.evaluate(run_dir / runner.BEST_DIR, episodes=2, rsi=True)
    assert t0["iteration"] == best["training/iteration"] and t0["env_steps"] == best["training/env_steps"]
    assert t0["normalized_return"] == pytest.approx(best["eval/normalized_return"], rel=1e-5)
    assert rsi["normalized_return"] == pytest.approx(best["eval_rsi/normalized_return"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_with_rsi_starts_at_random_clip_times(run_dir):
    """From t = 0 the deterministic policy plays one episode whatever the seed; from random
    clip times the seed picks the starts, so two seeds score differently."""
    t0 = [evaluate.evaluate(run_dir, episodes=2, seed=s) for s in (0, 1)]
    rsi = [evaluate.evaluate(run_dir, episodes=2, rsi=True, seed=s) for s in (0, 1)]
    assert rsi[0]["rsi"] is True and rsi[0]["episodes"] == 2
    keys = ("normalized_return", "episode_length_mean", "root_drift_m")
    assert [t0[0][k] for k in keys] == [t0[1][k] for k in keys]
    assert [rsi[0][k] for k in keys] != [rsi[1][k] for k in keys]


def test_eval_needs_a_run_directory(tmp_path):
    with pytest.raises(MimicError) as err:
        evaluate.evaluate(tmp_path)
    assert "not a run directory" in str(err.value) and "\n" not in str(err.value)


def test_episodes_must_be_positive():
    config = cfglib.load_config(runconfig.TrainConfig, None, TINY)
    with pytest.raises(MimicError, match="episodes must be >= 1"):
        evaluate.make_evaluation(None, config, 0)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", policy_lib.shipped())
def test_every_shipped_policy_loads_and_runs_a_short_episode(name):
    from mimic_mjx import policy

    bundle = policy.load(name)
    assert bundle.env_steps > 0 and pathlib.Path(bundle.config.env.motion).stem.endswith(name)
    # One episode capped at 1 s (30 steps): the shipped weights run through the eval path.
    short = bundle.config.replace(env=bundle.config.env.replace(episode_seconds=1.0))
    # Scored with DeepMimic's code reward as the episode's own reward (the env's reward path),
    # it must equal the evaluation's second yardstick (the re-scoring path) step for step.
    code = reward_lib.preset(evaluate.CODE_PRESET)
    m = evaluate.evaluate_params(bundle.policy_params, bundle.normalizer, code, short, episodes=1)
    assert 1 <= m["episode_length_mean"] <= 30 and m["full_episode_steps"] <= 30
    assert all(math.isfinite(v) for v in m.values())
    own = m["train_reward_per_step"] * m["episode_length_mean"] / m["full_episode_steps"]
    assert m["normalized_return_code"] == pytest.approx(own, rel=1e-5)


def test_library_table_by_hand():
    from mimic_mjx import library

    rows = [{"clip": "walk", "return_t0": 0.8, "return_rsi": 0.9, "fall_rate_t0": 0.0, "fall_rate_rsi": 0.1,
             "env_steps": 21_299_200, "deepmimic": 0.985, "fraction_of_deepmimic": 0.85 / 0.985,
             "code_t0": 0.95, "code_rsi": 0.97}]
    assert library.markdown(rows).splitlines()[2] == \
        "| walk | 0.800 | 0.900 | 0% | 10% | 21.3M | 0.985 | 86% | 0.950 / 0.970 |"
    assert len(library.DEEPMIMIC_TABLE2) == 15 and library.DEEPMIMIC_TABLE2["backflip"] == 0.729


def test_a_policy_that_does_not_fit_the_observation_is_one_line(tmp_path):
    import shutil

    from mimic_mjx import policy

    folder = tmp_path / "walk_future"
    shutil.copytree(policy.SHIPPED_DIR / "walk", folder)
    # Each observed future frame adds 37 numbers to the observation: with one frame more or
    # less than the policy was trained on, its weights no longer fit.
    import re

    text = (folder / "config.yaml").read_text()
    frames = re.search(r"future_frames: \[(.*)\]", text).group(1)
    other = "[1]" if frames != "1" else "[]"
    text = re.sub(r"future_frames: \[.*\]", f"future_frames: {other}", text)
    assert f"future_frames: {other}" in text
    (folder / "config.yaml").write_text(text)
    with pytest.raises(MimicError) as err:
        policy.load(str(folder))
    assert "does not fit this model and observation" in str(err.value) and "\n" not in str(err.value)


def test_library_grid_stacks_each_policys_filmstrip_in_order(tmp_path, monkeypatch):
    """`library --grid`: one row per policy, in the order given, each row that policy's
    filmstrip; a looping clip is filmed for 5 s, any other for its length. Rendering is
    replaced by solid tiles, so the expected image is built by hand."""
    import types

    from PIL import Image

    from mimic_mjx import library, policy as policy_lib, render as render_lib

    colours = {"walk": (200, 0, 0), "punch": (0, 200, 0)}
    lengths = {"walk": (True, 1.2), "punch": (False, 2.6)}
    asked = {}

    def fake_env(config, rsi=False):
        loop, duration = lengths[config]
        return types.SimpleNamespace(clip=types.SimpleNamespace(loop=loop),
                                     clip_arrays=types.SimpleNamespace(duration=duration))

    def fake_render(env, act, out, *, seconds, fps, width, height, filmstrip, filmstrip_count, label, progress):
        asked[label] = seconds
        Image.new("RGB", (width * filmstrip_count, height), colours[label]).save(filmstrip)
        return types.SimpleNamespace(filmstrip=filmstrip)

    monkeypatch.setattr(policy_lib, "load", lambda name: types.SimpleNamespace(config=name))
    monkeypatch.setattr(policy_lib, "act", lambda bundle, env: None)
    monkeypatch.setattr(library.eval_lib, "eval_env", fake_env)
    monkeypatch.setattr(render_lib, "render", fake_render)
    size = library.grid(["punch", "walk"], tmp_path / "grid.png", frames=3, width=4, height=2, progress=lambda _: None)
    image = np.asarray(Image.open(tmp_path / "grid.png"))
    assert size == (12, 4) and image.shape == (4, 12, 3)
    assert (image[:2] == colours["punch"]).all() and (image[2:] == colours["walk"]).all()
    assert asked == {"punch": 2.6, "walk": 5.0}
