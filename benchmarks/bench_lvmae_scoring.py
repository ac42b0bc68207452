"""Where to score tokens for LVMAE: the frozen tokenizer's pass vs the MAE step it serves.

Prints JSON: seconds per tokenizer pass (codes + scores) and per MAE training step (forward +
backward, adaptive 15% decoding) for the same batch, side by side, on this machine's CPU (and the
GPU when there is one). The tokenizer's share of the step says what moving it into the loader
workers could save at most; see docs/lvmae.md.

    .venv/bin/python benchmarks/bench_lvmae_scoring.py --frames 128 --size 32 --batch 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mvm.grid import TokenGrid
from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext, mask_to_indices
from mvm.models import build_mae
from mvm.tokenizer import build_tokenizer


def _time(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--model", default="tiny")
    p.add_argument("--tokenizer", default="tiny")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    grid = TokenGrid.from_clip(a.frames, a.size, 2, a.patch)
    tok = build_tokenizer(a.tokenizer, 2, a.patch).to(device).eval().requires_grad_(False)
    mae = build_mae(a.model, tubelet=2, patch=a.patch, out_dim=23).to(device)
    video = torch.randn(a.batch, 3, a.frames, a.size, a.size, device=device)
    g = torch.Generator().manual_seed(0)
    enc = ENCODER_MASKS.build("tube", ratio=0.9)(grid, a.batch, g).to(device)
    codes, scores = tok.tokenize(video)
    dec = DECODER_MASKS.build("adaptive", ratio=0.15)(grid, a.batch, g, MaskContext(scores=scores, encoder_mask=enc))
    vis, idx = mask_to_indices(~enc), mask_to_indices(dec)

    def score() -> None:
        tok.tokenize(video)

    def score_bf16() -> None:  # the conv encoder and scorer in bf16 (FSQ still rounds in fp32)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            tok.tokenize(video)

    def step() -> None:
        mae(video, vis, idx).float().pow(2).mean().backward()

    t_score, t_step = _time(score, a.repeat, device), _time(step, a.repeat, device)
    t_bf16 = _time(score_bf16, a.repeat, device)
    print(json.dumps({"device": str(device), "frames": a.frames, "size": a.size, "batch": a.batch,
                      "tokens": grid.num_tokens, "model": a.model, "tokenizer": a.tokenizer,
                      "tokenizer_pass_s": round(t_score, 4), "tokenizer_pass_bf16_s": round(t_bf16, 4), "mae_step_s": round(t_step, 4),
                      "tokenizer_share_of_step": round(t_score / (t_score + t_step), 3),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
