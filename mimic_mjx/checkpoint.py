"""Training checkpoints: whole `TrainState` pytrees saved with orbax-checkpoint.

A run directory keeps them under `checkpoints/<iteration>/`. Restoring needs a template of
the state (`jax.eval_shape` of `train.init` under the run's config); a checkpoint whose
tree or shapes differ from the template (another network size, batch, clip) is a
`MimicError` naming the directory and the first mismatching entry, not an orbax traceback.

A damaged checkpoint (unreadable data, or no commit marker: a write that never finished)
never costs a run: `restore_newest` falls back to the newest one that restores, says which
step was damaged and why, and sets the damaged one aside under `checkpoints_damaged/`, where
no later save can overwrite it.
"""

import contextlib
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mimic_mjx.errors import MimicError

SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "checkpoints_damaged"
# orbax writes this file last into every finished step directory (and its item directory).
COMMIT_MARKER = "commit_success.txt"


class ConfigMismatch(MimicError):
    """The checkpoint is intact but was written under another model or config."""


def _manager(run_dir: str | pathlib.Path, keep: int | None = None, create: bool = True) -> ocp.CheckpointManager:
    directory = pathlib.Path(run_dir).resolve() / SUBDIR
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=create,
        # Synchronous saves: the training loop's next iteration reads the same buffers, and a
        # save costs well under a second for the state sizes here.
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(directory, options=options, item_handlers=ocp.StandardCheckpointHandler())


@contextlib.contextmanager
def _quiet():
    """orbax logs every save and restore at INFO through absl; keep the progress output clean."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def save(run_dir: str | pathlib.Path, step: int, state: Any, keep: int = 3) -> None:
    """Write `state` as checkpoint `step` under `run_dir/checkpoints`, keeping the newest `keep`."""
    with _quiet():
        manager = _manager(run_dir, keep)
        manager.save(step, args=ocp.args.StandardSave(_nest(_non_empty(state))), force=True)
        manager.wait_until_finished()
        manager.close()


def latest_step(run_dir: str | pathlib.Path) -> int | None:
    """The newest checkpoint's step in `run_dir`, or None when there is none."""
    steps = all_steps(run_dir)
    return steps[0] if steps else None


