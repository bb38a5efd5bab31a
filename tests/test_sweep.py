"""Sweeps: the vmapped program trains each member exactly as its own `train` run would."""

import json

import jax
import numpy as np
import pytest

from mimic_mjx import sweep as sweep_lib
from mimic_mjx import train as train_lib
from mimic_mjx.errors import MimicError

SWEEP = """
train: cpu_tiny
set: [horizon=8, "network.policy_hidden=[16, 16]", "network.value_hidden=[16, 16]", trpo.value_minibatches=2,
      env.episode_seconds=0.5, checkpoint_every=2]
grid:
  pose_scale: [2.0, 8.0]
seeds: [3]
num_envs: 4
iterations: 2
eval_every: 2
eval_episodes: 1
"""
# Keys compared between the sweep and the separate runs.
KEYS = ("training/reward_mean", "training/advantage_std", "losses/kl", "losses/value_loss", "losses/surrogate_after",
        "trpo/accepted", "reward/pose")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    path = root / "sweep.yaml"
    path.write_text(SWEEP)
    sweep = sweep_lib.load_sweep(path)
    result = sweep_lib.run(sweep, root / "out", progress=lambda _: None)
    return sweep, result, root


@pytest.mark.timeout(1800)
def test_members_match_separate_runs(swept, tmp_path):
    sweep, result, root = swept
    assert len(sweep.members) == 2
    rows = [json.loads(line) for line in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    for member in sweep.members:
        alone = train_lib.train(sweep.member_config(member), tmp_path / f"m{member.index}", progress=lambda _: None)
        mine = [r for r in rows if r["member"] == member.index]
        assert len(mine) == len(alone.history) == 2
        for a, b in zip(mine, alone.history):
            for key in KEYS:
                assert a[key] == pytest.approx(b[key], rel=2e-3, abs=1e-5), (member.index, key)
        # Different reward scales really were different rewards.
    pose = {r["member"]: r["reward/pose"] for r in rows if r["training/iteration"] == 1}
    assert pose[0] != pose[1]


def test_one_compile_for_all_members(swept):
    _, result, _ = swept
    # The jitted, vmapped iteration's cache holds one program after every iteration ran.
    assert result["compiles"] == 1


def test_outputs_and_extract(swept, tmp_path):
    sweep, result, root = swept
    out = root / "out"
    table = (out / "results.md").read_text()
    assert table.count("\n") == 2 + len(sweep.members)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert {e["member"] for e in evals} == {0, 1}
    assert all(0.0 <= e["normalized_return"] <= 1.0 for e in evals)
    member_dir = sweep_lib.extract(out, 1, tmp_path / "member1")
    from mimic_mjx import checkpoint, train as t

    env, _ = t.build_env(sweep.member_config(sweep.members[1]))
    state, step = checkpoint.restore(member_dir, t.abstract_state(env, sweep.member_config(sweep.members[1])))
    assert step == 2
    want = jax.tree.map(lambda x: x[1], result["state"].policy_params)
    for a, b in zip(jax.tree.leaves(state.policy_params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: cpu_tiny\ngrid: {pose_scal: [1, 2]}\n", "'grid.pose_scal' is not a RewardConfig field"),
        ("train: cpu_tiny\ngrid: {pose_scale: []}\n", "'grid.pose_scale' has no members"),
        ("train: cpu_tiny\ngrid: {}\n", "'grid' has no members"),
        ("train: cpu_tiny\nmembers: []\n", "'members' has no members"),
        ("train: cpu_tiny\ngrid: {pose_scale: [1]}\nbogus: 1\n", "unknown key 'bogus'"),
        ("train: cpu_tiny\ngrid: {pose_scale: [a]}\n", "'grid.pose_scale' must be a number"),
    ],
)
def test_bad_sweep_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MimicError, match=message) as info:
        sweep_lib.load_sweep(path)
    assert "\n" not in str(info.value)
