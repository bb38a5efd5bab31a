"""Sweeps: the vmapped program trains each member exactly as its own `train` run would."""

import json

import jax
import numpy as np
import pytest

from mimic_mjx import sweep as sweep_lib
from mimic_mjx import runconfig, runner
from mimic_mjx.errors import MimicError

SWEEP = """
train: cpu_tiny
set: [horizon=8, "network.policy_hidden=[16, 16]", "network.value_hidden=[16, 16]", trpo.value_minibatches=2,
      env.episode_seconds=0.5, checkpoint_every=2]
grid:
  reward.pose_scale: [2.0, 8.0]
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
        # No evaluation: the comparison is of training metrics, and each evaluation is two
        # more compiles of native programs (never cached).
        config = sweep.member_config(member).replace(eval_every=0)
        alone = runner.train(config, tmp_path / f"m{member.index}", progress=lambda _: None)
        mine = [r for r in rows if r["member"] == member.index]
        assert len(mine) == len(alone.history) == 2
        for a, b in zip(mine, alone.history):
            for key in KEYS:
                assert a[key] == pytest.approx(b[key], rel=2e-3, abs=1e-5), (member.index, key)
        # Different reward scales really were different rewards.
    pose = {r["member"]: r["reward/pose"] for r in rows if r["training/iteration"] == 1}
    assert pose[0] != pose[1]


@pytest.mark.timeout(1800)
def test_resume_continues_bit_for_bit(swept, tmp_path):
    """1 iteration, then --resume to 2 == the fixture's 2 iterations in one go."""
    sweep, result, root = swept
    out = tmp_path / "resumed"
    sweep_lib.run(sweep_lib.load_sweep(root / "sweep.yaml", ["iterations=1"]), out, progress=lambda _: None)
    with pytest.raises(MimicError, match="already holds a sweep; pass --resume"):
        sweep_lib.run(sweep, out, progress=lambda _: None)
    lines = []
    resumed = sweep_lib.run(sweep, out, progress=lines.append, resume=True)
    assert any(line.startswith(f"resumed sweep {out} at iteration 1") for line in lines)
    for a, b in zip(jax.tree.leaves(resumed["state"]), jax.tree.leaves(result["state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    drop = ("charts/SPS", "charts/iteration_s", "charts/wall_time_s")
    rows = [{k: v for k, v in json.loads(x).items() if k not in drop} for x in (out / "metrics.jsonl").open()]
    want = [{k: v for k, v in json.loads(x).items() if k not in drop} for x in (root / "out" / "metrics.jsonl").open()]
    assert rows == want
    assert (out / "results.md").read_text() == (root / "out" / "results.md").read_text()


def test_resume_refuses_another_sweep(swept, tmp_path):
    sweep, _, root = swept
    other = sweep_lib.load_sweep(root / "sweep.yaml", ["grid.reward.pose_scale=[2.0, 4.0]"])
    with pytest.raises(MimicError, match="members differ"):
        sweep_lib.check_same_sweep(other, sweep_lib.load_saved(root / "out"), root / "out")
    longer = sweep_lib.load_sweep(root / "sweep.yaml", ["iterations=5"])
    sweep_lib.check_same_sweep(longer, sweep_lib.load_saved(root / "out"), root / "out")  # may run longer
    wider = sweep_lib.load_sweep(root / "sweep.yaml", ["num_envs=8"])
    with pytest.raises(MimicError, match="base config differs .* in num_envs"):
        sweep_lib.check_same_sweep(wider, sweep_lib.load_saved(root / "out"), root / "out")


def test_cli_resume_goes_through_and_refuses_another_sweep(swept, capsys):
    import argparse

    _, _, root = swept
    parser = argparse.ArgumentParser()
    sweep_lib.add_arguments(parser)
    other = parser.parse_args(["--config", str(root / "sweep.yaml"), "--out", str(root / "out"), "--resume",
                               "--set", "grid.reward.pose_scale=[2.0, 4.0]"])
    with pytest.raises(MimicError, match="members differ"):
        sweep_lib.run_cli(other)
    same = parser.parse_args(["--config", str(root / "sweep.yaml"), "--out", str(root / "out"), "--resume"])
    assert sweep_lib.run_cli(same) == 0  # already at its 2 iterations: restores, runs none
    assert f"resumed sweep {root / 'out'} at iteration 2" in capsys.readouterr().out


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
    assert (out / "yardstick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the dev extra has matplotlib
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
        ("train: cpu_tiny\ngrid: {reward.pose_scal: [1, 2]}\n", "'grid.reward.pose_scal' is not a key a sweep can vary"),
        ("train: cpu_tiny\ngrid: {pose_scale: [1, 2]}\n",
         "'grid.pose_scale' is not a train key; name it as `train --set` does: 'reward.pose_scale'"),
        ("train: cpu_tiny\ngrid: {trpo.cg_iters: [5, 10]}\n", "'grid.trpo.cg_iters' cannot vary across members"),
        ("train: cpu_tiny\ngrid: {env.min_root_height: [0.2]}\n", "'grid.env.min_root_height' cannot vary across members"),
        ("train: cpu_tiny\ngrid: {num_envs: [4, 8]}\n", "'grid.num_envs' cannot vary across members"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: []}\n", "'grid.reward.pose_scale' has no members"),
        ("train: cpu_tiny\ngrid: {}\n", "'grid' has no members"),
        ("train: cpu_tiny\nmembers: []\n", "'members' has no members"),
        ("train: cpu_tiny\n", "give exactly one of 'grid' or 'members'"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: [1]}\nbogus: 1\n", "unknown key 'bogus'"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: [a]}\n",
         "'grid.reward.pose_scale' must be a list of floats, got ['a']"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: [1]}\nseeds: []\n", "'seeds' has no members"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: [1]}\neval_every: 0\n", "eval_every must be >= 1, got 0"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: [1]}\nnum_envs: 0\n", "num_envs must be >= 1, got 0"),
        # Duplicate keys and 1e-3 go through the project's YAML reader (case 6).
        ("train: cpu_tiny\ngrid:\n  reward.pose_scale: [1]\n  reward.pose_scale: [2]\n",
         "malformed YAML at line 4: duplicate key 'reward.pose_scale'"),
        # A grid value out of its field's declared range.
        ("train: cpu_tiny\ngrid: {trpo.max_kl: [0.01, -0.01]}\n",
         "member 1 (trpo.max_kl=-0.01 seed=0): trpo.max_kl must be > 0, got -0.01"),
        ("train: cpu_tiny\ngrid: {reward.form: [0, 4]}\n", "reward.form must be one of 0, 1, 2, 3, got 4.0"),
        ("train: cpu_tiny\nmembers: [{reward.pose_scale: -1}]\n", "reward.pose_scale must be >= 0, got -1.0"),
        ("train: cpu_tiny\ngrid: {reward.pose_scale: [1]}\nset: [kl_plateau_evals=2]\n",
         "kl_plateau_evals (the adaptive step) is for single runs"),
    ],
)
def test_bad_sweep_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MimicError) as info:
        sweep_lib.load_sweep(path)
    assert message in str(info.value) and str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_grid_takes_train_keys_reward_and_trpo(tmp_path):
    path = _write(tmp_path, "train: cpu_tiny\ngrid:\n  reward.pose_scale: [1e-3, 2]\n  trpo.max_kl: [0.01, 0.05]\n"
                            "seeds: [0, 1]\n")
    sweep = sweep_lib.load_sweep(path)
    assert len(sweep.members) == 8
    first, last = sweep.members[0], sweep.members[-1]
    # 1e-3 is a float (the project's YAML reader), not the string PyYAML makes of it.
    assert first.overrides == {"reward.pose_scale": 1e-3, "trpo.max_kl": 0.01} and first.seed == 0
    assert last.overrides == {"reward.pose_scale": 2.0, "trpo.max_kl": 0.05} and last.seed == 1
    config = sweep.member_config(last)
    alone = runconfig.load_train_config("cpu_tiny", ["reward.pose_scale=2", "trpo.max_kl=0.05", "seed=1"])
    assert config == runconfig.resolve_defaults(alone)  # what `train --set` would run
    assert first.label == "reward.pose_scale=0.001 trpo.max_kl=0.01 seed=0"


