"""Finding DeepMimic humanoid3d clip files by name or path, fetching them once if needed.

A name (`walk`, or `humanoid3d_walk`) resolves to `humanoid3d_<name>.txt`, searched in:
1. each folder in `MIMIC_MJX_CLIPS` (os.pathsep-separated), first hit wins;
2. the per-user cache: `$MIMIC_MJX_CACHE`, else `$XDG_CACHE_HOME/mimic_mjx/clips`, else
   `~/.cache/mimic_mjx/clips`;
3. if the name is one of DeepMimic's own 15 clips (`DEEPMIMIC_CLIPS`) and the cache holds no
   clips yet, the clips are fetched into it once and looked up again; any other name fails
   at once, naming the clips found and where it looked. `MIMIC_MJX_NO_FETCH=1` turns
   fetching off.

Fetching: the 15 DeepMimic clips ship byte-identical in `pybullet_data/data/motions/` of the
`pybullet==3.2.7` wheel on PyPI (see shared/deepmimic/README.md), so pip downloads that wheel
and only those files are extracted. `download_wheel` is a module attribute so tests can
replace it and never touch the network.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from mimic_mjx.errors import MimicError

PREFIX = "humanoid3d_"
# The humanoid3d clips DeepMimic ships (data/motions/, the same 15 files as pybullet_data's
# motions/ folder): the only names a fetch can provide.
DEEPMIMIC_CLIPS = ("backflip", "cartwheel", "crawl", "dance_a", "dance_b", "getup_facedown", "getup_faceup",
                   "jump", "kick", "punch", "roll", "run", "spin", "spinkick", "walk")
PYBULLET_VERSION = "3.2.7"
WHEEL_MOTIONS = "pybullet_data/data/motions/"

# Fetch failures already seen in this process, by cache folder: an offline machine should pay
# pip's network timeouts once, not on every lookup.
_failed_fetches: dict[pathlib.Path, str] = {}


def clip_name(path: str | os.PathLike) -> str:
    """`.../humanoid3d_walk.txt` -> `walk` (a file without the prefix keeps its stem)."""
    stem = pathlib.Path(path).stem
    return stem[len(PREFIX):] if stem.startswith(PREFIX) else stem


def clip_dirs() -> list[pathlib.Path]:
    """The folders named in `MIMIC_MJX_CLIPS`, in order."""
    entries = os.environ.get("MIMIC_MJX_CLIPS", "").split(os.pathsep)
    return [pathlib.Path(p).expanduser() for p in entries if p]


def cache_dir() -> pathlib.Path:
    """The per-user clip cache (it need not exist yet)."""
    if os.environ.get("MIMIC_MJX_CACHE"):
        return pathlib.Path(os.environ["MIMIC_MJX_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return root / "mimic_mjx" / "clips"


def find_clip(name_or_path: str) -> pathlib.Path:
    """The clip file for a DeepMimic name (`walk`, `humanoid3d_walk`) or a path to a clip."""
    given = name_or_path.strip()
    path = pathlib.Path(given).expanduser()
    if path.is_file():
        return path
    if not given or os.sep in given or (os.altsep and os.altsep in given) or given.endswith(".txt"):
        raise MimicError(f"{given or repr(given)}: clip file not found")
    name = clip_name(given)
    file_name = f"{PREFIX}{name}.txt"
    searched = [*clip_dirs(), cache_dir()]
    found = _first_file(searched, file_name)
    fetch_note = ""
    if found is None and name in DEEPMIMIC_CLIPS and not _clips_in(cache_dir()):
        fetch_note = _fetch_if_allowed()
        found = _first_file(searched, file_name)
    if found is not None:
        return found
    known = sorted({clip_name(p) for d in searched for p in _clips_in(d)})
    known_note = f"; clips found: {', '.join(known)}" if known else (
        "; no clips found" + ("" if name in DEEPMIMIC_CLIPS else
                              f" (only DeepMimic's own clips can be fetched: {', '.join(DEEPMIMIC_CLIPS)})"))
    raise MimicError(
        f"clip '{given}' not found: looked for {file_name} in {_listing(searched)}{fetch_note}"
        f"{known_note}; set MIMIC_MJX_CLIPS to a folder of humanoid3d_*.txt files or pass a "
        "clip file path")


def list_clips() -> list[pathlib.Path]:
    """One file per distinct clip name, from MIMIC_MJX_CLIPS folders then the cache.

    Fetches into the cache first when no clip is found anywhere; raises MimicError when there
    are still none (the message says where it looked and how to provide clips).
    """
    searched = [*clip_dirs(), cache_dir()]
    if not any(_clips_in(d) for d in searched):
        fetch_note = _fetch_if_allowed()
        if not _clips_in(cache_dir()):
            raise MimicError(
                f"no clips found in {_listing(searched)}{fetch_note}; "
                "set MIMIC_MJX_CLIPS to a folder of humanoid3d_*.txt files")
    by_name: dict[str, pathlib.Path] = {}
    for folder in searched:
        for path in _clips_in(folder):
            by_name.setdefault(clip_name(path), path)
    return list(by_name.values())


def download_wheel(dest: pathlib.Path) -> pathlib.Path:
    """Download the pybullet wheel into `dest` with pip; returns the wheel's path.

    stdout is left to the terminal so pip's progress bar shows; stderr is kept so a failure
    can name pip's last error line. Raises RuntimeError on failure.
    """
    # Any platform/Python tag holds the same data files; these name a wheel that exists.
    cmd = [sys.executable, "-m", "pip", "download", f"pybullet=={PYBULLET_VERSION}", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
           "-d", str(dest)]
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    wheels = sorted(dest.glob("pybullet-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"pip exited with status {proc.returncode}")
    return wheels[0]


def extract_clips(wheel: pathlib.Path, cache: pathlib.Path) -> list[pathlib.Path]:
    """Copy the wheel's `pybullet_data/data/motions/humanoid3d_*.txt` files into `cache`.

    Files are written to a temporary folder beside the cache and then renamed into place, so
    an interrupted fetch never leaves a half-written clip that later runs would trust.
    """
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(WHEEL_MOTIONS)
                   and "/" not in m[len(WHEEL_MOTIONS):] and _is_clip_name(m[len(WHEEL_MOTIONS):])]
        if not members:
            raise RuntimeError(f"{wheel.name} has no {WHEEL_MOTIONS}{PREFIX}*.txt files")
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".clips-", dir=cache.parent))
        try:
            for member in members:
                (staging / member[len(WHEEL_MOTIONS):]).write_bytes(archive.read(member))
            if not cache.exists():
                staging.rename(cache)  # the whole set appears at once
            else:  # an existing (perhaps shared) folder: replace file by file, each atomically
                for item in staging.iterdir():
                    os.replace(item, cache / item.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(cache / m[len(WHEEL_MOTIONS):] for m in members)


def fetch_clips(cache: pathlib.Path | None = None) -> list[pathlib.Path]:
    """Download the pybullet wheel (~100 MB, once) and extract the 15 clips into the cache.

    Raises RuntimeError (or OSError) with a one-line reason on failure.
    """
    cache = cache_dir() if cache is None else cache
    print(f"mimic_mjx: fetching the DeepMimic clips: downloading the pybullet=={PYBULLET_VERSION} "
          f"wheel (~100 MB) from PyPI to extract humanoid3d_*.txt into {cache} "
          "(set MIMIC_MJX_CLIPS to use your own clips)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mimic_mjx_wheel_") as tmp:
        wheel = download_wheel(pathlib.Path(tmp))  # looked up at call time: tests replace it
        return extract_clips(wheel, cache)


def _fetch_if_allowed() -> str:
    """Fetch into the cache unless disabled; returns a note for a not-found message."""
    if os.environ.get("MIMIC_MJX_NO_FETCH", "") not in ("", "0"):
        return "; fetching is disabled (MIMIC_MJX_NO_FETCH is set)"
    cache = cache_dir()
    if cache not in _failed_fetches:
        try:
            fetch_clips(cache)
            return ""
        except (OSError, RuntimeError, zipfile.BadZipFile) as err:
            _failed_fetches[cache] = " ".join(str(err).split()) or type(err).__name__
    return f"; fetching them from PyPI failed ({_failed_fetches[cache]})"


def _is_clip_name(file_name: str) -> bool:
    return file_name.startswith(PREFIX) and file_name.endswith(".txt")


def _clips_in(folder: pathlib.Path) -> list[pathlib.Path]:
    """The clip files directly in `folder`, sorted; none if it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_clip_name(p.name))


def _first_file(folders: list[pathlib.Path], file_name: str) -> pathlib.Path | None:
    return next((d / file_name for d in folders if (d / file_name).is_file()), None)


def _listing(folders: list[pathlib.Path]) -> str:
    return ", ".join(str(d) for d in folders)
