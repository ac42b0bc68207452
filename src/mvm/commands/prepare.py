"""``mvm prepare LIST_OR_FOLDER OUT_DIR``: transcode a dataset to motion-friendly H.264.

Motion-friendly: one reference frame and no B-frames (every vector then spans exactly one
frame, so codec motion needs no reference guessing), a fixed GOP, constant quality. With
``--bframes N``: N non-reference B-frames between P-frames instead, which a clip sampled at stride
N + 1 never needs unless it shows them, so items cost 16-22% less when training without codec
motion (docs/benchmarks.md, "Stream layouts"); codec motion then needs
``data.motion_frames=references`` to profit, at a cost in motion accuracy. The new list
keeps each video's label (one ``path label`` line per entry, relative to the list's folder, so
pretraining reads it back as written); unreadable files are skipped and reported. Sources are
read by ``mvm.data.formats`` like everywhere else; entries with a frame span become clips of it.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

HELP = "transcode a dataset (any format mvm reads) to H.264 with motion-friendly settings (ref=1, no B-frames)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.commands.data import add_source_arguments

    add_source_arguments(p)
    p.add_argument("out_dir", help="output folder: transcoded videos and the new list")
    p.add_argument("--gop", type=int, default=16, help="keyframe interval in frames (default 16)")
    p.add_argument("--crf", type=int, default=23, help="x264 constant quality, lower is better (default 23)")
    p.add_argument("--bframes", type=int, default=0,
                   help="non-reference B-frames between P-frames (default 0: motion-friendly). 3 for training "
                        "without codec motion at stride 4: a clip's decode skips the B-frames it does not show")
    p.add_argument("--list-name", default=None, help="name of the new list (default: the input list's name, "
                   "with .txt for other formats, or list.txt for a folder)")
    p.add_argument("--workers", type=int, default=1, help="parallel transcoding processes")


def output_names(entries: list, root: Path) -> list[Path]:
    """A unique output path (relative, ``.mp4``) per distinct ``(path, start, end)``, in entry order.

    The input's path relative to ``root`` is kept (absolute paths outside it lose their anchor);
    a frame span adds ``_<start>-<end>``. Inputs that would land on the same name (``clip.avi``
    and ``clip.mp4`` in one folder) keep their original extension in the name (``clip.avi.mp4``),
    then a counter if still taken.
    """
    names: dict[tuple, Path] = {}
    taken: set[str] = set()

    def rel(path: str) -> Path:
        p = Path(path)
        try:
            return p.relative_to(root)
        except ValueError:
            return Path(*p.parts[1:]) if p.is_absolute() else p

    wanted: dict[tuple, Path] = {}
    for e in entries:
        key = (e.path, e.start, e.end)
        if key in wanted:
            continue
        r = rel(e.path)
        span = "" if e.start is None and e.end is None else f"_{e.start or 0}-{'' if e.end is None else e.end}"
        wanted[key] = r.with_name(r.stem + span + ".mp4") if r.suffix else r.with_name(r.name + span + ".mp4")
    clash: dict[str, int] = {}
    for name in wanted.values():
        clash[name.as_posix().lower()] = clash.get(name.as_posix().lower(), 0) + 1
    for key, name in wanted.items():
        if clash[name.as_posix().lower()] > 1:
            r = rel(key[0])
            name = name.with_name(r.name + name.name[len(r.stem):])  # clip_10-20.mp4 -> clip.avi_10-20.mp4
        base, n = name, 1
        while name.as_posix().lower() in taken:
            n += 1
            name = base.with_name(f"{base.stem}-{n}.mp4")
        taken.add(name.as_posix().lower())
        names[key] = name
    return [names[(e.path, e.start, e.end)] for e in entries]


def transcode(src: Path, dst: Path, gop: int, crf: int, start: int | None = None, end: int | None = None,
              bframes: int = 0) -> str | None:
    """Transcode one video (frames ``[start, end)`` of it when given); returns None, or the reason
    it was skipped."""
    import numpy as np

    from mvm.data.video_io import VideoDecodeError, decode_video, encode_video

    try:
        first = max(0, start or 0)
        video = decode_video(src, start=first, max_frames=None if end is None else max(1, end - first))
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
                     bframes=bframes, refs=1, crf=crf, fixed_bframes=True)
    except Exception as e:  # noqa: BLE001 - any encoder failure skips this one file
        tmp.unlink(missing_ok=True)
        return f"encode_error ({type(e).__name__}: {e})"
    tmp.replace(dst)  # atomic: a half-written file never carries the final name
    return None


def _out_dir_problem(source: Path, out_dir: Path, jobs) -> str | None:
    """Why OUT_DIR cannot take the output (checked before anything is written), else None: a
    file, a folder inside the source folder (the new videos would join the data set), or an
    output that is one of the inputs (it would replace the user's original)."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"OUT_DIR {out_dir} is a file; give a folder for the transcoded videos and the new list"
    out = out_dir.resolve()
    if source.is_dir() and (out == source.resolve() or source.resolve() in out.parents):
        return (f"OUT_DIR {out_dir} is inside the source folder {source}: the transcoded videos would "
                "join the data set; choose a folder outside it")
    for src_path, dst, *_ in jobs:
        if dst.resolve() == src_path.resolve():
            return f"{dst} would replace its own input video; choose another OUT_DIR"
    return None


def _job(item: tuple) -> str | None:
    return transcode(*item)


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from mvm.data.formats import DataSourceError, open_source

    source, out_dir = Path(args.source), Path(args.out_dir)
    if args.gop < 1 or not 0 <= args.crf <= 51 or not 0 <= args.bframes <= 15:
        print("mvm prepare: --gop must be >= 1, --crf in [0, 51] and --bframes in [0, 15]", file=sys.stderr)
        return 2
    try:
        src = open_source(source, args.format, args.root, split=args.split, subset=args.subset)
    except DataSourceError as e:
        print(f"mvm prepare: {e}", file=sys.stderr)
        return 2
    default = "list.txt" if source.is_dir() else (source.name if src.format == "videomae" else source.stem + ".txt")
    out_list = out_dir / (args.list_name or default)
    if source.is_file() and out_list.resolve() == source.resolve():
        print(f"mvm prepare: the new list would overwrite {source}; choose another OUT_DIR or --list-name",
              file=sys.stderr)
        return 2
    root = Path(args.root) if args.root else (source if source.is_dir() else source.parent)
    names = output_names(src.entries, root)
    jobs: dict[Path, tuple] = {}
    for e, name in zip(src.entries, names):
        jobs.setdefault(name, (Path(e.path), out_dir / name, args.gop, args.crf, e.start, e.end, args.bframes))
    problem = _out_dir_problem(source, out_dir, jobs.values())
    if problem:
        print(f"mvm prepare: {problem}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = dict(total=len(jobs), desc="prepare", unit="video", file=sys.stderr, dynamic_ncols=True)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            reasons = dict(zip(jobs, tqdm(pool.map(_job, jobs.values(), chunksize=4), **bar)))
    else:
        reasons = {name: _job(job) for name, job in tqdm(jobs.items(), **bar)}
    # Paths may hold spaces: the label is the last field, as mvm reads lists.
    lines = [f"{name.as_posix()} {e.label}" for e, name in zip(src.entries, names) if reasons[name] is None]
    skipped = [(str(job[0]), reasons[name]) for name, job in jobs.items() if reasons[name] is not None]
    skipped += [(line, "malformed line") for line in src.malformed]
    done = sum(r is None for r in reasons.values())
    if skipped:
        print(f"skipped {len(skipped)}:", file=sys.stderr)
        for what, reason in skipped:
            print(f"  {what}: {reason}", file=sys.stderr)
    if not done:
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # made above; leave nothing behind
        print(f"mvm prepare: none of the {len(jobs)} videos of {source} could be transcoded "
              f"(e.g. {skipped[0][0]}: {skipped[0][1]}); no list written", file=sys.stderr)
        return 1
    out_list.write_text("".join(line + "\n" for line in lines))
    layout = f"{args.bframes} non-reference B-frames between P-frames" if args.bframes else "no B-frames"
    print(f"transcoded {done} of {len(jobs)} videos to {out_dir} (H.264, ref=1, {layout}, "
          f"gop {args.gop}, crf {args.crf}); list: {out_list}")
    return 0
