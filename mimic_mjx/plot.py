"""`mimic-mjx plot`: learning curves of one or more run directories, as one PNG.

Reads each run's `metrics.jsonl` (one JSON object per iteration, written by `train.py`) and
its `eval.jsonl` when there is one (the trainer's periodic evaluations) and draws a grid of
panels: per-step reward, episode length, evaluation normalised return (from the lines that
carry `eval/normalized_return`), policy entropy and each reward term (`reward/<term>`). The
panels appear twice: against env steps or TRPO updates (`--x`, top block) and against
wall-clock minutes (bottom block). Several runs overlay, labelled by their directory's name.

Host-side only: no JAX, no MuJoCo; matplotlib with the Agg backend.
"""

from __future__ import annotations

import json
import math
import pathlib

from mimic_mjx.errors import MimicError

STEPS_KEY = "training/env_steps"
WALL_KEY = "charts/wall_time_s"
EVAL_KEY = "eval/normalized_return"
RSI_EVAL_KEY = "eval_rsi/normalized_return"
# (metric key, panel title) of the panels every plot has, in order; the reward terms follow.
FIXED_PANELS = (
    ("training/reward_mean", "reward per step"),
    ("training/episode_length", "episode length (steps)"),
    (EVAL_KEY, "eval normalised return"),
    # A learned std that keeps shrinking is one of the late decay's suspects (docs/learning.md).
    ("losses/entropy", "policy entropy (nats)"),
)
ITERATION_KEY = "training/iteration"
# The first block's x axis: env steps, or TRPO updates (runs with different batches per update
# compare on updates when what they suffer from is per update, e.g. the std's shrinking).
X_AXES = {"steps": (STEPS_KEY, "env steps"), "updates": (ITERATION_KEY, "TRPO updates (iterations)")}
NO_EVAL_TEXT = "no evaluation (eval.jsonl)"
# DeepMimic's terms in the paper's order (Peng et al. 2018, Eq. 4); other terms follow them.
TERM_ORDER = ("reward/pose", "reward/velocity", "reward/end_effector", "reward/root", "reward/com")
COLUMNS = 4  # panels per row in each block
PANEL_INCHES = (4.0, 3.0)  # width, height of one panel
DEFAULT_DPI = 100


