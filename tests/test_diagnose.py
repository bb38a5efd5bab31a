"""Reward diagnosis: warnings on dead, saturated and undiscriminating rewards; re-scoring."""

import json
import os
import subprocess
import sys

import pytest

from mimic_mjx import diagnose
from mimic_mjx import reward as reward_lib
from mimic_mjx.errors import MimicError


@pytest.fixture(scope="module")
def rollouts(walk_rollouts):
    return walk_rollouts[0]


def test_default_preset_has_a_signal(rollouts):
    config = reward_lib.preset("deepmimic_paper")
    policies = diagnose.summarize(rollouts, config)
    ref, rnd = policies["reference"], policies["random"]
    assert 1e-2 < rnd["reward_fraction"] < ref["reward_fraction"]
    assert diagnose.warnings_for(policies, config) == []


def test_original_port_reward_is_flagged_as_vanishing(rollouts):
    config = reward_lib.preset("original_port")
    policies = diagnose.summarize(rollouts, config)
    warnings = diagnose.warnings_for(policies, config)
    assert any(w.startswith("vanishing reward: the random policy") for w in warnings)
    # The fix names the term and a scale that puts the random policy's term at 0.3:
    # exp(-k * err) = 0.3  <=>  k = ln(1/0.3) / err.
    err = policies["random"]["term_errors"]["joint_abs"]
    assert f"reward.joint_abs_scale={-__import__('math').log(0.3) / err:.3g}" in " ".join(warnings)


def test_saturated_reward_is_flagged(rollouts):
    config = reward_lib.with_overrides(
        reward_lib.preset("deepmimic_paper"),
        {"pose_scale": 1e-6, "velocity_scale": 1e-6, "end_effector_scale": 1e-6, "com_scale": 1e-6},
    )
    warnings = diagnose.warnings_for(diagnose.summarize(rollouts, config), config)
    assert any(w.startswith("saturated reward") for w in warnings)


def test_alive_bonus_only_does_not_tell_reference_from_random(rollouts):
    config = reward_lib.RewardConfig(alive_bonus=1.0)
    warnings = diagnose.warnings_for(diagnose.summarize(rollouts, config), config)
    assert any(w.startswith("reference does not clearly beat random") for w in warnings)


def test_rescore_matches_scoring_each_config_alone(rollouts):
    base = reward_lib.preset("deepmimic_paper")
    grid = diagnose.parse_scales(["pose_scale=1,4", "end_effector_scale=10,40"])
    assert len(grid) == 4 and grid[1] == {"pose_scale": 1.0, "end_effector_scale": 40.0}
    rows = diagnose.rescore(rollouts, base, grid)
    for overrides, row in zip(grid, rows):
        alone = diagnose.summarize(rollouts, reward_lib.with_overrides(base, overrides))
        for name in diagnose.POLICIES:
            assert row["reward_fraction"][name] == pytest.approx(alone[name]["reward_fraction"], rel=1e-5)
    # Larger pose scale, smaller pose term: the reference policy's fraction falls.
    assert rows[2]["reward_fraction"]["reference"] < rows[0]["reward_fraction"]["reference"]


def test_parse_scales_errors():
    with pytest.raises(MimicError, match="expected FIELD=V1,V2"):
        diagnose.parse_scales(["pose_scale"])
    with pytest.raises(MimicError, match="must be numbers"):
        diagnose.parse_scales(["pose_scale=a,b"])


def _cli(*args, timeout=600):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "mimic_mjx", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(900)
def test_cli_json_shape():
    out = _cli("diagnose", "--motion", "walk", "--envs", "2", "--steps", "6", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert isinstance(report["motion"], str) and isinstance(report["reward"], str)
    assert isinstance(report["warnings"], list)
    assert set(report["policies"]) == {"reference", "zero", "random"}
    for p in report["policies"].values():
        for key in ("reward_mean", "reward_max_possible", "episode_length_mean", "return_std"):
            assert isinstance(p[key], float)
        for stats in p["terms"].values():
            assert set(stats) >= {"mean", "min", "max"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reward", "nope"], "error: unknown reward preset 'nope' (known: deepmimic_paper, deepmimic_code, original_port, remedy_quick_fix, remedy_option1, remedy_option1_linear, remedy_option2, remedy_option3_linear, remedy_option3_square)"),
        (["--set", "pose_scal=1"], "error: unknown reward field 'pose_scal'"),
        (["--set", "env.early_terminaton=false"], "error: --set: unknown key 'env.early_terminaton'"),
        (["--scales", "pose_scale"], "error: --scales 'pose_scale': expected FIELD=V1,V2,..."),
    ],
)
def test_cli_bad_input_is_one_line(args, message):
    out = _cli("diagnose", *args, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith(message), out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
