"""Config machinery: YAML + overrides -> typed dataclasses, with one-line errors."""

import dataclasses
from typing import Literal, Optional

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import struct

from mimic_mjx import config, config_docs
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(60)


@dataclasses.dataclass(frozen=True)
class Trpo:
    max_kl: float = config.field(0.01, "KL trust-region radius")
    cg_iters: int = config.field(10, "conjugate-gradient iterations")
    damping: Optional[float] = config.field(None, "Fisher damping; null = none")


@dataclasses.dataclass(frozen=True)
class Run:
    motion: str = config.field("walk", "clip name or path")
    loop: Literal["wrap", "none"] = config.field("wrap", "clip loop mode")
    hidden: tuple[int, ...] = config.field((64, 64), "policy hidden widths")
    render: bool = config.field(False, "write a video")
    trpo: Trpo = config.field(Trpo(cg_iters=20), "TRPO settings")


@struct.dataclass
class Reward:
    pose_weight: float = config.field(0.65, "pose term weight")
    horizon: int = config.field(32, "steps per rollout", static=True)


@struct.dataclass
class Sweep:
    reward: Reward = config.field(Reward(), "reward terms")
    seeds: int = config.field(1, "members", static=True)


def test_round_trip_and_yaml_safe():
    cfg = Run(motion="run", loop="none", hidden=(32, 16), render=True, trpo=Trpo(0.02, 5, 0.1))
    data = config.to_dict(cfg)
    assert data["hidden"] == [32, 16] and data["trpo"] == {"max_kl": 0.02, "cg_iters": 5, "damping": 0.1}
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert config.from_dict(Run, data, "x.yaml") == cfg


def test_missing_keys_take_defaults_including_parent_nested_default():
    cfg = config.from_dict(Run, {"trpo": {"max_kl": 0.5}}, "x.yaml")
    # cg_iters comes from Run's default Trpo(cg_iters=20), not Trpo's own 10.
    assert cfg.trpo == Trpo(max_kl=0.5, cg_iters=20) and cfg.hidden == (64, 64)


def test_unknown_key_top_level_and_nested():
    with pytest.raises(MimicError) as top:
        config.from_dict(Run, {"motoin": "walk"}, "walk.yaml")
    assert str(top.value) == (
        "walk.yaml: unknown key 'motoin' (valid keys at the top level: motion, loop, hidden, render, trpo)")
    with pytest.raises(MimicError) as nested:
        config.from_dict(Run, {"trpo": {"max_kll": 0.1}}, "walk.yaml")
    assert str(nested.value) == (
        "walk.yaml: unknown key 'trpo.max_kll' (valid keys under 'trpo': max_kl, cg_iters, damping)")


@pytest.mark.parametrize("data, message", [
    ({"trpo": {"max_kl": "abc"}}, "x.yaml: 'trpo.max_kl' must be a float, got 'abc'"),
    ({"trpo": {"cg_iters": True}}, "x.yaml: 'trpo.cg_iters' must be an int, got True"),
    ({"trpo": {"max_kl": False}}, "x.yaml: 'trpo.max_kl' must be a float, got False"),
    ({"trpo": {"cg_iters": 2.5}}, "x.yaml: 'trpo.cg_iters' must be an int, got 2.5"),
    ({"render": 1}, "x.yaml: 'render' must be a bool (true or false), got 1"),
    ({"loop": "once"}, "x.yaml: 'loop' must be one of 'wrap', 'none', got 'once'"),
    ({"hidden": [64, "a"]}, "x.yaml: 'hidden' must be a list of ints, got [64, 'a']"),
    ({"trpo": 3}, "x.yaml: 'trpo' must be a mapping, got 3"),
    ({"trpo": {"damping": "x"}}, "x.yaml: 'trpo.damping' must be a float or null, got 'x'"),
])
def test_wrong_type_messages(data, message):
    with pytest.raises(MimicError) as err:
        config.from_dict(Run, data, "x.yaml")
    assert str(err.value) == message


def test_int_accepted_for_float_list_for_tuple_null_for_optional():
    cfg = config.from_dict(Run, {"trpo": {"max_kl": 1, "damping": None}, "hidden": [8]}, "x")
    assert cfg.trpo.max_kl == 1.0 and isinstance(cfg.trpo.max_kl, float)
    assert cfg.hidden == (8,) and cfg.trpo.damping is None


