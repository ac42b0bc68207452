"""``mvm data check SOURCE``: scan a whole dataset and report, per reason, what cannot be used.

Every entry is opened (container header and packet index) and its first frame decoded; nothing
stops at the first problem. Videos shorter than one clip (--frames at --stride) are usable
(training repeats their last frame) and counted apart. Exit code 0 when every entry is usable,
1 otherwise, 2 when the source itself cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

HELP = "check a dataset: every entry opened and counted by problem (missing, unreadable, too short, ...)"
#: Examples kept per reason.
EXAMPLES = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="scan every entry of a data source", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(c)
    c.add_argument("--frames", type=int, default=16,
                   help="clip frames, for the shorter-than-a-clip count (default 16, as footage-tiny)")
    c.add_argument("--stride", type=int, default=4,
                   help="clip stride, for the shorter-than-a-clip count (default 4, as footage-tiny)")
    c.add_argument("--num-classes", type=int, default=0,
                   help="labels must lie in [0, K) (default: the source's class count, if it has one)")
    c.add_argument("--workers", type=int, default=4, help="files opened in parallel (threads, default 4)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """``SOURCE --format --root --split --subset``, shared by commands that read a data source."""
    p.add_argument("source", help="list file, annotation file (CSV/JSON) or folder")
    p.add_argument("--format", default="", help="videomae, folder, ucf101, hmdb51, kinetics, ssv2, diving48, "
                   "epic100 (default: detected)")
    p.add_argument("--root", default="", help="folder that relative video paths resolve against "
                   "(default: the annotation file's folder)")
    p.add_argument("--split", default=None, help="HMDB51 split number (default 1)")
    p.add_argument("--subset", default=None, choices=["train", "test"], help="HMDB51 subset (default train)")


def entry_problem(entry, frames: int, stride: int, num_classes: int) -> tuple[str, str] | None:
    """``(reason, detail)`` when an entry cannot be used, else None.

    Reasons: bad_label, the :class:`~mvm.data.video_io.VideoDecodeError` reasons (missing,
    empty_file, not_video, no_video_stream, no_frames, decode_error), empty_span (the frame
    span lies outside the video) and too_short (fewer frames than one clip spans: still usable,
    training pads it by repeating the last frame; :func:`scan` counts it apart).
    """
    from mvm.data.sampling import clip_span
    from mvm.data.video_io import VideoDecodeError, decode_video, probe_video

    if num_classes and not -1 <= entry.label < num_classes:
        return "bad_label", f"{entry.path}: label {entry.label} outside [0, {num_classes})"
    try:
        info = probe_video(entry.path)
        lo = max(0, entry.start or 0)
        hi = min(info.num_frames, entry.end if entry.end is not None else info.num_frames)
        if hi <= lo:
            return "empty_span", f"frames [{entry.start}, {entry.end}) outside {info.num_frames} frames"
        decode_video(entry.path, start=lo, max_frames=1, pts=info.pts)
    except VideoDecodeError as e:
        return e.reason, str(e)
    except Exception as e:  # noqa: BLE001 - anything a file can do to the decoder is a finding
        return "decode_error", f"{entry.path}: {type(e).__name__}: {e}"
    need = clip_span(frames, stride)
    if hi - lo < need:
        return "too_short", f"{entry.path}: {hi - lo} frames, a clip spans {need}"
    return None


def scan(src, frames: int, stride: int, num_classes: int, workers: int = 4, progress: bool = True) -> dict:
    """The report of one opened :class:`~mvm.data.formats.Source`: ``{"total", "usable",
    "bad_by_reason", "examples", "format", "source"}`` (malformed lines count in ``total``)."""
    from tqdm import tqdm

    k = num_classes or len(src.classes)
    bad: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    short: list[str] = []  # usable: training pads them by repeating the last frame

    def note(reason: str, detail: str) -> None:
        if reason == "too_short":
            short.append(detail)
            return
        bad[reason] += 1
        if len(examples.setdefault(reason, [])) < EXAMPLES:
            examples[reason].append(detail)

    for line in src.malformed:
        note("malformed_line", line)
    bar = tqdm(total=len(src.entries), desc="data check", unit="video", file=sys.stderr,
               disable=not progress or len(src.entries) < 50, dynamic_ncols=True)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for problem in pool.map(lambda e: entry_problem(e, frames, stride, k), src.entries):
            if problem is not None:
                note(*problem)
            bar.update()
    bar.close()
    total = len(src.entries) + len(src.malformed)
    return {"source": src.path, "format": src.format, "total": total, "usable": total - sum(bad.values()),
            "bad_by_reason": dict(bad.most_common()), "examples": examples,
            "short": len(short), "short_examples": short[:EXAMPLES]}


def run(args: argparse.Namespace) -> int:
    from mvm.data.formats import DataSourceError, open_source

    try:
        src = open_source(args.source, args.format, args.root, split=args.split, subset=args.subset)
    except DataSourceError as e:
        print(f"mvm data check: {e}", file=sys.stderr)
        return 2
    report = scan(src, args.frames, args.stride, args.num_classes, args.workers)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['source']} ({report['format']}): {report['total']} entries, {report['usable']} usable")
        if report["short"]:
            print(f"  {report['short']} usable but shorter than one clip ({args.frames} frames at stride "
                  f"{args.stride}): training repeats their last frame; --frames/--stride check other settings")
            for ex in report["short_examples"]:
                print(f"    e.g. {ex}")
        for reason, n in report["bad_by_reason"].items():
            print(f"  {reason}: {n}")
            for ex in report["examples"][reason]:
                print(f"    e.g. {ex}")
    return 0 if report["usable"] == report["total"] else 1
