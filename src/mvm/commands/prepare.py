"""``mvm prepare LIST_OR_FOLDER OUT_DIR``: transcode a dataset to motion-friendly H.264.

Motion-friendly: one reference frame and no B-frames (every vector then spans exactly one
frame, so codec motion needs no reference guessing), a fixed GOP, constant quality. The new list
keeps each video's label; unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

HELP = "transcode a video list or folder to H.264 with motion-friendly settings (ref=1, no B-frames)"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="list file (`path label` per line) or folder of videos")
    p.add_argument("out_dir", help="output folder: transcoded videos and the new list")
    p.add_argument("--gop", type=int, default=16, help="keyframe interval in frames (default 16)")
    p.add_argument("--crf", type=int, default=23, help="x264 constant quality, lower is better (default 23)")
    p.add_argument("--list-name", default=None, help="name of the new list (default: the input list's name, "
                   "or list.txt for a folder)")
    p.add_argument("--workers", type=int, default=1, help="parallel transcoding processes")


def read_entries(source: Path) -> tuple[list[tuple[Path, Path, str]], list[tuple[str, str]]]:
    """``(input, relative output name, label)`` per video, and ``(line or file, reason)`` for
    lines that cannot be used. Folders: every video file below, labelled by the index of its
    parent folder among the sorted parent folders (all 0 when the videos sit in one folder)."""
    entries: list[tuple[Path, Path, str]] = []
    bad: list[tuple[str, str]] = []
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        parents = sorted({p.parent for p in files})
        for f in files:
            entries.append((f, f.relative_to(source).with_suffix(".mp4"), str(parents.index(f.parent))))
        return entries, bad
    root = source.parent
    for n, line in enumerate(source.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2:
            bad.append((f"{source}:{n}", f"expected `path label`, got {line.strip()!r}"))
            continue
        rel, label = parts
        try:
            int(label)
        except ValueError:
            bad.append((f"{source}:{n}", f"label {label!r} is not an integer"))
            continue
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        name = Path(rel).with_suffix(".mp4")
        if name.is_absolute():
            name = Path(*name.parts[1:])
        entries.append((path, name, label))
    return entries, bad


def transcode(src: Path, dst: Path, gop: int, crf: int) -> str | None:
    """Transcode one video; returns None, or the reason it was skipped."""
    import numpy as np

    from mvm.data.video_io import VideoDecodeError, decode_video, encode_video

    try:
        video = decode_video(src)
    except VideoDecodeError as e:
        return str(e)[len(e.path) + 2:]  # "reason: detail" without the path
    frames = video.frames
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sides
    if h == 0 or w == 0:
        return f"too small ({frames.shape[2]}x{frames.shape[1]})"
    fps = Fraction(video.fps).limit_denominator(1001) if video.fps > 0 else Fraction(25)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part.mp4")
    try:
        encode_video(tmp, np.ascontiguousarray(frames[:, :h, :w]), fps=fps, codec="libx264", gop=gop,
                     bframes=0, refs=1, crf=crf)
    except Exception as e:  # noqa: BLE001 - any encoder failure skips this one file
        tmp.unlink(missing_ok=True)
        return f"encode_error ({type(e).__name__}: {e})"
    tmp.replace(dst)  # atomic: a half-written file never carries the final name
    return None


def _job(item: tuple[Path, Path, int, int]) -> str | None:
    return transcode(*item)


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    source, out_dir = Path(args.source), Path(args.out_dir)
    if not source.exists():
        print(f"mvm prepare: {source}: no such list file or folder", file=sys.stderr)
        return 2
    if args.gop < 1 or not 0 <= args.crf <= 51:
        print("mvm prepare: --gop must be >= 1 and --crf in [0, 51]", file=sys.stderr)
        return 2
    list_name = args.list_name or (source.name if source.is_file() else "list.txt")
    out_list = out_dir / list_name
    if source.is_file() and out_list.resolve() == source.resolve():
        print(f"mvm prepare: the new list would overwrite {source}; choose another OUT_DIR or --list-name",
              file=sys.stderr)
        return 2
    entries, skipped = read_entries(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(src, out_dir / name, args.gop, args.crf) for src, name, _ in entries]
    bar = dict(total=len(jobs), desc="prepare", unit="video", file=sys.stderr, dynamic_ncols=True)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            reasons = list(tqdm(pool.map(_job, jobs, chunksize=4), **bar))
    else:
        reasons = [_job(j) for j in tqdm(jobs, **bar)]
    lines = []
    for (src, name, label), reason in zip(entries, reasons):
        if reason is None:
            lines.append(f"{name.as_posix()} {label}")
        else:
            skipped.append((str(src), reason))
    out_list.write_text("".join(line + "\n" for line in lines))
    print(f"transcoded {len(lines)} of {len(entries)} videos to {out_dir} (H.264, ref=1, no B-frames, "
          f"gop {args.gop}, crf {args.crf}); list: {out_list}")
    if skipped:
        print(f"skipped {len(skipped)}:", file=sys.stderr)
        for what, reason in skipped:
            print(f"  {what}: {reason}", file=sys.stderr)
    return 0 if lines or not entries else 1