def test_grid_nested_mapping_and_members_list(tmp_path):
    nested = sweep_lib.load_sweep(_write(tmp_path, "train: cpu_tiny\ngrid: {reward: {pose_scale: [1, 2]}}\n"))
    assert [m.overrides for m in nested.members] == [{"reward.pose_scale": 1.0}, {"reward.pose_scale": 2.0}]
    listed = sweep_lib.load_sweep(_write(
        tmp_path, "train: cpu_tiny\nmembers: [{reward.pose_scale: 1}, {trpo.gamma: 0.9, reward.velocity_weight: 0}]\n"))
    assert [m.overrides for m in listed.members] == [{"reward.pose_scale": 1.0},
                                                     {"trpo.gamma": 0.9, "reward.velocity_weight": 0.0}]
    assert listed.member_config(listed.members[1]).trpo.gamma == 0.9


def test_set_overrides_go_through_the_same_checks(tmp_path):
    path = _write(tmp_path, "train: cpu_tiny\ngrid: {reward.pose_scale: [1, 2]}\nnum_envs: 4\n")
    with pytest.raises(MimicError, match=r"^--set: unknown key 'nonexistent' \(valid keys at the top level: train, set,"):
        sweep_lib.load_sweep(path, ["nonexistent.key=1"])
    with pytest.raises(MimicError, match=r"^--set: iterations must be >= 1, got 0$"):
        sweep_lib.load_sweep(path, ["iterations=0"])
    with pytest.raises(MimicError, match=r"^--set: trpo.max_kl must be > 0, got -0.01$"):
        sweep_lib.load_sweep(path, ["set=[trpo.max_kl=-0.01]"])
    # --set adds a grid axis with the dotted train key.
    sweep = sweep_lib.load_sweep(path, ["grid.trpo.max_kl=[0.01, 0.02]", "iterations=3"])
    assert len(sweep.members) == 4 and sweep.base.iterations == 3 and sweep.base.num_envs == 4
    assert sweep.members[3].overrides == {"reward.pose_scale": 2.0, "trpo.max_kl": 0.02}


