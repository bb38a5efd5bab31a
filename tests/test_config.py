"""Config machinery: YAML + overrides -> typed dataclasses, with one-line errors."""

import dataclasses
from typing import Literal, Optional

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import struct

from mimic_mjx import config
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
    rows = config.field_docs(Run)
    assert ("trpo.max_kl", "a float", 0.01, "KL trust-region radius") in rows
    assert ("hidden", "a list of ints", [64, 64], "policy hidden widths") in rows
