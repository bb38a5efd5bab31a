"""Clip lookup by name or path; fetching is faked, so no test touches the network or ~/.cache."""

import os
import pathlib
import subprocess
import zipfile

import pytest

from mimic_mjx import clipstore
from mimic_mjx.errors import MimicError

pytestmark = pytest.mark.timeout(60)

REAL_DOWNLOAD = clipstore.download_wheel  # kept before the autouse fixture replaces it
WALK = b'{"Loop": "wrap", "Frames": [[0.0333, 0, 0.9, 0, 1, 0, 0, 0]]}'


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, no user clip folders, and a download that fails the test if called."""
    for var in ("MIMIC_MJX_CLIPS", "MIMIC_MJX_NO_FETCH", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MIMIC_MJX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(dest):
        raise AssertionError("a test tried to download the wheel")

    monkeypatch.setattr(clipstore, "download_wheel", no_network)
    monkeypatch.setattr(clipstore, "_failed_fetches", {})
    return tmp_path


def write_clips(folder, *names, data=WALK):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"humanoid3d_{name}.txt").write_bytes(data)
    return folder


def fake_wheel(path):
    """A zip laid out like the pybullet wheel: clips, a non-clip motion, a nested file."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("pybullet_data/data/motions/humanoid3d_walk.txt", WALK)
        wheel.writestr("pybullet_data/data/motions/humanoid3d_run.txt", b"run")
        wheel.writestr("pybullet_data/data/motions/laikago_walk.txt", b"dog")
        wheel.writestr("pybullet_data/data/motions/sub/humanoid3d_x.txt", b"nested")
        wheel.writestr("pybullet/__init__.py", b"")
    return path


def test_clip_name():
    assert clipstore.clip_name("a/b/humanoid3d_walk.txt") == "walk"
    assert clipstore.clip_name("humanoid3d_getup_facedown.txt") == "getup_facedown"
    assert clipstore.clip_name("mine.txt") == "mine"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    assert clipstore.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MIMIC_MJX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert clipstore.cache_dir() == tmp_path / "xdg" / "mimic_mjx" / "clips"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert clipstore.cache_dir() == tmp_path / "home" / ".cache" / "mimic_mjx" / "clips"


def test_explicit_paths(tmp_path, monkeypatch):
    clip = write_clips(tmp_path / "mine", "walk") / "humanoid3d_walk.txt"
    assert clipstore.find_clip(str(clip)) == clip
    monkeypatch.chdir(tmp_path / "mine")
    assert clipstore.find_clip("humanoid3d_walk.txt") == clip.relative_to(tmp_path / "mine")
    for missing in [str(tmp_path / "nope.txt"), "nope.txt", "dir/walk"]:
        with pytest.raises(MimicError, match=f"^{missing}: clip file not found$"):
            clipstore.find_clip(missing)


def test_names_search_env_folders_in_order_then_cache(tmp_path, monkeypatch):
    first = write_clips(tmp_path / "first", "walk")
    second = write_clips(tmp_path / "second", "walk", "run")
    cache = write_clips(tmp_path / "cache", "walk", "run", "kick")
    monkeypatch.setenv("MIMIC_MJX_CLIPS", os.pathsep.join([str(first), "", str(second)]))
    assert clipstore.find_clip("walk") == first / "humanoid3d_walk.txt"
    assert clipstore.find_clip("humanoid3d_run") == second / "humanoid3d_run.txt"
    assert clipstore.find_clip("kick") == cache / "humanoid3d_kick.txt"
    assert clipstore.list_clips() == [first / "humanoid3d_walk.txt", second / "humanoid3d_run.txt",
                                      cache / "humanoid3d_kick.txt"]


def test_fetch_extracts_only_clips_once(tmp_path, monkeypatch):
    calls = []

    def fake_download(dest):
        calls.append(dest)
        return fake_wheel(dest / "pybullet-3.2.7-cp311-cp311-manylinux.whl")

    monkeypatch.setattr(clipstore, "download_wheel", fake_download)
    cache = tmp_path / "cache"
    assert clipstore.find_clip("walk") == cache / "humanoid3d_walk.txt"
    assert (cache / "humanoid3d_walk.txt").read_bytes() == WALK
    assert sorted(p.name for p in cache.iterdir()) == ["humanoid3d_run.txt", "humanoid3d_walk.txt"]
    assert [p.name for p in cache.parent.iterdir()] == ["cache"]  # no staging folder left behind
    assert clipstore.find_clip("run") == cache / "humanoid3d_run.txt"
    assert [clipstore.clip_name(p) for p in clipstore.list_clips()] == ["run", "walk"]
    assert len(calls) == 1


