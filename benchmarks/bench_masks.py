"""Mask generation time per clip, for every encoder and decoder strategy. Prints one JSON object.

    python benchmarks/bench_masks.py                      # 16 and 128 frames at 224, batch 1 and 32
    python benchmarks/bench_masks.py --repeats 50 --threads 1

Grids: 16 frames -> 8x14x14, 128 frames -> 64x14x14 tokens (tubelet 2, patch 16). Encoder masks
get a synthetic token-grid motion (a few moving blocks over a slowly panning background) so MGM
does its real work; decoder masks get a tube encoder mask. Times are the median over repeats of
one batch call, divided by the batch size; ``ms_per_batch`` is the undivided median.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mvm.grid import TokenGrid
from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext


def synthetic_motion(grid: TokenGrid, batch: int, seed: int = 0) -> torch.Tensor:
    """``[B, t, h, w, 2]``: 0.5 px/frame pan plus 2-3 blocks moving at 4-12 px/frame."""
    g = torch.Generator().manual_seed(seed)
    motion = torch.full((batch, *grid.shape, 2), 0.5)
    motion += 0.3 * torch.randn(motion.shape, generator=g)  # codec-like noise
    for b in range(batch):
        for _ in range(int(torch.randint(2, 4, (1,), generator=g))):
            size = int(torch.randint(2, 5, (1,), generator=g))
            y, x = (int(v) for v in torch.randint(0, min(grid.h, grid.w) - size + 1, (2,), generator=g))
            v = (torch.rand(2, generator=g) - 0.5) * 24
            for i in range(grid.t):
                dy = int(round(float(v[1]) * grid.tubelet * i / grid.patch))
                dx = int(round(float(v[0]) * grid.tubelet * i / grid.patch))
                yy, xx = min(max(y + dy, 0), grid.h - size), min(max(x + dx, 0), grid.w - size)
                motion[b, i, yy:yy + size, xx:xx + size] = v
    return motion


def time_strategy(strategy, grid: TokenGrid, batch: int, ctx: MaskContext, repeats: int) -> float:
    """Median seconds of one ``strategy(grid, batch, ...)`` call over ``repeats`` runs (2 warm-ups)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        strategy(grid, batch, gen, ctx)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        strategy(grid, batch, gen, ctx)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(role: str, name: str, frames: int, grid: TokenGrid, batch: int, sec: float) -> dict:
    return {"role": role, "strategy": name, "frames": frames, "grid": list(grid.shape), "batch": batch,
            "ms_per_clip": round(sec * 1e3 / batch, 4), "ms_per_batch": round(sec * 1e3, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--decoder-ratio", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (collate runs in workers)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for frames in args.frames:
        grid = TokenGrid.from_clip(frames, args.size, tubelet=2, patch=16)
        for batch in args.batches:
            ctx = MaskContext(motion=synthetic_motion(grid, batch))
            for name in ENCODER_MASKS.names():
                sec = time_strategy(ENCODER_MASKS.build(name, ratio=args.ratio), grid, batch, ctx, args.repeats)
                rows.append(row("encoder", name, frames, grid, batch, sec))
            enc = ENCODER_MASKS.build("tube", ratio=args.ratio)(grid, batch, torch.Generator().manual_seed(0))
            dctx = MaskContext(encoder_mask=enc)
            for name in DECODER_MASKS.names():
                strategy = DECODER_MASKS.build(name, ratio=args.decoder_ratio)
                rows.append(row("decoder", name, frames, grid, batch,
                                time_strategy(strategy, grid, batch, dctx, args.repeats)))
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "machine": platform.machine(), "processor": platform.processor() or None,
                      "ratio": args.ratio, "decoder_ratio": args.decoder_ratio, "repeats": args.repeats,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