def test_parse_overrides_types_and_merge():
    got = config.parse_overrides(
        ["trpo.max_kl=0.02", "trpo.cg_iters=5", "render=true", "hidden=[64,64]", "motion=run", "lr=1e-3"])
    assert got == {"trpo": {"max_kl": 0.02, "cg_iters": 5}, "render": True, "hidden": [64, 64],
                   "motion": "run", "lr": 0.001}
    assert config.parse_overrides(["a.b=1", "a.b=2"]) == {"a": {"b": 2}}  # later wins


@pytest.mark.parametrize("item", ["foo", "=3", "a..b=1", ".a=1"])
def test_parse_overrides_malformed(item):
    with pytest.raises(MimicError) as err:
        config.parse_overrides([item])
    assert str(err.value) == f"--set '{item}': expected KEY=VALUE"


def test_load_config_file_and_overrides(tmp_path):
    path = tmp_path / "walk.yaml"
    path.write_text("motion: walk\ntrpo:\n  max_kl: 0.05\n")
    cfg = config.load_config(Run, str(path), ["trpo.cg_iters=3", "hidden=[16]"])
    assert cfg == Run(motion="walk", hidden=(16,), trpo=Trpo(max_kl=0.05, cg_iters=3))
    assert config.load_config(Run, None, []) == Run()
    assert config.load_config(Run, None, [], base={"motion": "jump"}).motion == "jump"


def test_override_errors_name_set(tmp_path):
    with pytest.raises(MimicError, match=r"^--set: unknown key 'trpo.max_kll' \(valid keys under 'trpo'"):
        config.load_config(Run, None, ["trpo.max_kll=0.1"])
    with pytest.raises(MimicError, match=r"^--set: 'trpo.max_kl' must be a float, got 'abc'$"):
        config.load_config(Run, None, ["trpo.max_kl=abc"])


def test_file_errors_are_one_line_and_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("motion: walk\ntrpo:\n  max_kl: [0.1\n")
    with pytest.raises(MimicError) as err:
        config.load_config(Run, bad, [])
    message = str(err.value)
    assert message.startswith(f"{bad}: malformed YAML at line ") and "\n" not in message
    dup = tmp_path / "dup.yaml"
    dup.write_text("motion: walk\nmotion: run\n")
    with pytest.raises(MimicError, match=r"dup.yaml: malformed YAML at line 2: duplicate key 'motion'$"):
        config.load_config(Run, dup, [])
    with pytest.raises(MimicError, match=r"missing.yaml: config file not found$"):
        config.load_config(Run, tmp_path / "missing.yaml", [])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- walk\n")
    with pytest.raises(MimicError, match=r"scalar.yaml: the top level must be a mapping"):
        config.load_config(Run, scalar, [])
    typo = tmp_path / "typo.yaml"
    typo.write_text("trpo:\n  max_kl: abc\n")
    with pytest.raises(MimicError, match=r"typo.yaml: 'trpo.max_kl' must be a float, got 'abc'$"):
        config.load_config(Run, typo, [])


def test_base_inheritance(tmp_path):
    (tmp_path / "walk.yaml").write_text("motion: walk\nrender: true\ntrpo:\n  max_kl: 0.05\n  cg_iters: 7\n")
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "run.yaml").write_text("base: ../walk.yaml\nmotion: run\ntrpo:\n  cg_iters: 9\n")
    cfg = config.load_config(Run, tmp_path / "presets" / "run.yaml", ["render=false"])
    assert cfg == Run(motion="run", render=False, trpo=Trpo(max_kl=0.05, cg_iters=9))


