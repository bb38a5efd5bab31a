"""What the host loop reports after each iteration, through `progress_fn(step, rows)` callbacks.

As Brax's trainers call `progress_fn(num_steps, metrics)`, the host loop (runner.host_loop)
calls every reporter with the iteration just finished and its metrics: `rows` holds one dict
per member (one dict for a plain run), each with `training/iteration`, `training/env_steps`
and the iteration's metrics (a sweep's rows also carry `member`). The progress line,
`metrics.jsonl` and the optional TensorBoard event files are three such reporters; a user's
own callback (`runner.train(..., progress_fns=[fn])`) sees exactly what they see. A reporter
may also have `close()`, which the host loop calls when it stops (the TensorBoard writer
writes what it still holds then).
"""

from __future__ import annotations

import json
import numbers
import pathlib
from typing import Any, Callable

from mimic_mjx.errors import MimicError

ProgressFn = Callable[[int, list], None]  # (iteration, rows) -> None


def progress_line(m: dict, iterations: int) -> str:
    """The one-line summary of a run's iteration."""
    accepted = "ok" if m["trpo/accepted"] > 0.5 else "REJECTED"
    return (f"iter {m['training/iteration']:>5}/{iterations}  steps {m['training/env_steps']:>10,}  "
            f"{m['charts/SPS']:8,.0f} steps/s  reward {m['training/reward_mean']:.4f} "
            f"({100 * m['training/reward_fraction_of_max']:.1f}% of max)  ep len {m['training/episode_length']:6.1f}  "
            f"kl {m['losses/kl']:.2e}  line search {accepted}/{m['trpo/backtracks']:.0f} backtracks")


def sweep_line(rows: list, iterations: int) -> str:
    """The one-line summary of a sweep's iteration: its best and worst member."""
    r = [row["training/reward_fraction_of_max"] for row in rows]
    first = rows[0]
    return (f"iter {first['training/iteration']:>4}/{iterations} steps/member {first['training/env_steps']:>9,} "
            f"{first['charts/iteration_s']:6.2f} s/iter  reward fraction best {max(r):.3f} worst {min(r):.3f}")


def printer(progress: Callable[[str], Any], iterations: int, sweep: bool = False) -> ProgressFn:
    """Prints `progress_line` of a run's row, or `sweep_line` of a sweep's rows."""
    def report(step: int, rows: list) -> None:
        progress(sweep_line(rows, iterations) if sweep else progress_line(rows[0], iterations))
    return report


def jsonl_writer(path: pathlib.Path) -> ProgressFn:
    """Appends each row to `path` as one JSON object per line (`metrics.jsonl`)."""
    def report(step: int, rows: list) -> None:
        with path.open("a") as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows))
    return report


def check_tensorboard() -> None:
    """One line, before any long work, when `--tensorboard` cannot write."""
    try:
        import tensorboardX  # noqa: F401  (only whether it imports)
    except ImportError:
        raise MimicError("--tensorboard needs tensorboardX: pip install 'mimic_mjx[tensorboard]'") from None


def tensorboard_writer(log_dir: str | pathlib.Path, members: int = 0) -> ProgressFn:
    """Writes every numeric metric as a TensorBoard scalar at x = `training/env_steps` (the
    x the curves in docs/ use). A sweep's members each get a folder `member_<i>`, so
    TensorBoard overlays them as runs. Needs the `tensorboard` extra (tensorboardX)."""
    check_tensorboard()
    from tensorboardX import SummaryWriter

    log_dir = pathlib.Path(log_dir)
    # tensorboardX queues events for a writer thread that writes them every flush_secs;
    # 10 s keeps a live TensorBoard current, and close() writes the rest.
    folders = [log_dir] if not members else [log_dir / f"member_{i}" for i in range(members)]
    writers = [SummaryWriter(str(folder), flush_secs=10) for folder in folders]

    def report(step: int, rows: list) -> None:
        for writer, row in zip(writers, rows):
            x = int(row["training/env_steps"])
            for key, value in row.items():
                if isinstance(value, numbers.Real) and key not in ("member", "training/env_steps"):
                    writer.add_scalar(key, float(value), x)

    def close() -> None:
        for writer in writers:
            writer.close()

    report.close = close
    return report