def test_extract_into_existing_folder(tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    (cache / "notes.md").write_text("kept")
    got = clipstore.extract_clips(fake_wheel(tmp_path / "p.whl"), cache)
    assert got == [cache / "humanoid3d_run.txt", cache / "humanoid3d_walk.txt"]
    assert (cache / "notes.md").read_text() == "kept"


def test_fetch_failure_is_one_line_and_tried_once(tmp_path, monkeypatch):
    calls = []

    def offline(dest):
        calls.append(dest)
        raise RuntimeError("ERROR: Could not find a version that satisfies the requirement pybullet==3.2.7")

    monkeypatch.setattr(clipstore, "download_wheel", offline)
    monkeypatch.setenv("MIMIC_MJX_CLIPS", str(tmp_path / "empty"))
    for _ in range(2):
        with pytest.raises(MimicError) as err:
            clipstore.find_clip("walk")
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("clip 'walk' not found: looked for humanoid3d_walk.txt in ")
        assert f"{tmp_path / 'empty'}, {tmp_path / 'cache'}" in message
        assert "fetching them from PyPI failed (ERROR: Could not find a version" in message
        assert message.endswith("set MIMIC_MJX_CLIPS to a folder of humanoid3d_*.txt files or pass a clip file path")
    assert len(calls) == 1
    with pytest.raises(MimicError, match="^no clips found in .*fetching them from PyPI failed"):
        clipstore.list_clips()


def test_no_fetch_env_disables_download(monkeypatch):
    monkeypatch.setenv("MIMIC_MJX_NO_FETCH", "1")
    with pytest.raises(MimicError, match=r"fetching is disabled \(MIMIC_MJX_NO_FETCH is set\)"):
        clipstore.find_clip("walk")  # the autouse fixture's download would raise AssertionError


def test_unknown_name_with_populated_cache_does_not_fetch(tmp_path):
    write_clips(tmp_path / "cache", "walk", "run")
    with pytest.raises(MimicError) as err:
        clipstore.find_clip("wakl")
    assert "clips found: run, walk;" in str(err.value) and "fetching" not in str(err.value)


def test_a_name_deepmimic_does_not_ship_never_fetches(tmp_path, monkeypatch):
    """Clips in MIMIC_MJX_CLIPS, an empty cache: a typo fails at once (the autouse fixture's
    download raises AssertionError if called), naming the clips found and where it looked."""
    mine = write_clips(tmp_path / "mine", "walk", "run")
    monkeypatch.setenv("MIMIC_MJX_CLIPS", str(mine))
    with pytest.raises(MimicError) as err:
        clipstore.find_clip("moonwalk_xyz")
    assert str(err.value) == (
        f"clip 'moonwalk_xyz' not found: looked for humanoid3d_moonwalk_xyz.txt in {mine}, {tmp_path / 'cache'}; "
        "clips found: run, walk; set MIMIC_MJX_CLIPS to a folder of humanoid3d_*.txt files or pass a clip file path")
    assert not (tmp_path / "cache").exists()
    # No clips anywhere: still no fetch, and the message says which names a fetch could give.
    monkeypatch.delenv("MIMIC_MJX_CLIPS")
    with pytest.raises(MimicError, match=r"no clips found \(only DeepMimic's own clips can be fetched: backflip, "):
        clipstore.find_clip("moonwalk_xyz")


def test_deepmimic_names_are_the_shipped_clips():
    shipped = sorted(p.name for p in (pathlib.Path(__file__).resolve().parents[2] / "shared" / "deepmimic" / "motions")
                     .glob("humanoid3d_*.txt"))
    if not shipped:
        pytest.skip("../shared/deepmimic/motions is not here")
    assert [clipstore.clip_name(n) for n in shipped] == sorted(clipstore.DEEPMIMIC_CLIPS)


def test_download_wheel_runs_pip_and_reports_its_last_error(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, stderr="WARNING: retrying\nERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="^ERROR: No matching distribution$"):
        REAL_DOWNLOAD(tmp_path)
    assert seen["cmd"][1:] == ["-m", "pip", "download", "pybullet==3.2.7", "--no-deps", "--only-binary=:all:",
                               "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
                               "-d", str(tmp_path)]
