"""Where to score tokens for LVMAE: the frozen tokenizer's pass vs the MAE step it serves.

Prints JSON: seconds per tokenizer pass (codes + scores) and per MAE training step (forward +
backward, adaptive 15% decoding) for the same batch, side by side, on this machine's CPU (and the
GPU when there is one), and the FLOPs of each: the tokenizer's convolutions counted by hooks
(2 per multiply-add), the MAE step by ``mvm.models.flops``. The tokenizer's share of the step says
what moving it into the loader workers could save at most; see docs/lvmae.md.

    .venv/bin/python benchmarks/bench_lvmae_scoring.py --frames 128 --size 32 --batch 2
    .venv/bin/python benchmarks/bench_lvmae_scoring.py --frames 16 --size 224 --patch 16 --batch 1 \
        --model base --tokenizer base small --repeat 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mvm.grid import TokenGrid
from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext, mask_to_indices
from mvm.models import build_mae
from mvm.models.flops import mae_step_flops
from mvm.tokenizer import build_tokenizer


def conv_flops(model: torch.nn.Module, video: torch.Tensor) -> int:
    """FLOPs of the 3D convolutions of ``model.tokenize(video)`` (2 per multiply-add), by hooks."""
    total = 0

    def hook(mod: torch.nn.Conv3d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] * mod.kernel_size[2]
        total += 2 * out.numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        with torch.no_grad():
            model.tokenize(video)
    finally:
        for h in handles:
            h.remove()
    return total


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
    p.add_argument("--tokenizer", nargs="+", default=["tiny"], help="tokenizer sizes, side by side")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="also time the tokenizer pass under bf16 autocast")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    grid = TokenGrid.from_clip(a.frames, a.size, 2, a.patch)
    mae = build_mae(a.model, tubelet=2, patch=a.patch, out_dim=23).to(device)
    video = torch.randn(a.batch, 3, a.frames, a.size, a.size, device=device)
    g = torch.Generator().manual_seed(0)
    enc = ENCODER_MASKS.build("tube", ratio=0.9)(grid, a.batch, g).to(device)
    # The decoded tokens' count is what the step's cost depends on: 15% of the grid, drawn among
    # the masked ones (which ones does not change the cost).
    dec = DECODER_MASKS.build("random", ratio=0.15)(grid, a.batch, g, MaskContext(encoder_mask=enc))
    vis, idx = mask_to_indices(~enc), mask_to_indices(dec)

    def step() -> None:
        mae(video, vis, idx).float().pow(2).mean().backward()

    t_step = _time(step, a.repeat, device)
    step_flops = mae_step_flops(mae, a.batch, vis.shape[1], idx.shape[1])
    rows = []
    for name in a.tokenizer:
        tok = build_tokenizer(name, 2, a.patch).to(device).eval().requires_grad_(False)

        def score(tok=tok) -> None:
            tok.tokenize(video)

        def score_bf16(tok=tok) -> None:  # the conv encoder and scorer in bf16 (FSQ still rounds in fp32)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                tok.tokenize(video)

        t_score = _time(score, a.repeat, device)
        t_bf16 = _time(score_bf16, a.repeat, device) if a.bf16 else None
        flops = conv_flops(tok, video)
        rows.append({"tokenizer": name, "params_m": round(sum(p.numel() for p in tok.parameters()) / 1e6, 2),
                     "tokenizer_gflop": round(flops / 1e9, 1), "tokenizer_pass_s": round(t_score, 4),
                     "tokenizer_pass_bf16_s": None if t_bf16 is None else round(t_bf16, 4),
                     "flop_ratio_to_mae_step": round(flops / step_flops, 3),
                     "tokenizer_share_of_step": round(t_score / (t_score + t_step), 3)})
        del tok
    print(json.dumps({"device": str(device), "frames": a.frames, "size": a.size, "batch": a.batch,
                      "tokens": grid.num_tokens, "model": a.model, "mae_step_s": round(t_step, 4),
                      "mae_step_gflop": round(step_flops / 1e9, 1), "rows": rows,
                      "threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