def _key_name(key) -> str:
    for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _named_leaves(tree: Any) -> dict[tuple[str, ...], Any]:
    """`{('env_state', 'data', 'qpos'): leaf, ...}` for every leaf of `tree`."""
    return {tuple(_key_name(k) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _nest(named: dict[tuple[str, ...], Any]) -> dict:
    """Nested plain dicts from path-named leaves: the form orbax stores."""
    out: dict = {}
    for path, leaf in named.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = leaf
    return out


def _non_empty(tree: Any) -> dict[tuple[str, ...], Any]:
    """The leaves a checkpoint holds, by name, in the tree's order. orbax cannot save
    zero-size arrays (mjx.Data has several, e.g. `act` for a model without activations);
    their shape alone describes them, so restore rebuilds them from the template."""
    return {path: leaf for path, leaf in _named_leaves(tree).items() if np.size(leaf) > 0}


def _mismatch(saved: Any, want: dict[tuple[str, ...], Any], unread=frozenset()) -> str | None:
    """Words for the first difference between saved metadata and the wanted leaves, or None;
    saved entries in `unread` are allowed to be left out."""
    have = {path: leaf for path, leaf in _named_leaves(saved).items() if path not in unread}
    for path, leaf in want.items():
        name = "/".join(path)
        if path not in have:
            return f"it has no entry '{name}'"
        have_shape = tuple(getattr(have[path], "shape", ()) or ())
        if have_shape != tuple(leaf.shape):
            return f"'{name}' has shape {have_shape}, this config needs {tuple(leaf.shape)}"
        have_dtype = getattr(have[path], "dtype", leaf.dtype)
        if np.dtype(have_dtype) != np.dtype(leaf.dtype):
            return f"'{name}' has dtype {np.dtype(have_dtype)}, this config needs {np.dtype(leaf.dtype)}"
    extra = sorted(set(have) - set(want))
    if extra:
        return f"it has an entry '{'/'.join(extra[0])}' this config does not"
    return None


def restore(run_dir: str | pathlib.Path, template: Any, step: int | None = None,
            fillable: tuple[tuple[str, ...], ...] = (), report=None) -> tuple[Any, int]:
    """Restore checkpoint `step` (default: the latest) into the structure of `template`.

    `template` is a pytree of arrays or `jax.ShapeDtypeStruct`s (e.g. `jax.eval_shape` of
    `train.init`). Returns `(state, step)`. Raises MimicError when there is no checkpoint or
    it is unreadable, and ConfigMismatch when it does not fit the template. Under the path
    prefixes in `fillable`, parts the caller sets after restoring (train's resume takes the
    TRPO and reward leaves from its config; the next env step rewrites its outcome), the
    checkpoint may have an older layout: entries the template has and the checkpoint lacks
    are zeros, and entries the checkpoint has and the template lacks (a field renamed or
    regrouped since) are not read. `report` hears of either in one line.
    """
    directory = pathlib.Path(run_dir).resolve() / SUBDIR
    step = latest_step(run_dir) if step is None else step
    if step is None:
        raise MimicError(f"{directory}: no checkpoint to restore")
    # Restored onto one device whatever layout wrote it: a run saved split over 2 devices
    # resumes on 1 or 4, and the trainer places the state on its own mesh afterwards.
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=one), template)
    wanted = _non_empty(abstract)
    with _quiet():
        manager = _manager(run_dir, create=False)
        try:
            metadata = manager.item_metadata(step)
            have = _named_leaves(metadata) if metadata is not None else {}
            if not have:  # orbax answers None when the item's metadata file is gone
                raise MimicError(f"{directory}: cannot restore checkpoint {step}: its metadata is missing")
            settable = lambda path: any(path[:len(p)] == p for p in fillable)  # noqa: E731
            added = [path for path in wanted if path not in have and settable(path)]
            unread = frozenset(path for path in have if path not in wanted and settable(path))
            wanted = {path: leaf for path, leaf in wanted.items() if path not in added}
            problem = _mismatch(metadata, wanted, unread)
            if problem is not None:
                raise ConfigMismatch(
                    f"{directory}: checkpoint {step} was written by a different model or config ({problem}); "
                    "resume with the run's own config.yaml or start a new --out directory"
                )
            # orbax restores the saved tree whole: the `unread` entries are read as they are and dropped.
            item = {**wanted, **{path: jax.ShapeDtypeStruct(tuple(have[path].shape), have[path].dtype, sharding=one)
                                 for path in unread}}
            restored = _named_leaves(manager.restore(step, args=ocp.args.StandardRestore(_nest(item))))
        except MimicError:
            raise
        # What orbax and tensorstore raise on unreadable or truncated files (tensorstore's
        # OUT_OF_RANGE and DATA_LOSS arrive as ValueError); anything else is not damage.
        except (ValueError, KeyError, TypeError, OSError, EOFError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MimicError(f"{directory}: cannot restore checkpoint {step}: {first}") from None
        finally:
            manager.close()
    if (added or unread) and report is not None:
        def names(paths):
            paths = sorted(paths)
            return ", ".join("/".join(path) for path in paths[:3]) + (", ..." if len(paths) > 3 else "")

        words = []
        if added:
            words.append(f"predates {len(added)} field(s) of this code ({names(added)}); they start from this "
                         "config's values")
        if unread:
            words.append(f"has {len(unread)} entr{'y' if len(unread) == 1 else 'ies'} in an older layout "
                         f"({names(unread)}), not read: set from the config or rewritten by the next step")
        report(f"checkpoint {step} " + "; it ".join(words))
    # Through host memory: orbax hands back arrays committed to a device, and jit lowers
    # committed inputs with sharding annotations, i.e. a different program from the one a
    # fresh state compiles to (a persistent-cache miss, minutes on CPU).
    leaves = [jnp.asarray(np.asarray(restored[path])) if path in restored else jnp.zeros(leaf.shape, leaf.dtype)
              for path, leaf in _named_leaves(abstract).items()]
    state = jax.tree.unflatten(jax.tree.structure(abstract), leaves)
    return state, step


def all_steps(run_dir: str | pathlib.Path) -> list[int]:
    """Every checkpoint step in `run_dir`, newest first."""
    directory = pathlib.Path(run_dir) / SUBDIR
    if not directory.is_dir():
        return []
    with _quiet():
        manager = _manager(run_dir, create=False)
        steps = sorted(manager.all_steps(), reverse=True)
        manager.close()
    return steps


def _set_aside(run_dir: pathlib.Path, step: int) -> pathlib.Path:
    """Move `checkpoints/<step>` to `checkpoints_damaged/<step>` (`<step>-1`, ... if taken)."""
    target_dir = run_dir / DAMAGED_SUBDIR
    target_dir.mkdir(exist_ok=True)
    target, n = target_dir / str(step), 0
    while target.exists():
        n += 1
        target = target_dir / f"{step}-{n}"
    (run_dir / SUBDIR / str(step)).rename(target)
    return target


def restore_newest(run_dir: str | pathlib.Path, template: Any, report=print,
                   set_aside: bool = False, fillable: tuple[tuple[str, ...], ...] = ()) -> tuple[Any, int]:
    """Restore the newest checkpoint of `run_dir` that restores, as `restore` does.

    Each newer one that does not (its data unreadable, or no commit marker) is reported in
    one line through `report`: which step, why (the first line of the error), and which step
    is used instead; with `set_aside` (resume, not eval) it is moved to `checkpoints_damaged/`.
    A checkpoint written under another config is not damage: that `ConfigMismatch` is raised
    at once. When none restores: a MimicError naming the run directory and the steps tried.
    `fillable`: as `restore`'s.
    """
    run_dir = pathlib.Path(run_dir)
    steps = all_steps(run_dir)
    if not steps:
        raise MimicError(f"{run_dir.resolve() / SUBDIR}: no checkpoint to restore")
    damaged = []
    for step in steps:
        try:
            if not (run_dir / SUBDIR / str(step) / COMMIT_MARKER).exists():
                raise MimicError(f"no {COMMIT_MARKER}: its write never finished")
            state, step = restore(run_dir, template, step, fillable=fillable, report=report)
        except ConfigMismatch:
            raise
        except MimicError as err:
            why = str(err).split(f"cannot restore checkpoint {step}: ")[-1]
            where = f"; set aside to {_set_aside(run_dir, step)}" if set_aside else ""
            damaged.append(step)
            report(f"checkpoint {step} of {run_dir} is damaged ({why}){where}")
            continue
        if damaged:
            report(f"using checkpoint {step} instead of {damaged[0]}")
        return state, step
    raise MimicError(f"{run_dir}: no checkpoint restores (tried steps {', '.join(map(str, steps))}); "
                     "start a new run or a new --out directory")


def save_tree(path: str | pathlib.Path, tree: Any) -> None:
    """Write a small pytree of arrays (an exported policy) as one msgpack file.

    One file, not an orbax folder, so a policy ships as package data of a few hundred KB.
    """
    from flax import serialization

    named = {"/".join(k): np.asarray(v) for k, v in _named_leaves(tree).items()}
    pathlib.Path(path).write_bytes(serialization.msgpack_serialize(named))


def load_tree(path: str | pathlib.Path, template: Any) -> Any:
    """Read `save_tree`'s file into the structure of `template`; MimicError if it does not fit."""
    from flax import serialization

    path = pathlib.Path(path)
    try:
        named = serialization.msgpack_restore(path.read_bytes())
    except (OSError, ValueError, TypeError) as err:
        raise MimicError(f"{path}: not a policy file ({type(err).__name__})") from None
    if not isinstance(named, dict):
        raise MimicError(f"{path}: not a policy file")
    have = {tuple(k.split("/")): v for k, v in named.items()}
    want = _named_leaves(jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), template))
    problem = _mismatch(_nest(have), want)
    if problem is not None:
        raise MimicError(f"{path}: does not fit this model and observation ({problem})")
    leaves = [jnp.asarray(have[p]) for p in want]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)