def test_base_errors_name_the_file_at_fault(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(MimicError, match=r"'base' files form a cycle"):
        config.load_config(Run, tmp_path / "a.yaml", [])
    (tmp_path / "c.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(MimicError, match=r"nope.yaml: config file not found \(named by 'base' in .*c.yaml\)$"):
        config.load_config(Run, tmp_path / "c.yaml", [])
    (tmp_path / "d.yaml").write_text("bogus: 1\n")
    (tmp_path / "e.yaml").write_text("base: d.yaml\n")
    with pytest.raises(MimicError, match=r"d.yaml: unknown key 'bogus'"):
        config.load_config(Run, tmp_path / "e.yaml", [])


def test_save_config_round_trip(tmp_path):
    cfg = Run(motion="kick", hidden=(8, 8), trpo=Trpo(damping=0.1))
    config.save_config(cfg, tmp_path / "run" / "config.yaml")
    assert config.load_config(Run, tmp_path / "run" / "config.yaml", []) == cfg


def test_flax_struct_dataclass_with_static_field(tmp_path):
    assert dataclasses.fields(Reward)[1].metadata["pytree_node"] is False
    cfg = config.load_config(Sweep, None, ["reward.pose_weight=0.5", "reward.horizon=16"])
    assert cfg == Sweep(reward=Reward(pose_weight=0.5, horizon=16))
    import jax
    assert jax.tree_util.tree_leaves(cfg) == [0.5]  # static fields are not leaves
    # Array leaves (as a sweep would hold) turn back into short Python floats.
    arrays = cfg.replace(reward=cfg.reward.replace(pose_weight=jnp.float32(0.1)), seeds=np.int64(3))
    assert config.to_dict(arrays) == {"reward": {"pose_weight": 0.1, "horizon": 16}, "seeds": 3}
    assert config.from_dict(Sweep, config.to_dict(arrays), "x").reward.pose_weight == 0.1


def test_field_docs():
    rows = config_docs.field_docs(Run)
    assert ("trpo.max_kl", "a float", 0.01, "", "KL trust-region radius") in rows
    assert ("hidden", "a list of ints", [64, 64], "", "policy hidden widths") in rows


# ------------------------------------------------------------------ declared ranges


@struct.dataclass
class Ranged:
    kl: float = config.field(0.01, "trust region", gt=0)
    gamma: float = config.field(0.9, "discount", ge=0, le=1)
    frac: float = config.field(0.5, "fraction", gt=0, lt=1)
    form: float = config.field(0.0, "switch", choices=(0, 1, 2))
    mode: str = config.field("pd", "control", static=True, choices=("pd", "torque"))
    widths: tuple[int, ...] = config.field((8,), "widths", static=True, ge=1)
    limit: Optional[float] = config.field(None, "minutes; null: none", static=True, gt=0)
    free: float = config.field(0.0, "any finite number")


@pytest.mark.parametrize("override, message", [
    ("kl=-0.01", "--set: kl must be > 0, got -0.01"),
    ("kl=0", "--set: kl must be > 0, got 0.0"),
    ("gamma=1.5", "--set: gamma must be in [0, 1], got 1.5"),
    ("frac=1", "--set: frac must be in (0, 1), got 1.0"),
    ("form=3", "--set: form must be one of 0, 1, 2, got 3.0"),
    ("mode=velocity", "--set: mode must be one of pd, torque, got 'velocity'"),
    ("widths=[8, 0]", "--set: widths must be >= 1, got [8, 0]"),
    ("limit=0", "--set: limit must be > 0, got 0.0"),
    ("free=.nan", "--set: free must be finite, got nan"),
    ("kl=.inf", "--set: kl must be finite, got inf"),
])
def test_range_is_checked_at_load_with_one_line(override, message):
    with pytest.raises(MimicError) as err:
        config.load_config(Ranged, None, [override])
    assert str(err.value) == message


def test_range_bounds_are_inclusive_or_exclusive_as_declared(tmp_path):
    cfg = config.load_config(Ranged, None, ["gamma=0", "kl=1e-9", "form=2", "limit=null", "widths=[]", "free=-3"])
    assert (cfg.gamma, cfg.kl, cfg.form, cfg.limit, cfg.widths, cfg.free) == (0.0, 1e-9, 2.0, None, (), -3.0)
    path = tmp_path / "r.yaml"
    path.write_text("gamma: 1.0\nkl: -1\n")
    with pytest.raises(MimicError, match=r"^.*r.yaml: kl must be > 0, got -1.0$"):
        config.load_config(Ranged, path, [])


def test_validate_checks_built_and_stacked_configs():
    assert config.validate(Ranged()) == Ranged()
    with pytest.raises(MimicError, match=r"^kl must be > 0, got -1.0$"):
        config.validate(Ranged(kl=-1.0))
    stacked = Ranged(kl=np.array([0.1, 0.0]))  # a sweep's stacked leaves
    with pytest.raises(MimicError, match=r"^x.kl must be > 0, got \[0.1, 0.0\]$"):
        config.validate(stacked, prefix="x.")
    with pytest.raises(MimicError, match=r"^--set: form must be one of 0, 1, 2"):
        config.validate(Ranged(form=jnp.float32(0.5)), source="--set")


def test_range_text():
    fields = {f.name: f for f in dataclasses.fields(Ranged)}
    assert [config.range_text(fields[n]) for n in ("kl", "gamma", "frac", "form", "mode", "free")] == [
        "> 0", "in [0, 1]", "in (0, 1)", "one of 0, 1, 2", "one of pd, torque", ""]


def _trpo_reward_env_runconfig():
    from mimic_mjx import env as env_lib
    from mimic_mjx import reward as reward_lib
    from mimic_mjx import runconfig
    from mimic_mjx import trpo

    return env_lib, reward_lib, runconfig, trpo


@pytest.mark.parametrize("override, message", [
    # TrpoConfig
    ("trpo.max_kl=-0.01", "trpo.max_kl must be > 0, got -0.01"),
    ("trpo.max_kl=0", "trpo.max_kl must be > 0, got 0.0"),
    ("trpo.damping=0", "trpo.damping must be > 0, got 0.0"),
    ("trpo.value_lr=-1e-3", "trpo.value_lr must be > 0, got -0.001"),
    ("trpo.gamma=1.01", "trpo.gamma must be in [0, 1], got 1.01"),
    ("trpo.backtrack_coeff=1", "trpo.backtrack_coeff must be in (0, 1), got 1.0"),
    ("trpo.cg_iters=0", "trpo.cg_iters must be >= 1, got 0"),
    # RewardConfig
    ("reward.pose_scale=-1", "reward.pose_scale must be >= 0, got -1.0"),
    ("reward.pose_weight=-0.5", "reward.pose_weight must be >= 0, got -0.5"),
    ("reward.form=4", "reward.form must be one of 0, 1, 2, 3, got 4.0"),
    ("reward.com_source=0.5", "reward.com_source must be one of 0, 1, got 0.5"),
    ("reward.alive_bonus=.nan", "reward.alive_bonus must be finite, got nan"),
    # EnvConfig
    ("env.episode_seconds=0", "env.episode_seconds must be > 0, got 0.0"),
    ("env.future_frames=[1, 0]", "env.future_frames must be >= 1, got [1, 0]"),
    ("env.physics=gpu", "env.physics must be one of auto, mjx, native, got 'gpu'"),
    ("env.control=velocity", "env.control must be one of pd, torque, got 'velocity'"),
    ("env.physics_threads=-1", "env.physics_threads must be >= 0, got -1"),
    # NetworkConfig and TrainConfig
    ("network.policy_hidden=[64, 0]", "network.policy_hidden must be >= 1, got [64, 0]"),
    ("num_envs=0", "num_envs must be >= 1, got 0"),
    ("horizon=-3", "horizon must be >= 1, got -3"),
    ("iterations=0", "iterations must be >= 1, got 0"),
    ("checkpoint_every=0", "checkpoint_every must be >= 1, got 0"),
    ("time_limit_minutes=0", "time_limit_minutes must be > 0, got 0.0"),
])
def test_train_config_ranges(override, message):
    _, _, runconfig, _ = _trpo_reward_env_runconfig()
    with pytest.raises(MimicError) as err:
        runconfig.load_train_config(None, [override])
    assert str(err.value) == f"--set: {message}"


def test_every_shipped_default_and_preset_is_in_range():
    env_lib, reward_lib, runconfig, trpo = _trpo_reward_env_runconfig()
    config.validate(runconfig.TrainConfig())
    for name in reward_lib.PRESETS:
        reward_lib.validate(reward_lib.preset(name))
    for name in ("walk", "walk_cpu", "cpu_tiny", "run", "jump", "backflip", "spinkick", *CLIP_PRESETS):
        runconfig.resolve_defaults(runconfig.load_train_config(name, []), "cpu")


# DeepMimic's 15 humanoid3d clips but walk, and what each one's args file changes from walk's
# (xbpeng/DeepMimic args/train_humanoid3d_<clip>_args.txt, read 2026-12-07): the fall
# contact bodies (crawl, cartwheel; none for roll and the getups, where this project uses its
# reference rule) and, with the clip on the floor, no root height rule.
CLIP_DIFFERENCES = {
    "run": {}, "jump": {}, "backflip": {}, "spinkick": {}, "dance_a": {}, "dance_b": {}, "kick": {}, "punch": {},
    "spin": {},
    "cartwheel": {"fall_contact": "non_feet_hands"},
    "crawl": {"fall_contact": "deepmimic", "min_root_height": 0.0},
    "roll": {"fall_contact": "reference", "min_root_height": 0.0},
    "getup_facedown": {"fall_contact": "reference", "min_root_height": 0.0},
    "getup_faceup": {"fall_contact": "reference", "min_root_height": 0.0},
}
CLIP_PRESETS = tuple(f"{clip}_cpu" for clip in CLIP_DIFFERENCES)


@pytest.mark.parametrize("clip", sorted(CLIP_DIFFERENCES))
def test_each_clip_preset_is_walk_cpu_with_deepmimics_per_clip_differences(clip):
    _, _, runconfig, _ = _trpo_reward_env_runconfig()
    walk = config.to_dict(runconfig.load_train_config("walk_cpu", []))
    preset = config.to_dict(runconfig.load_train_config(f"{clip}_cpu", []))
    expected = {**walk, "env": {**walk["env"], "motion": clip, **CLIP_DIFFERENCES[clip]}}
    assert preset == expected


def test_a_clip_preset_with_a_bad_field_is_refused_in_one_line():
    _, _, runconfig, _ = _trpo_reward_env_runconfig()
    with pytest.raises(MimicError) as err:
        runconfig.load_train_config("crawl_cpu", ["env.fall_contact=floor"])
    assert str(err.value) == ("--set: env.fall_contact must be one of non_feet, non_feet_hands, deepmimic, reference, "
                              "got 'floor'")


def test_train_diagnose_and_config_start_from_the_same_preset(monkeypatch, tmp_path, capsys):
    """Without --config every command that reads a training config takes the preset `train`
    picks: on a CPU walk_cpu, and with --motion CLIP that clip's CPU preset."""
    from mimic_mjx import cli, runconfig, runner

    monkeypatch.chdir(tmp_path)
    for motion, preset in ((None, "walk_cpu"), ("crawl", "crawl_cpu")):
        flag = ["--motion", motion] if motion else []
        trained, _ = runner.config_from_args(cli.build_parser("train").parse_args(["train", *flag]))
        diagnosed, name = cli.diagnose_config(cli.build_parser("diagnose").parse_args(["diagnose", *flag]))
        expected = runconfig.resolve_defaults(runconfig.load_train_config(preset, []), "cpu")
        assert trained == expected
        assert (diagnosed.env, diagnosed.reward) == (expected.env, expected.reward) and name == "deepmimic_paper"
        assert f"config: {preset} (" in capsys.readouterr().out
    cli.main(["config"])
    printed = capsys.readouterr().out
    assert printed.startswith("# config: walk_cpu (")
    assert config.load_config(runconfig.TrainConfig, None, []) != runconfig.load_train_config("walk_cpu", [])
    (tmp_path / "printed.yaml").write_text(printed)
    assert runconfig.load_train_config(tmp_path / "printed.yaml", []) == runconfig.load_train_config("walk_cpu", [])


def test_resolve_defaults_checks_a_config_built_in_code():
    _, _, runconfig, _ = _trpo_reward_env_runconfig()
    config_ = runconfig.TrainConfig()
    with pytest.raises(MimicError, match=r"^trpo.max_kl must be > 0, got -1.0$"):
        runconfig.resolve_defaults(config_.replace(trpo=config_.trpo.replace(max_kl=-1.0)), "cpu")
    with pytest.raises(MimicError, match=r"^reward.pose_scale must be >= 0, got -2.0$"):
        runconfig.resolve_defaults(config_.replace(reward=config_.reward.replace(pose_scale=-2.0)), "cpu")


# ------------------------------------------------------- the reward section is RewardConfig

# A run directory's config.yaml as written before the reward section was the RewardConfig
# itself (runs/walk_cpu/config.yaml, commit e804c92): null overrides mean the preset's value.
OLD_RUN_CONFIG = """\
env:
  motion: walk
  control: pd
  rsi: true
  early_termination: true
  fall_contact: non_feet
  episode_seconds: 20.0
  min_root_height: 0.3
  future_frames: []
  physics: native
  physics_threads: 0
  action_offset: reference
reward: {preset: deepmimic_paper, pose_weight: null, pose_scale: null, velocity_weight: null,
  velocity_scale: null, end_effector_weight: null, end_effector_scale: null, root_weight: null,
  root_scale: null, com_weight: null, com_scale: null, joint_abs_weight: null, joint_abs_scale: null,
  form: null, joint_weighting: null, com_source: null, normalize_per_joint: null,
  output_scale: null, alive_bonus: null, action_penalty: null}
trpo: {max_kl: 0.05, damping: 0.1, cg_tol: 1.0e-10, backtrack_coeff: 0.5, accept_ratio: 0.1,
  kl_accept_factor: 1.5, gamma: 0.95, gae_lambda: 0.95, value_lr: 0.001, cg_iters: 10,
  backtrack_iters: 10, value_epochs: 2, value_minibatches: 8, fvp_subsample: 5}
network:
  policy_hidden: [256, 256]
  value_hidden: [256, 256]
  init_log_std: -3.0
num_envs: 64
horizon: 64
iterations: 10000
seed: 0
checkpoint_every: 100
keep_checkpoints: 3
time_limit_minutes: 115.0
"""


def test_old_run_directory_config_still_loads(tmp_path):
    _, reward_lib, runconfig, _ = _trpo_reward_env_runconfig()
    path = tmp_path / "config.yaml"
    path.write_text(OLD_RUN_CONFIG)
    loaded = config.load_config(runconfig.TrainConfig, path, [])
    assert loaded.reward == reward_lib.preset("deepmimic_paper")
    assert loaded.trpo.max_kl == 0.05 and loaded.num_envs == 64 and loaded.time_limit_minutes == 115.0
    # A null override beside a set one: the set one wins, the null keeps the preset's value.
    partial = config.load_config(runconfig.TrainConfig, path, ["reward.pose_scale=3", "reward.com_scale=null"])
    assert (partial.reward.pose_scale, partial.reward.com_scale) == (3.0, 10.0)
    # Saved again, it holds every resolved number and loads back to the same config.
    config.save_config(loaded, tmp_path / "new" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())
    assert saved["reward"]["pose_scale"] == 2.0 and "preset" not in saved["reward"]
    assert config.load_config(runconfig.TrainConfig, tmp_path / "new" / "config.yaml", []) == loaded


def test_reward_is_a_preset_plus_its_own_fields(tmp_path):
    _, reward_lib, runconfig, _ = _trpo_reward_env_runconfig()
    assert not hasattr(runconfig, "RewardSpec")
    assert config.config_class(config.declared_fields(runconfig.TrainConfig)["reward"][1]) is reward_lib.RewardConfig
    path = tmp_path / "r.yaml"
    path.write_text("reward: {preset: deepmimic_code, pose_scale: 3}\n")
    code = runconfig.load_train_config(path, [])
    assert code.reward == reward_lib.preset("deepmimic_code").replace(pose_scale=3.0)
    # A preset in a later layer starts the section afresh (the file's pose_scale goes); fields
    # in the same layer apply on top whatever their order.
    paper = runconfig.load_train_config(path, ["reward.pose_scale=5", "reward.preset=deepmimic_paper"])
    assert paper.reward == reward_lib.preset("deepmimic_paper").replace(pose_scale=5.0)
    assert runconfig.load_train_config(path, ["reward.preset=original_port"]).reward == reward_lib.preset("original_port")
    # ... so `--resume --set reward.preset=...` on a saved config (every number set) takes effect.
    config.save_config(code, tmp_path / "run" / "config.yaml")
    resumed = runconfig.load_train_config(tmp_path / "run" / "config.yaml", ["reward.preset=deepmimic_paper"])
    assert resumed.reward == reward_lib.preset("deepmimic_paper")
    # A base file's fields survive a child that sets fields but no preset.
    (tmp_path / "child.yaml").write_text("base: r.yaml\nreward: {velocity_scale: 0.5}\n")
    child = runconfig.load_train_config(tmp_path / "child.yaml", [])
    assert (child.reward.pose_scale, child.reward.velocity_scale, child.reward.root_weight) == (3.0, 0.5, pytest.approx(0.2))


@pytest.mark.parametrize("override, message", [
    ("reward.preset=nope", "--set: unknown reward preset 'nope' (known: deepmimic_paper, deepmimic_code, original_port, remedy_quick_fix, remedy_option1, remedy_option1_linear, remedy_option2, remedy_option3_linear, remedy_option3_square)"),
    ("reward.preset=3", "--set: 'reward.preset' must be a preset name (deepmimic_paper, deepmimic_code, original_port, remedy_quick_fix, remedy_option1, remedy_option1_linear, remedy_option2, remedy_option3_linear, remedy_option3_square), got 3"),
    ("reward.pose_scal=1", "--set: unknown key 'reward.pose_scal' (valid keys under 'reward': preset, pose_weight,"),
])
def test_reward_section_errors(override, message):
    _, _, runconfig, _ = _trpo_reward_env_runconfig()
    with pytest.raises(MimicError) as err:
        runconfig.load_train_config(None, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_replace_applies_dotted_overrides_with_the_loaders_checks():
    _, reward_lib, runconfig, _ = _trpo_reward_env_runconfig()
    base = runconfig.TrainConfig()
    got = config.replace(base, {"reward.pose_scale": 4, "trpo.max_kl": 0.02}, "member 0")
    assert got.reward == base.reward.replace(pose_scale=4.0) and got.trpo == base.trpo.replace(max_kl=0.02)
    with pytest.raises(MimicError, match=r"^member 0: trpo.max_kl must be > 0, got -1.0$"):
        config.replace(base, {"trpo.max_kl": -1}, "member 0")


# ------------------------------------------------------------------- dict fields


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str = config.field(dataclasses.MISSING, "required")
    grid: Optional[dict[str, tuple[float, ...]]] = config.field(None, "axes")


def test_dict_fields_flatten_dotted_and_nested_keys(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: x\ngrid:\n  reward.pose_scale: [1e-3, 2]\n  trpo: {max_kl: [0.01]}\n")
    cfg = config.load_config(Grid, path, ["grid.reward.end_effector_scale=[10]"])
    assert cfg.grid == {"reward.pose_scale": (1e-3, 2.0), "trpo.max_kl": (0.01,), "reward.end_effector_scale": (10.0,)}
    with pytest.raises(MimicError, match=r"'grid' must be a mapping of keys to lists of floats or null, got 3$"):
        config.load_config(Grid, path, ["grid=3"])
    with pytest.raises(MimicError, match=r"g.yaml: missing required key 'name'$"):
        path.write_text("grid: {}\n")
        config.load_config(Grid, path, [])


def test_binary_config_file_is_one_line(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(bytes(range(128, 256)))
    with pytest.raises(MimicError, match=r"bin.yaml: not a YAML file \(its bytes are not UTF-8 text\)$"):
        config.load_config(Run, path, [])


# ------------------------------------------------------------ docs/config.md's config table

CONFIG_DOC = __import__("pathlib").Path(__file__).resolve().parent.parent / "docs" / "config.md"
BEGIN, END = "<!-- config-reference:begin (mimic-mjx config --list) -->", "<!-- config-reference:end -->"


def test_config_reference_lists_every_key_with_its_declared_range():
    from mimic_mjx import cli, runconfig, sweep

    text = cli.config_markdown()
    for cls, start in ((runconfig.TrainConfig, runconfig.TrainConfig()), (sweep.SweepFile, None)):
        table = config_docs.markdown_table(cls, start=start)
        assert table in text
        rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines() if line.startswith("| `")}
        for key, _, _, valid, doc in config_docs.field_docs(cls, start=start):
            assert f"| {valid or 'any'} |" in rows[key] and doc.replace("|", "\\|") in rows[key], key
        assert len(rows) == len(config_docs.field_docs(cls, start=start))
    assert "| `trpo.max_kl` | a float | 0.01 | > 0 |" in text
    assert "| `reward.preset` | a string | deepmimic_paper | one of deepmimic_paper, deepmimic_code, original_port, remedy_quick_fix, remedy_option1, remedy_option1_linear, remedy_option2, remedy_option3_linear, remedy_option3_square |" in text


def test_config_doc_reference_is_the_generated_one():
    """docs/config.md's config section is `mimic-mjx config --list`, pasted between the markers."""
    from mimic_mjx import cli

    doc = CONFIG_DOC.read_text()
    assert BEGIN in doc and END in doc, f"docs/config.md lacks the markers {BEGIN} ... {END}"
    pasted = doc.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert pasted == cli.config_markdown().strip(), "docs/config.md's config reference is stale: paste `mimic-mjx config --list`"
