"""Bad input is refused at once: one line, exit status 2, no traceback, nothing built.

Each case below was found by trying the CLI as a new user would; on the code before this
file every one of them reached a traceback, was silently ignored, or started long work
(training, a sweep, a ~100 MB download). The CLI runs in a subprocess with a private clip
cache, an unreachable package index and a 60 s limit, so a regression fails fast instead of
training or downloading.
"""

import os
import subprocess
import sys
import time

import pytest

from mimic_mjx import clipstore, motion
from mimic_mjx import reward as reward_lib
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(120)

# Refused before the environment is built: importing JAX is most of it (~3 s here).
LIMIT_S = 60


@pytest.fixture()
def cli(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("walk", "run"):
        (clips / f"humanoid3d_{name}.txt").write_text('{"Loop": "wrap", "Frames": []}')
    env = {**os.environ, "MIMIC_MJX_CLIPS": str(clips), "MIMIC_MJX_CACHE": str(tmp_path / "cache"),
           "MIMIC_MJX_COMPILE_CACHE": "off", "JAX_PLATFORMS": "cpu",
           # Were a fetch started, pip would fail at once instead of downloading.
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "1"}

    def run(*args):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "mimic_mjx", *args], capture_output=True, text=True,
                             timeout=LIMIT_S, env=env, cwd=tmp_path)
        return out, time.perf_counter() - start

    return run


