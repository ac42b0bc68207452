"""Peak memory and step time of pretraining on long clips, by decoder masking. Prints JSON.

    python benchmarks/bench_long.py                                  # ViT-S, 16/32/64/128 frames, CPU
    python benchmarks/bench_long.py --frames 16 32 --repeats 1        # a subset
    python benchmarks/bench_long.py --device cuda --bf16 --model base --frames 16 32 64 128 256

One configuration = one fresh subprocess (so peak memory is that configuration's alone): build the
model, draw a 90% tube encoder mask and the decoder mask, run forward + norm-pix loss + backward
(no optimiser) ``1 + repeats`` times at ``--batch`` clips (default 1), report the fastest step and the peak memory.

Decoder masking (per frame count, side by side):
- ``none``: decode every encoder-masked token (VideoMAE);
- ``running_cell``: VideoMAE V2's running cell, 50% of the tokens;
- ``random15``: a random 15% of the tokens, standing in for LVMAE's adaptive mask at its default
  budget. What a step costs depends only on how many tokens are decoded, not on which, so the
  random choice costs what the adaptive one does (minus scoring, measured in docs/lvmae.md).

The target is norm-pix computed for the decoded tokens only (their pixels gathered with
``mvm.models.patch.gather_tubelets``), the change proposed for ``mvm.targets`` (``--target full``:
the whole clip's target, as ``norm_pix_target`` computes it today, then gathered).

Memory: on CPU the peak resident set (``ru_maxrss``) of the subprocess, and ``step_mb`` = that
minus the resident set just before the first step (model, clip and masks in memory); on CUDA
``torch.cuda.max_memory_allocated`` and the same difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = {"none": ("none", 1.0), "running_cell": ("running_cell", 0.5), "random15": ("random", 0.15)}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_one(args: argparse.Namespace) -> dict:
    """Measure one (frames, mode) configuration in this process."""
    import torch

    from mvm.grid import TokenGrid
    from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext, mask_to_indices
    from mvm.models import build_mae
    from mvm.models.patch import gather_tubelets
    from mvm.targets import masked_mse, norm_pix_target

    device = torch.device(args.device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    grid = TokenGrid.from_clip(args.one_frames, args.size, 2, 16)
    b = args.batch
    enc = ENCODER_MASKS.build("tube", ratio=0.9)(grid, b, gen)
    name, ratio = MODES[args.one_mode]
    dec = DECODER_MASKS.build(name, ratio=ratio)(grid, b, gen, MaskContext(encoder_mask=enc))
    vis_idx, dec_idx = mask_to_indices(~enc).to(device), mask_to_indices(dec).to(device)
    model = build_mae(args.model, checkpointing=args.checkpointing).to(device)
    video = torch.randn(b, 3, args.one_frames, args.size, args.size, generator=gen).to(device)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def target() -> torch.Tensor:
        if args.target == "full":
            return norm_pix_target(video, 2, 16, mean, std)  # [B, N, D], masked_mse gathers
        with torch.no_grad():  # [B, Nd, D]: the decoded tokens only
            x = gather_tubelets(video.float(), 2, 16, dec_idx, layout="target")
            x = x * torch.tensor(std, device=device).repeat(x.shape[-1] // 3) + torch.tensor(
                mean, device=device).repeat(x.shape[-1] // 3)
            x = x.unflatten(-1, (-1, 3))
            var, mu = torch.var_mean(x, dim=-2, unbiased=True, keepdim=True)
            return ((x - mu) / (var.sqrt() + 1e-6)).flatten(-2)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(video, vis_idx, dec_idx)
        t = target()
        if args.target == "full":
            loss = masked_mse(pred.float(), t, dec_idx)
        else:
            loss = torch.mean((pred.float() - t) ** 2)
        loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2 ** 20
    else:
        before = rss_mb()
    times = []
    for _ in range(1 + args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"frames": args.one_frames, "mode": args.one_mode, "batch": b, "tokens": grid.num_tokens,
            "visible": int(vis_idx.shape[1]), "decoded": int(dec_idx.shape[1]),
            "step_s": min(times[1:]) if len(times) > 1 else times[0], "step_s_all": times,
            "peak_mb": peak, "before_mb": before, "step_mb": peak - before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="small")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--repeats", type=int, default=1, help="timed steps after one warm-up step")
    p.add_argument("--batch", type=int, default=1, help="clips per step (GPU: batch 1 is launch-bound)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing (model.checkpointing)")
    p.add_argument("--target", choices=["decoded", "full"], default="decoded")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each subprocess (0: default)")
    p.add_argument("--one-frames", type=int, help=argparse.SUPPRESS)
    p.add_argument("--one-mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_mode:  # child: one configuration
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        print(json.dumps(run_one(args)))
        return
    rows = []
    for frames in args.frames:
        for mode in args.modes:  # modes of one frame count back to back: side by side
            cmd = [sys.executable, __file__, "--one-frames", str(frames), "--one-mode", mode,
                   "--device", args.device, "--model", args.model, "--size", str(args.size),
                   "--repeats", str(args.repeats), "--batch", str(args.batch), "--target", args.target, "--threads", str(args.threads)]
            cmd += ["--bf16"] * args.bf16 + ["--checkpointing"] * args.checkpointing
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                row = {"frames": frames, "mode": mode, "error": err[:300]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)  # partial results as they come
    ratios = {}
    for frames in args.frames:
        by = {r["mode"]: r for r in rows if r["frames"] == frames and "error" not in r}
        if "none" in by:
            ratios[str(frames)] = {m: {"time_vs_none": by[m]["step_s"] / by["none"]["step_s"],
                                       "step_mem_vs_none": by[m]["step_mb"] / by["none"]["step_mb"],
                                       "peak_mem_vs_none": by[m]["peak_mb"] / by["none"]["peak_mb"]}
                                   for m in by if m != "none"}
    print(json.dumps({"device": args.device, "model": args.model, "size": args.size, "batch": args.batch, "bf16": args.bf16,
                      "checkpointing": args.checkpointing, "target": args.target, "rows": rows,
                      "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
