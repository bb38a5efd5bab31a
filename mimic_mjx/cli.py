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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimic-mjx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("clips", help="list the DeepMimic clips found (and check them with --check)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--check", action="store_true", help="validate each clip against the model")
    p.set_defaults(func=_cmd_clips)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MimicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