def test_every_vmapped_leaf_is_a_grid_axis():
    keys = sweep_lib.sweepable_keys()
    from mimic_mjx import reward, trpo

    assert [k for k in keys if k.startswith("reward.")] == [f"reward.{f}" for f in reward.RewardConfig.__dataclass_fields__]
    trpo_leaves = [f"trpo.{f.name}" for f in __import__("dataclasses").fields(trpo.TrpoConfig)
                   if f.metadata["pytree_node"]]
    assert [k for k in keys if k.startswith("trpo.")] == trpo_leaves and "trpo.max_kl" in keys
    assert "trpo.cg_iters" not in keys


def test_shipped_sweep_files_load():
    for name in ("sweep_reward_scales", "sweep_cpu_tiny"):
        sweep = sweep_lib.load_sweep(f"{runconfig.CONFIG_DIR}/{name}.yaml")
        assert all(set(m.overrides) <= set(sweep_lib.sweepable_keys()) for m in sweep.members)


def test_sweep_json_of_older_sweeps_still_reads():
    old = sweep_lib._member_from_json({"member": 1, "reward": {"pose_scale": 8.0}, "seed": 3})
    assert old == sweep_lib.Member(1, {"reward.pose_scale": 8.0}, 3)
    new = sweep_lib._member_from_json({"member": 1, "overrides": {"trpo.max_kl": 0.02}, "seed": 3})
    assert new == sweep_lib.Member(1, {"trpo.max_kl": 0.02}, 3)


def test_seed_remedies_sweep_members_score_as_their_presets():
    """Each member of configs/sweep_seed_remedies.yaml gives, on the same raw errors, the
    reward of the preset its comment names (the paper's zeroed terms score 0 whatever their
    scales)."""
    import jax.numpy as jnp

    from mimic_mjx import reward as reward_lib

    sweep = sweep_lib.load_sweep(runconfig.CONFIG_DIR / "sweep_seed_remedies.yaml")
    names = ["deepmimic_paper", "remedy_quick_fix", "remedy_option1", "remedy_option1_linear", "remedy_option2",
             "remedy_option3_linear", "remedy_option3_square"]
    assert len(sweep.members) == len(names)
    errors = {"pose": dict(weighted=0.0, sum=0.3, count=12.0), "velocity": dict(weighted=0.0, sum=2.0, count=12.0),
              "end_effector": dict(sum=0.01, count=4.0), "root": dict(mixed=0.0, pos=0.0, rot=0.0, linvel=0.0, angvel=0.0),
              "com": dict(pos=0.02, vel=0.0), "joint_abs": dict(sum=9.0, count=28.0),
              "joint_vel_abs": dict(sum=20.0, count=28.0)}
    errors = jax.tree.map(jnp.float32, errors)
    action = jnp.full((28,), 0.3)
    for member, name in zip(sweep.members, names):
        got = reward_lib.reward_from_errors(errors, action, sweep.member_config(member).reward)[0]
        want = reward_lib.reward_from_errors(errors, action, reward_lib.preset(name))[0]
        assert float(got) == pytest.approx(float(want), rel=1e-6), name
        assert float(reward_lib.max_reward(sweep.member_config(member).reward)) == pytest.approx(
            float(reward_lib.max_reward(reward_lib.preset(name)))), name


def test_a_sweep_without_train_starts_from_the_preset_train_picks(tmp_path):
    path = tmp_path / "no_base.yaml"
    path.write_text("grid: {reward.pose_scale: [1, 2]}\n")
    sweep = sweep_lib.load_sweep(path)
    # walk_cpu on a CPU, walk on an accelerator: what `mimic-mjx train` with no --config runs.
    preset = "walk_cpu" if __import__("jax").default_backend() == "cpu" else "walk"
    assert sweep.base == runconfig.resolve_defaults(runconfig.load_train_config(preset, []))