def read_metrics(run: str | pathlib.Path) -> list[dict]:
    """The JSON objects of `run/metrics.jsonl` (or of `run` itself if it is a .jsonl file).

    A missing or empty file, or a line that is not a JSON object, is a MimicError naming it.
    """
    path = pathlib.Path(run)
    if not path.name.endswith(".jsonl"):
        path = path / "metrics.jsonl"
    try:
        text = path.read_text()
    except OSError as e:
        raise MimicError(f"{path}: cannot read metrics ({e.strerror or e})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MimicError(f"{path}:{number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise MimicError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise MimicError(f"{path}: no metrics (the file is empty)")
    return rows


def read_evaluations(run: str | pathlib.Path) -> list[dict]:
    """The lines of `run/eval.jsonl` (the trainer's periodic evaluations, `eval_every`), if any."""
    path = pathlib.Path(run)
    path = (path.parent if path.name.endswith(".jsonl") else path) / "eval.jsonl"
    return read_metrics(path) if path.exists() and path.read_text().strip() else []


def run_label(run: str | pathlib.Path) -> str:
    """A run's legend label: its directory's name."""
    path = pathlib.Path(run).resolve()
    return path.parent.name if path.name.endswith(".jsonl") else path.name


def reward_terms(runs: list[list[dict]]) -> list[str]:
    """`reward/<term>` keys that are non-zero on some line of some run (all of them if none is),
    DeepMimic's first (TERM_ORDER). Terms a preset weights 0 (alive, action_penalty, ...) stay off the plot."""
    keys: dict[str, bool] = {}
    for rows in runs:
        for row in rows:
            for key, value in row.items():
                if key.startswith("reward/"):
                    keys[key] = keys.get(key, False) or (isinstance(value, (int, float)) and value != 0)
    shown = [k for k, v in keys.items() if v] or list(keys)
    return sorted(shown, key=lambda k: (TERM_ORDER.index(k) if k in TERM_ORDER else len(TERM_ORDER), k))


def series(rows: list[dict], x_key: str, y_key: str, x_scale: float = 1.0) -> tuple[list[float], list[float]]:
    """(x, y) of the lines that have both keys as numbers; x multiplied by `x_scale`."""
    xs, ys = [], []
    for row in rows:
        x, y = row.get(x_key), row.get(y_key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            xs.append(x * x_scale)
            ys.append(y)
    return xs, ys


def grid_shape(panels: int) -> tuple[int, int]:
    """(rows, columns) of the whole figure: two blocks (steps, wall time) of `panels` each."""
    cols = min(panels, COLUMNS)
    return 2 * math.ceil(panels / cols), cols


def plot_curves(x: list[float], curves: dict[str, list[float]], path: str | pathlib.Path,
                xlabel: str, ylabel: str, title: str) -> bool:
    """One panel of labelled curves over a shared x axis, as a PNG; False when matplotlib is
    absent (callers that only add a picture to other output go on without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, y in curves.items():
        ax.plot(x, y, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_runs(runs: list[str | pathlib.Path], out: str | pathlib.Path,
              dpi: int = DEFAULT_DPI, x: str = "steps") -> tuple[pathlib.Path, tuple[int, int]]:
    """Draw the curves of `runs` into the PNG `out`; returns (path, (width, height) in pixels).
    `x`: the first block's axis, one of X_AXES (the second block is always wall time)."""
    if not runs:
        raise MimicError("plot: give at least one run directory")
    if x not in X_AXES:
        raise MimicError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    data = [(run_label(r), read_metrics(r) + read_evaluations(r)) for r in runs]
    out = pathlib.Path(out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import EngFormatter
    except ImportError:
        raise MimicError("plot needs matplotlib: pip install matplotlib") from None

    panels = list(FIXED_PANELS) + [(k, k) for k in reward_terms([rows for _, rows in data])]
    rows, cols = grid_shape(len(panels))
    block_rows = rows // 2
    fig, axes = plt.subplots(rows, cols, figsize=(cols * PANEL_INCHES[0], rows * PANEL_INCHES[1]),
                             dpi=dpi, squeeze=False, layout="constrained")
    for block, (x_key, x_scale, x_label) in enumerate(
            ((X_AXES[x][0], 1.0, X_AXES[x][1]), (WALL_KEY, 1 / 60, "wall time (min)"))):
        for i in range(block_rows * cols):
            ax = axes[block * block_rows + i // cols][i % cols]
            if i >= len(panels):
                ax.set_visible(False)
                continue
            key, title = panels[i]
            drawn, rsi_drawn = 0, False
            for label, run_rows in data:
                xs, ys = series(run_rows, x_key, key, x_scale)
                line = None
                if xs:
                    # Evaluations are sparse (every few iterations): show each one.
                    line, = ax.plot(xs, ys, label=label, marker="o" if key == EVAL_KEY else None, markersize=3)
                    drawn += 1
                if key == EVAL_KEY:  # `eval_rsi_episodes`: the same evaluation from random clip times
                    xs, ys = series(run_rows, x_key, RSI_EVAL_KEY, x_scale)
                    if xs:
                        ax.plot(xs, ys, label=f"{label} (--rsi)", linestyle="--", marker="x", markersize=3,
                                color=line.get_color() if line is not None else None)
                        rsi_drawn = True
            if not drawn:
                text = NO_EVAL_TEXT if key == EVAL_KEY else f"no {key} in metrics.jsonl"
                ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
                ax.set_xticks([])
                ax.set_yticks([])
            elif x_key == STEPS_KEY:
                ax.xaxis.set_major_formatter(EngFormatter())  # 200k, 1M: raw step counts overlap
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(x_label, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if i == 0 or rsi_drawn:
                ax.legend(fontsize=8)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, format="png")
    except OSError as e:
        raise MimicError(f"{out}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    from PIL import Image  # matplotlib depends on Pillow

    with Image.open(out) as image:
        return out, image.size


def add_arguments(parser) -> None:
    """`mimic-mjx plot` arguments."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (each with metrics.jsonl)")
    parser.add_argument("--out", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI, help=f"pixels per inch (default {DEFAULT_DPI})")
    parser.add_argument("--x", default="steps", choices=tuple(X_AXES),
                        help="x axis of the first block: env steps or TRPO updates (default: steps)")


def run_cli(args) -> int:
    """Run `mimic-mjx plot`; MimicError propagates to the CLI's one-line handler."""
    if args.dpi < 1:
        raise MimicError(f"--dpi must be >= 1, got {args.dpi}")
    path, (width, height) = plot_runs(args.runs, args.out, args.dpi, x=args.x)
    print(f"wrote {path} ({width} x {height} px)")
    return 0
