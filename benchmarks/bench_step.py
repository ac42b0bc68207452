"""One pretraining step, mvm vs transformers' VideoMAEForPreTraining, side by side. Prints JSON.

    python benchmarks/bench_step.py                       # ViT-S, 16x224x224, batch 2, 90% tube mask, CPU
    python benchmarks/bench_step.py --repeats 3 --precisions bf16
    python benchmarks/bench_step.py --profile             # add torch.profiler per-op tables (mvm and hf)
    python benchmarks/bench_step.py --device cuda --model base --batch 8

A step is forward + norm-pix loss + backward + AdamW (fused on CUDA), the same for both sides:
mvm computes the norm-pix target with ``mvm.targets``, transformers inside its forward. Repeats
are interleaved (mvm, hf, mvm, hf, ...) so the shared machine's noise hits both alike; the
figure is the median step time. The matmul peak of the machine is measured in the same run
(best of several large square matmuls), and MFU = analytic step FLOPs (``mvm.models.flops``;
encoder on the visible tokens, decoder on visible + decoded, attention, x3 for forward + backward)
/ step time / peak. Both sides get the same FLOP count: work a side does beyond it (e.g.
transformers embeds the whole clip) is waste, not credit.

``--heap retain`` (the default) makes glibc keep freed blocks under 32 MB for reuse in this process,
for both sides, as mvm's training loop does on CPU (``retain_heap(TRAIN_MAP_FROM)``): with glibc's
adaptive mmap threshold the step's 15-30 MB buffers (a decoder's attention scores) are mapped
afresh and page-faulted in every step. ``--heap default`` measures glibc's behaviour as it comes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mvm.data.loader import TRAIN_MAP_FROM, retain_heap
from mvm.masking.base import mask_to_indices
from mvm.models import build_mae, get_variant
from mvm.models.flops import mae_step_flops
from mvm.targets import mse, norm_pix_target

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, reps: int = 5) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 20 if device.type == "cuda" else 1
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n ** 3 / best


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, gen: torch.Generator) -> torch.Tensor:
    """``[B, N]`` bool, True = masked: the same ``ratio`` of spatial positions hidden in every frame."""
    t, h, w = grid
    k = int(ratio * h * w)
    masks = []
    for _ in range(batch):
        m = torch.zeros(h * w, dtype=torch.bool)
        m[torch.randperm(h * w, generator=gen)[:k]] = True
        masks.append(m.repeat(t))
    return torch.stack(masks)


def step_inputs(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's clips ``[B, 3, T, S, S]`` and tube mask ``[B, N]`` (seeded: the same every call)."""
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=gen).to(device)
    mask = tube_mask(args.batch, (args.frames // 2, args.size // 16, args.size // 16), args.ratio, gen).to(device)
    return video, mask


def hf_model(name: str, frames: int, size: int, attn: str = "sdpa") -> torch.nn.Module:
    """transformers' VideoMAEForPreTraining with the named size's shapes (norm-pix loss, no final norm)."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    v = get_variant(name)
    cfg = VideoMAEConfig(image_size=size, num_frames=frames, hidden_size=v.dim, num_hidden_layers=v.depth,
                         num_attention_heads=v.heads, intermediate_size=int(v.dim * v.mlp_ratio),
                         decoder_hidden_size=v.decoder_dim, decoder_num_hidden_layers=v.decoder_depth,
                         decoder_num_attention_heads=v.decoder_heads,
                         decoder_intermediate_size=int(v.decoder_dim * v.mlp_ratio),
                         use_mean_pooling=False, layer_norm_eps=1e-6, norm_pix_loss=True,
                         attn_implementation=attn)
    return VideoMAEForPreTraining(cfg)


def make_steps(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Callable[[bool], None]], int]:
    """Step closures ``step(bf16)`` for each side, and the step's FLOPs."""
    video, mask = step_inputs(args, device)
    vis, dec = mask_to_indices(~mask), mask_to_indices(mask)
    fused = device.type == "cuda" or args.fused_adamw
    def autocast(bf16: bool) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def mvm_side(compiled: bool) -> tuple[Callable[[bool], None], int]:
        torch.manual_seed(0)
        model = build_mae(args.model, checkpointing=args.checkpointing).to(device)
        runner = model
        if compiled:
            from mvm.train.compile import maybe_compile
            runner = maybe_compile(model, True, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)

        def mvm_step(bf16: bool) -> None:
            with autocast(bf16):
                pred = runner(video, vis, dec)
                # as the training loop does it: targets of the decoded tokens only
                loss = mse(pred, norm_pix_target(video, 2, 16, MEAN, STD, idx=dec))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return mvm_step, mae_step_flops(model, args.batch, vis.shape[1], dec.shape[1])

    mvm_step, flops = mvm_side(False)
    steps: dict[str, Callable[[bool], None]] = {"mvm": mvm_step}
    if args.compile:  # side by side with eager mvm, so the verdict on compile is one run's ratio
        steps["mvm_compiled"] = mvm_side(True)[0]
    if not args.no_hf:
        hf = hf_model(args.model, args.frames, args.size, args.hf_attention).to(device)
        hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=fused)
        pixel_values = video.transpose(1, 2).contiguous()

        def hf_step(bf16: bool) -> None:
            with autocast(bf16):
                loss = hf(pixel_values=pixel_values, bool_masked_pos=mask).loss
            loss.backward()
            hf_opt.step()
            hf_opt.zero_grad(set_to_none=True)

        steps["transformers"] = hf_step
    return steps, flops


def timed(step: Callable[[bool], None], bf16: bool, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    step(bf16)
    sync(device)
    return time.perf_counter() - t0


def profile_table(step: Callable[[bool], None], bf16: bool, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        step(bf16)
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def _call(fn: Callable[[], object], _bf16: bool) -> None:
    fn()


def matmul_floor(step: Callable[[bool], None], bf16: bool, device: torch.device, top: int = 6) -> dict:
    """The step's matrix products timed alone: every ``mm`` / ``addmm`` / ``bmm`` of one step
    (shapes from the profiler), each shape timed in isolation on fresh operands (best of 5) and
    summed. What a step made only of its matmuls would take on this machine; the rest of the step
    time is everything else (softmax, norms, GELU, casts, AdamW, the target, Python)."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(bf16)
    calls = Counter((ev.name, tuple(tuple(x) for x in ev.input_shapes)) for ev in prof.events()
                    if ev.name in ("aten::mm", "aten::addmm", "aten::bmm"))
    dtype = torch.bfloat16 if bf16 else torch.float32
    total_s = total_flop = 0.0
    rows = []
    for (name, shapes), n in calls.items():
        a, b = (shapes[1], shapes[2]) if name == "aten::addmm" else (shapes[0], shapes[1])
        x, y = torch.randn(*a, device=device, dtype=dtype), torch.randn(*b, device=device, dtype=dtype)
        if name == "aten::addmm":
            fn = functools.partial(torch.addmm, torch.randn(*shapes[0], device=device, dtype=dtype), x, y)
        else:
            fn = functools.partial(torch.bmm if name == "aten::bmm" else torch.mm, x, y)
        flop = 2 * math.prod(a) * b[-1]
        fn()
        best = min(timed(functools.partial(_call, fn), False, device) for _ in range(5))
        total_s, total_flop = total_s + n * best, total_flop + n * flop
        rows.append({"op": name[6:], "shapes": [list(a), list(b)], "calls": n, "ms": round(n * best * 1e3, 2),
                     "gflops": round(flop / best / 1e9, 1)})
    rows.sort(key=lambda r: -r["ms"])
    return {"ms": total_s * 1e3, "gflop": total_flop / 1e9, "gflops": total_flop / total_s / 1e9, "top": rows[:top]}


def target_ms(args: argparse.Namespace, device: torch.device) -> float:
    """Best of 5: mvm's norm-pix target of the decoded tokens for the step's clips, in ms."""
    video, mask = step_inputs(args, device)
    dec = mask_to_indices(mask)
    norm_pix_target(video, 2, 16, MEAN, STD, idx=dec)
    return 1e3 * min(timed(lambda _: norm_pix_target(video, 2, 16, MEAN, STD, idx=dec), False, device)
                     for _ in range(5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="small")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per side and precision (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--peak-n", type=int, default=0, help="matmul size for the peak (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--no-hf", action="store_true", help="mvm only")
    p.add_argument("--fused-adamw", action="store_true", help="fused AdamW on CPU too (always on CUDA), both sides")
    p.add_argument("--compile", action="store_true", help="add a torch.compiled mvm side (train.compile)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing in mvm")
    p.add_argument("--profile", action="store_true", help="add per-op profiler tables (stderr)")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--floor", action="store_true",
                   help="add mvm's matmul floor per precision: its step's matrix products timed alone")
    p.add_argument("--hf-attention", choices=("sdpa", "eager"), default="sdpa",
                   help="transformers' attn_implementation (sdpa: its default)")
    p.add_argument("--heap", choices=("retain", "default"), default="retain",
                   help="retain: glibc keeps freed memory for reuse (what mvm's training loop sets on CPU), "
                        "for both sides; default: glibc's own adaptive mmap threshold")
    args = p.parse_args()
    device = torch.device(args.device)
    heap_retained = retain_heap(TRAIN_MAP_FROM) if args.heap == "retain" else False
    torch.manual_seed(0)
    steps, flops = make_steps(args, device)
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    times: dict[str, dict[str, list[float]]] = {s: {pr: [] for pr in precisions} for s in steps}
    for _ in range(args.warmup):
        for pr in precisions:
            for step in steps.values():
                step(pr == "bf16")
    n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    peaks = {pr: matmul_peak(torch.bfloat16 if pr == "bf16" else torch.float32, device, n) for pr in precisions}
    for _ in range(args.repeats):
        for pr in precisions:
            for side, step in steps.items():
                times[side][pr].append(timed(step, pr == "bf16", device))
    # Peak again after the steps: the machine is shared, keep the better of the two readings.
    peaks = {pr: max(peaks[pr], matmul_peak(torch.bfloat16 if pr == "bf16" else torch.float32, device, n))
             for pr in precisions}
    result: dict = {
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "model": args.model, "batch": args.batch, "frames": args.frames, "size": args.size, "mask_ratio": args.ratio,
        "heap": args.heap, "heap_retained": heap_retained, "hf_attention": args.hf_attention,
        "compile": args.compile, "checkpointing": args.checkpointing, "fused_adamw": device.type == "cuda" or args.fused_adamw,
        "step_gflop": flops / 1e9, "matmul_peak_gflops": {pr: v / 1e9 for pr, v in peaks.items()}, "sides": {},
    }
    for side in steps:
        result["sides"][side] = {}
        for pr in precisions:
            med = statistics.median(times[side][pr])
            result["sides"][side][pr] = {
                "step_s_median": med, "step_s_min": min(times[side][pr]), "step_s_all": times[side][pr], "gflops": flops / med / 1e9,
                "mfu_vs_bf16_peak": flops / med / peaks.get("bf16", peaks[pr]),
                "mfu_vs_own_precision_peak": flops / med / peaks[pr]}
    best = {side: min(v["step_s_median"] for v in result["sides"][side].values()) for side in steps}
    result["fastest_step_s"] = best
    if "mvm_compiled" in best:
        result["compile_speedup_per_precision"] = {
            pr: result["sides"]["mvm"][pr]["step_s_median"] / result["sides"]["mvm_compiled"][pr]["step_s_median"]
            for pr in precisions}
    if "transformers" in best:
        result["speedup_fastest_vs_fastest"] = best["transformers"] / best["mvm"]
        result["speedup_per_precision"] = {
            pr: result["sides"]["transformers"][pr]["step_s_median"] / result["sides"]["mvm"][pr]["step_s_median"]
            for pr in precisions}
    result["norm_pix_target_ms"] = target_ms(args, device)
    if args.floor:
        result["matmul_floor"] = {pr: matmul_floor(steps["mvm"], pr == "bf16", device) for pr in precisions}
    if args.profile:
        import sys

        for side, step in steps.items():
            for pr in precisions:
                print(f"\n=== profile {side} {pr} ===\n" + profile_table(step, pr == "bf16", args.profile_rows),
                      file=sys.stderr)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
