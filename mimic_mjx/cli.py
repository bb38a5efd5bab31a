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


def _cmd_diagnose(args) -> int:
    from mimic_mjx import config as cfglib
    from mimic_mjx import diagnose
    from mimic_mjx import env as env_lib

    overrides = cfglib.parse_overrides(args.set or [])
    env_overrides = overrides.pop("env", {})
    reward_overrides = overrides.pop("reward", {})
    for key, value in overrides.items():  # bare FIELD=VALUE means a reward field
        reward_overrides[key] = value
    env_config = cfglib.from_dict(env_lib.EnvConfig, env_overrides, "--set env")
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else print
    report = diagnose.diagnose(
        args.motion, args.reward, reward_overrides, env_config, num_envs=args.envs, steps=args.steps,
        seed=args.seed, scales=args.scales, progress=progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(diagnose.format_report(report))
    return 0


def _lazy(parser, module: str, adder: str, runner: str) -> None:
    import importlib

    mod = importlib.import_module(f"mimic_mjx.{module}")
    getattr(mod, adder)(parser)
    parser.set_defaults(func=getattr(mod, runner))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimic-mjx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("clips", help="list the DeepMimic clips found (and check them with --check)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--check", action="store_true", help="validate each clip against the model")
    p.set_defaults(func=_cmd_clips)

    p = sub.add_parser("diagnose", help="reward and return scale under reference, zero and random policies")
    p.add_argument("--motion", default="walk", help="clip name or path (default: walk)")
    p.add_argument("--reward", default="deepmimic_paper", help="reward preset (deepmimic_paper, deepmimic_code, original_port)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="reward field (pose_scale=3 or reward.pose_scale=3) or env.FIELD=VALUE; repeatable")
    p.add_argument("--scales", nargs="+", metavar="FIELD=V1,V2", help="re-score the same rollouts over this grid of reward fields")
    p.add_argument("--envs", type=int, default=16, help="environments per policy (default 16)")
    p.add_argument("--steps", type=int, default=90, help="control steps per environment (default 90 = 3 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_diagnose)

    # The remaining commands live with the concept they run: `module.add_arguments(parser)`
    # declares the flags, `module.run_cli(args)` runs them. Only the invoked command's module
    # is imported: JAX and MJX take seconds to import and `clips` needs neither.
    for name, module, help_text, adder, runner in (
        ("train", "train", "train a policy with TRPO (default: walk)", "add_arguments", "run_cli"),
        ("eval", "evaluate", "evaluate a run's deterministic policy on the yardstick", "add_arguments", "run_cli"),
        ("sweep", "sweep", "train many reward variants side by side in one program", "add_arguments", "run_cli"),
        ("extract", "sweep", "write one sweep member as a run directory", "add_extract_arguments", "run_extract_cli"),
        ("bench", "bench", "throughput of physics, environment and training", "add_arguments", "run_cli"),
        ("plot", "plot", "learning curves of run directories as one PNG", "add_arguments", "run_cli"),
        ("render", "render", "video and filmstrip of a policy beside its reference motion", "add_arguments", "run_cli"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _lazy(p, module, adder, runner)
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