def _refused(out, message):
    """Exit 2 and exactly one stderr line, `error: <message...>`, with no traceback."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {message}"), lines[0]
    return lines[0]


def test_case1_sweep_set_with_an_unknown_key(cli, tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out, _ = cli("sweep", "--config", os.path.join(repo, "configs", "sweep_reward_scales.yaml"),
                 "--set", "nonexistent.key=1", "--out", str(tmp_path / "sweep"))
    _refused(out, "--set: unknown key 'nonexistent' (valid keys at the top level: train, set, grid,")
    assert not (tmp_path / "sweep").exists()


def test_case2_diagnose_motion_file_of_binary_bytes(cli, tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(bytes(range(128, 256)) * 8)
    out, _ = cli("diagnose", "--motion", str(path))
    _refused(out, f"{path}: not a clip file (its bytes are not UTF-8 text; a clip is JSON)")
    with pytest.raises(MimicError, match="not UTF-8 text"):
        motion.parse_clip_file(path)


@pytest.mark.parametrize("override, message", [
    ("trpo.max_kl=-0.01", "--set: trpo.max_kl must be > 0, got -0.01"),
    ("trpo.damping=0", "--set: trpo.damping must be > 0, got 0.0"),
    ("trpo.value_lr=0", "--set: trpo.value_lr must be > 0, got 0.0"),
    ("reward.pose_scale=-2", "--set: reward.pose_scale must be >= 0, got -2.0"),
    ("env.episode_seconds=0", "--set: env.episode_seconds must be > 0, got 0.0"),
])
def test_case3_train_with_a_value_out_of_range(cli, tmp_path, override, message):
    out, _ = cli("train", "--config", "cpu_tiny", "--set", override, "--out", str(tmp_path / "run"))
    _refused(out, message)
    assert not (tmp_path / "run").exists()


def test_case4_train_out_is_an_existing_file(cli, tmp_path):
    (tmp_path / "taken").write_text("not a run")
    out, _ = cli("train", "--config", "cpu_tiny", "--out", str(tmp_path / "taken"))
    _refused(out, f"--out {tmp_path / 'taken'}: is a file, not a directory")
    out, _ = cli("train", "--config", "cpu_tiny", "--out", str(tmp_path / "taken" / "run"))
    _refused(out, f"--out {tmp_path / 'taken' / 'run'}: lies under {tmp_path / 'taken'}, which is a file")
    out, _ = cli("train", "--config", "cpu_tiny", "--resume", "--out", str(tmp_path / "nothing"))
    _refused(out, f"--out {tmp_path / 'nothing'}: no checkpoint to resume")


def test_case5_diagnose_a_clip_name_deepmimic_does_not_ship(cli, tmp_path):
    out, seconds = cli("diagnose", "--motion", "moonwalk_xyz")
    line = _refused(out, "clip 'moonwalk_xyz' not found: looked for humanoid3d_moonwalk_xyz.txt in ")
    assert f"{tmp_path / 'clips'}, {tmp_path / 'cache'}" in line and "clips found: run, walk;" in line
    assert "fetching" not in out.stderr and not (tmp_path / "cache").exists()  # no download was started


def test_case6_sweep_file_read_by_the_project_loader(cli, tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("train: cpu_tiny\ngrid:\n  reward.pose_scale: [1e-3]\n  reward.pose_scale: [2]\n")
    out, _ = cli("sweep", "--config", str(dup), "--out", str(tmp_path / "sweep"))
    _refused(out, f"{dup}: malformed YAML at line 4: duplicate key 'reward.pose_scale'")
    from mimic_mjx import sweep

    one = tmp_path / "one.yaml"
    one.write_text("train: cpu_tiny\ngrid:\n  reward.pose_scale: [1e-3]\n")
    assert sweep.load_sweep(one).members[0].overrides == {"reward.pose_scale": 1e-3}


@pytest.mark.parametrize("args, message", [
    (["diagnose", "--envs", "0"], "--envs must be >= 1, got 0"),
    (["diagnose", "--scales", "pose_scale=1,-1"], "reward.pose_scale must be >= 0, got -1.0"),
    (["diagnose", "--set", "reward.form=5"], "--set: reward.form must be one of 0, 1, 2, 3, got 5.0"),
    (["diagnose", "--set", "env.early_terminaton=false"], "--set: unknown key 'env.early_terminaton'"),
    (["sweep", "--config", "missing.yaml"], "missing.yaml: config file not found"),
    (["config", "--set", "trpo.gamma=2"], "--set: trpo.gamma must be in [0, 1], got 2.0"),
])
def test_other_inputs_are_refused_before_building(cli, args, message):
    out, _ = cli(*args)
    _refused(out, message)


def test_one_vanishing_reward_threshold():
    """diagnose's warning and the trainer's alarm fire on the same side of 1e-2 (the threshold
    reward.VANISHING_FRACTION derives): checked on behaviour, just below and just above it."""
    from mimic_mjx import diagnose, runner

    config = reward_lib.preset("deepmimic_paper")
    errors = {k: 1.0 for k in ("pose", "velocity", "end_effector", "root", "com", "joint_abs", "joint_vel_abs")}

    def diagnose_warns(fraction):
        policy = {"reward_fraction": fraction, "reward_mean": fraction, "reward_max_possible": 1.0,
                  "term_errors": errors}
        policies = {"reference": {**policy, "reward_fraction": 0.9, "reward_mean": 0.9}, "random": policy}
        return any(w.startswith("vanishing reward: the random policy") for w in diagnose.warnings_for(policies, config))

    def trainer_alarms(fraction):
        metrics = {"training/reward_fraction_of_max": fraction, "training/advantage_std": 0.5, "losses/kl": 0.008,
                   "trpo/accepted": 1.0, "training/nonfinite_episodes": 0.0}
        _, messages = runner.check_health(metrics, runner.Health())
        return any("reward vanishingly small" in m for m in messages)

    # The failed port's reward earns the random policy 2.6e-3 of its maximum on walk
    # (docs/guide.md, diagnose); deepmimic_paper's random policy earns 0.086.
    for fraction, fires in ((2.6e-3, True), (0.0099, True), (0.0101, False), (0.086, False)):
        assert diagnose_warns(fraction) is fires and trainer_alarms(fraction) is fires, fraction


def test_clip_lookup_of_a_typo_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMIC_MJX_CLIPS", str(tmp_path))
    monkeypatch.setenv("MIMIC_MJX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "humanoid3d_walk.txt").write_text("{}")

    def no_network(dest):
        raise AssertionError("a typo started the clip download")

    monkeypatch.setattr(clipstore, "download_wheel", no_network)
    with pytest.raises(MimicError, match="clips found: walk;"):
        clipstore.find_clip("moonwalk_xyz")
