"""The `mimic-mjx` command line: a thin shell over the library. User errors print one line."""

import argparse
import json
import sys

from mimic_mjx.errors import MimicError


def _cmd_clips(args) -> int:
    from mimic_mjx import clipstore, motion

    rows = []
    for path in clipstore.list_clips():
        clip = motion.load_clip(str(path))
        row = {
            "name": clip.name,
            "path": str(clip.path),
            "frames": clip.num_frames,
            "duration_s": round(clip.duration, 4),
            "loop": clip.loop,
        }
        if args.check:
            row["check"] = motion.check_clip(clip)
        rows.append(row)
        if not args.json:
            print(_clip_line(row), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    failed = [r["name"] for r in rows if args.check and not r["check"]["ok"]]
    if failed:
        print(f"error: conversion check failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _clip_line(row: dict) -> str:
    line = f"{row['name']:<15} {row['frames']:>4} frames {row['duration_s']:6.2f} s  {'loop' if row['loop'] else 'once'}"
    check = row.get("check")
    if check is None:
        return f"{line}  {row['path']}"
    ranges = check["joints_out_of_range"]
    worst = max(ranges, key=lambda r: max(r["range"][0] - r["value"], r["value"] - r["range"][1]), default=None)
    range_text = (
        f"{sum(r['frames'] for r in ranges)} joint-frames out of range (worst {worst['joint']} "
        f"{worst['value']:+.2f} at frame {worst['worst_frame']}, range {worst['range'][0]:g}..{worst['range'][1]:g})"
        if worst
        else "all joints in range"
    )
    return (
        f"{'ok  ' if check['ok'] else 'FAIL'} {line}  deepest: frame {check['deepest_frame']} "
        f"{check['deepest_body']} {100 * check['depth_m']:.1f} cm under the floor; {range_text}"
    )


def diagnose_config(args):
    """`mimic-mjx diagnose`'s training config and reward name from parsed `args`: the same
    loader, checks and default preset as `train` (without --config, the one `train` would
    pick), then the flags as overrides; every input is refused here, before the environment
    is built."""
    from mimic_mjx import reward as reward_lib
    from mimic_mjx import runconfig

    reward = args.reward
    if reward is not None:
        reward_lib.preset(reward)  # "unknown reward preset ..." names the flag's value
    overrides = ([f"reward.preset={reward}"] if reward else []) + (
        [f"env.motion={args.motion}"] if args.motion else []) + _diagnose_overrides(args.set or [])
    config = runconfig.load_train_config(_config_or_default(args, sys.stderr if args.json else sys.stdout), overrides)
    name = reward or next((n for n in reward_lib.PRESETS if reward_lib.preset(n) == config.reward), None)
    return config, name or f"{args.config}'s reward"


def _cmd_diagnose(args) -> int:
    from mimic_mjx import diagnose
    from mimic_mjx import runner

    config, name = diagnose_config(args)
    diagnose.check_inputs(config.reward, args.envs, args.steps, args.scales)
    runner.check_clip(config)
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else print
    report = diagnose.diagnose(
        config.env, config.reward, name, num_envs=args.envs, steps=args.steps,
        seed=args.seed, scales=args.scales, progress=progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(diagnose.format_report(report))
    return 0


def _config_or_default(args, stream, prefix: str = "") -> str:
    """`--config`, or the preset `mimic-mjx train` picks without one (said on `stream`), so
    every command that reads a training config starts from the same one."""
    from mimic_mjx import runconfig

    if args.config is not None:
        return args.config
    return runconfig.announce_default(getattr(args, "motion", None), stream, prefix)


def _diagnose_overrides(items: list[str]) -> list[str]:
    """`diagnose --set` items as `train --set` takes them: a bare FIELD=VALUE is reward.FIELD."""
    from mimic_mjx import reward as reward_lib

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if sep and key and "." not in key:
            if key not in reward_lib.RewardConfig.__dataclass_fields__:
                raise MimicError(f"unknown reward field {key!r} (a bare FIELD=VALUE sets reward.FIELD: "
                                 f"{', '.join(reward_lib.RewardConfig.__dataclass_fields__)}; other settings "
                                 "take their section, e.g. env.rsi=false)")
            item = f"reward.{key}={value}"
        out.append(item)
    return out


def _cmd_config(args) -> int:
    import yaml

    from mimic_mjx import config as cfglib
    from mimic_mjx import sweep as sweep_lib
    from mimic_mjx import runconfig

    if args.list:
        print(config_markdown())
        return 0
    if args.sweep:
        print(json.dumps({"sweepable_keys": sweep_lib.sweepable_keys()}, indent=2))
        return 0
    # The choice goes out as a YAML comment, so the output still loads as the config.
    config = runconfig.load_train_config(_config_or_default(args, sys.stdout, prefix="# "), args.set or [])
    print(yaml.safe_dump(cfglib.to_dict(config), sort_keys=False, default_flow_style=None), end="")
    return 0


def config_markdown() -> str:
    """docs/config.md's config reference: every key of a training config and of a sweep file
    with its type, default, valid range and meaning, generated from the field declarations."""
    from mimic_mjx import config_docs
    from mimic_mjx import sweep as sweep_lib
    from mimic_mjx import runconfig

    return "\n".join([
        "Training config (`mimic-mjx train --config FILE --set KEY=VALUE`; diagnose, eval and bench read the same "
        "keys). Every float must also be finite; a value out of range is refused when the config is loaded.",
        "",
        config_docs.markdown_table(runconfig.TrainConfig, start=runconfig.TrainConfig()),
        "Sweep file (`mimic-mjx sweep --config FILE --set KEY=VALUE`); a grid axis is one of "
        + ", ".join(f"`{k}`" for k in sweep_lib.sweepable_keys()) + ".",
        "",
        config_docs.markdown_table(sweep_lib.SweepFile),
    ])


def _lazy(parser, module: str, adder: str, run: str) -> None:
    import importlib

    mod = importlib.import_module(f"mimic_mjx.{module}")
    getattr(mod, adder)(parser)
    parser.set_defaults(func=getattr(mod, run))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimic-mjx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("clips", help="list the DeepMimic clips found (and check them with --check)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--check", action="store_true", help="validate each clip against the model")
    p.set_defaults(func=_cmd_clips)

    p = sub.add_parser("diagnose", help="reward and return scale under reference, zero and random policies")
    p.add_argument("--config", default=None, help="training config (YAML or preset name) whose env and reward to "
                   "diagnose (default: the preset `train` picks, e.g. walk_cpu on a CPU)")
    p.add_argument("--motion", default=None, help="clip name or path (sets env.motion; default: walk)")
    p.add_argument("--reward", default=None, help="reward preset (sets reward.preset; `mimic-mjx config --list` "
                   "lists them; default: the config's reward)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override as in `train --set` (reward.pose_scale=3, "
                   "env.rsi=false); a bare FIELD=VALUE is a reward field; repeatable")
    p.add_argument("--scales", nargs="+", metavar="FIELD=V1,V2", help="re-score the same rollouts over this grid of reward fields")
    p.add_argument("--envs", type=int, default=16, help="environments per policy (default 16)")
    p.add_argument("--steps", type=int, default=90, help="control steps per environment (default 90 = 3 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_diagnose)

    p = sub.add_parser("config", help="print a resolved training config, or every config key with its range")
    p.add_argument("--config", default=None, help="training config (YAML or preset name; default: the preset `train` picks, e.g. walk_cpu on a CPU)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, as in `train --set`")
    p.add_argument("--list", action="store_true", help="every key of a training config and a sweep file as markdown: "
                   "type, default, valid range, meaning")
    p.add_argument("--sweep", action="store_true", help="the keys a sweep grid may vary, as JSON")
    p.set_defaults(func=_cmd_config)

    # The remaining commands live with the concept they run: `module.add_arguments(parser)`
    # declares the flags, `module.run_cli(args)` runs them. Only the invoked command's module
    # is imported: JAX and MJX take seconds to import and `clips` needs neither.
    for name, module, help_text, adder, run in (
        ("train", "runner", "train a policy with TRPO (default: walk)", "add_arguments", "run_cli"),
        ("eval", "evaluate", "evaluate a run's deterministic policy on the yardstick", "add_arguments", "run_cli"),
        ("sweep", "sweep", "train many reward variants side by side in one program", "add_arguments", "run_cli"),
        ("extract", "sweep", "write one sweep member as a run directory", "add_extract_arguments", "run_extract_cli"),
        ("bench", "bench", "throughput of physics, environment and training", "add_arguments", "run_cli"),
        ("library", "library", "score every shipped policy beside DeepMimic's Table 2", "add_arguments", "run_cli"),
        ("plot", "plot", "learning curves of run directories as one PNG", "add_arguments", "run_cli"),
        ("render", "render", "video and filmstrip of a policy beside its reference motion", "add_arguments", "run_cli"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _lazy(p, module, adder, run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return args.func(args)
    except MimicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
