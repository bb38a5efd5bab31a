"""The shipped policy library, scored: one command, one table.

`mimic-mjx library` evaluates every policy shipped inside the package
(`mimic_mjx/policies/<clip>/`) on `mimic-mjx eval`'s yardstick, from clip time 0 and from
random clip times (`--rsi`), and writes the table as JSON and as markdown beside DeepMimic's
own normalised returns (Peng et al. 2018, Table 2), so a new policy or a new recipe shows
where it stands against the paper. `--grid PNG` adds one image of every policy's filmstrip.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import numpy as np

from mimic_mjx import compiled
from mimic_mjx import evaluate as eval_lib
from mimic_mjx import policy as policy_lib
from mimic_mjx.errors import MimicError

# DeepMimic's Table 2: normalised return of each humanoid skill (about a day on 16 CPU
# workers, 50-90M samples each).
DEEPMIMIC_TABLE2 = {
    "walk": 0.985, "run": 0.951, "jump": 0.947, "backflip": 0.729, "spinkick": 0.748, "cartwheel": 0.804,
    "crawl": 0.932, "dance_a": 0.863, "dance_b": 0.822, "kick": 0.854, "punch": 0.812, "roll": 0.735,
    "spin": 0.664, "getup_facedown": 0.885, "getup_faceup": 0.838,
}
COLUMNS = ("clip", "return_t0", "return_rsi", "fall_rate_t0", "fall_rate_rsi", "env_steps", "deepmimic",
           "fraction_of_deepmimic", "code_t0", "code_rsi")


def score(names: list[str], episodes: int, seed: int = 0, progress=print) -> list[dict]:
    """One row per shipped policy: eval from t = 0 and with RSI, `episodes` episodes each."""
    if episodes < 1:
        raise MimicError(f"--episodes must be >= 1, got {episodes}")
    rows = []
    for name in names:
        start = time.perf_counter()
        t0 = eval_lib.evaluate(name, episodes=episodes, seed=seed)
        rsi = eval_lib.evaluate(name, episodes=episodes, seed=seed, rsi=True)
        motion = policy_lib.load(name).config.env.motion
        paper = DEEPMIMIC_TABLE2.get(pathlib.Path(motion).stem.removeprefix("humanoid3d_"))
        ours = 0.5 * (t0["normalized_return"] + rsi["normalized_return"])
        rows.append({"clip": name, "motion": motion, "return_t0": t0["normalized_return"],
                     "return_rsi": rsi["normalized_return"], "fall_rate_t0": t0["fall_rate"],
                     "fall_rate_rsi": rsi["fall_rate"], "env_steps": t0["env_steps"], "iteration": t0["iteration"],
                     "deepmimic": paper, "fraction_of_deepmimic": ours / paper if paper else None,
                     "code_t0": t0["normalized_return_code"], "code_rsi": rsi["normalized_return_code"],
                     "episodes": episodes})
        progress(f"{name}: {t0['normalized_return']:.3f} from t = 0, {rsi['normalized_return']:.3f} with RSI "
                 f"({time.perf_counter() - start:.0f} s)")
    return rows


def markdown(rows: list[dict]) -> str:
    """The library table; `fraction_of_deepmimic` is the mean of both returns over Table 2's.
    The last column scores the same episodes with DeepMimic's released reward (evaluate.CODE_PRESET)."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| clip | return, t = 0 | return, RSI | falls, t = 0 | falls, RSI | env steps | DeepMimic | of DeepMimic "
             "| on DeepMimic's code reward, t = 0 / RSI |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['return_t0']:.3f} | {r['return_rsi']:.3f} | {r['fall_rate_t0']:.0%} | "
                     f"{r['fall_rate_rsi']:.0%} | {r['env_steps'] / 1e6:.1f}M | {num(r['deepmimic'], '.3f')} | "
                     f"{num(r['fraction_of_deepmimic'], '.0%')} | {num(r.get('code_t0'), '.3f')} / "
                     f"{num(r.get('code_rsi'), '.3f')} |")
    return "\n".join(lines) + "\n"


def grid(names: list[str], path: str | pathlib.Path, *, frames: int = 6, width: int = 240, height: int = 180,
         progress=print) -> tuple[int, int]:
    """One image of the whole library: each policy's filmstrip (`mimic-mjx render`'s: the
    policy beside its reference ghost, from clip time 0) as one row, in `names`' order.
    A looping clip is shown over 5 s, any other over its length. Returns (width, height)."""
    from PIL import Image

    from mimic_mjx import render as render_lib

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            bundle = policy_lib.load(name)
            env = eval_lib.eval_env(bundle.config)
            seconds = 5.0 if env.clip.loop else float(env.clip_arrays.duration)
            fps = max(10.0, np.ceil(frames / seconds))
            result = render_lib.render(env, policy_lib.act(bundle, env), pathlib.Path(tmp) / f"{name}.gif",
                                       seconds=seconds, fps=fps, width=width, height=height,
                                       filmstrip=pathlib.Path(tmp) / f"{name}.png", filmstrip_count=frames,
                                       label=name, progress=lambda line, name=name: progress(f"{name}: {line}"))
            rows.append(np.asarray(Image.open(result.filmstrip).convert("RGB")))
    tiles = np.concatenate(rows, axis=0)  # one clip per row, time left to right
    Image.fromarray(tiles).save(path)
    return tiles.shape[1], tiles.shape[0]


def add_arguments(parser) -> None:
    parser.add_argument("clips", nargs="*", help="shipped policies to score (default: all of them)")
    parser.add_argument("--episodes", type=int, default=eval_lib.DEFAULT_EPISODES,
                        help=f"episodes from t = 0 and again with RSI, per policy (default {eval_lib.DEFAULT_EPISODES})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write library.json and library.md into this folder")
    parser.add_argument("--grid", default=None, metavar="PNG",
                        help="also write one image of every scored policy's filmstrip, a row each")


def run_cli(args) -> int:
    shipped = policy_lib.shipped()
    names = args.clips or shipped
    unknown = [n for n in names if n not in shipped]
    if unknown:
        raise MimicError(f"not a shipped policy: {', '.join(unknown)} (shipped: {', '.join(shipped) or 'none'})")
    if args.grid:  # refuse an unwritable path or a machine without GL before the long work
        from mimic_mjx import render as render_lib

        render_lib.check_writable(pathlib.Path(args.grid), "--grid")
        render_lib.gl_backend()
    compiled.enable_compile_cache()
    rows = score(names, args.episodes, args.seed, progress=lambda line: print(line, flush=True))
    table = markdown(rows)
    print(table, end="")
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "library.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "library.md").write_text(table)
    if args.grid:
        width, height = grid(names, args.grid, progress=lambda line: print(line, flush=True))
        print(f"wrote {args.grid} ({len(names)} clips, {width} x {height} px)")
    return 0
