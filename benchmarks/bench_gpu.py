"""Pretraining throughput on one GPU: model-only clips/s and MFU, peak memory, eager vs torch.compile,
and (``--loader``) end to end with mvm's own loader. Prints JSON (partial rows on stderr as they come).

    python benchmarks/bench_gpu.py                       # ViT-B and ViT-L, 16x224, bf16, eager + compile (~4-6 min on an H100)
    python benchmarks/bench_gpu.py --quick               # ViT-B only, fewer steps (~1-2 min)
    python benchmarks/bench_gpu.py --models base --no-compile --batch 64
    python benchmarks/bench_gpu.py --loader --workers 8 14   # + end to end (needs PyAV; synthetic 256 px set unless --data)
    python benchmarks/bench_gpu.py --quick --loop --workers 14 --data .footage --loader-steps 30  # + mvm pretrain's loop
    python benchmarks/bench_gpu.py --quick --profile     # + where each step's device time goes (kernels by category)

A step: bf16 autocast forward on a 90% tube mask (every masked token decoded), norm-pix target,
masked MSE, backward, fused AdamW. The model-only part needs no PyAV: the clip and masks are made
on the GPU once and reused. MFU = analytic matmul FLOPs of the step (``mvm.models.flops``: encoder
on visible tokens, decoder on all, attention, x3 for forward + backward) / step time / the dense bf16
peak measured here (best of 8192^3 matmuls, same run). A configuration that runs out of memory is
retried at half the batch. The end-to-end mode reads clips through ``mvm.train.pretrain.build_loader``
(decode, crop, resize, normalise, masks in the collate step) with N worker processes, and reports
clips/s and the share of wall time the GPU step waited for data (it synchronises each step to
split the time); ``--loop`` trains through ``mvm pretrain``'s loop itself, which reads nothing back
inside a step, and reports its logged clips/s and data-wait share.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Any

import torch

from mvm.grid import TokenGrid
from mvm.models import build_mae
from mvm.models.flops import mae_step_flops

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEFAULT_BATCH = {"small": 64, "base": 64, "large": 32, "huge": 16}


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), file=sys.stderr, flush=True)


def bf16_peak(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


def tube_indices(batch: int, grid: tuple[int, int, int], ratio: float, device: torch.device,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Visible and masked token indices ``[B, Nv]``, ``[B, Nm]`` of a tube mask (ascending)."""
    t, h, w = grid
    k = int(ratio * h * w)
    masked = torch.zeros(batch, h * w, dtype=torch.bool)
    for i in range(batch):
        masked[i, torch.randperm(h * w, generator=gen)[:k]] = True
    masked = masked.repeat(1, t)
    n = masked.shape[1]
    order = torch.arange(n).expand(batch, -1)
    vis = order[~masked].view(batch, -1)
    dec = order[masked].view(batch, -1)
    return vis.to(device), dec.to(device)


def make_step(model: torch.nn.Module, opt: torch.optim.Optimizer, tubelet: int, patch: int):
    from mvm.targets import masked_mse, norm_pix_target

    mean = torch.tensor(MEAN)
    std = torch.tensor(STD)

    def step(video: torch.Tensor, vis: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        with torch.autocast(video.device.type, dtype=torch.bfloat16):
            pred = model(video, vis, dec)
        target = norm_pix_target(video, tubelet, patch, mean.to(video.device), std.to(video.device))
        loss = masked_mse(pred.float(), target, dec)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def setup(name: str, batch: int, compile_: bool, frames: int, size: int, device: torch.device):
    """Model, its (compiled) runner, fused AdamW, the step, a random clip batch and its tube mask."""
    from mvm.train.compile import maybe_compile

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_mae(name).to(device)
    runner = maybe_compile(model, compile_, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step = make_step(runner, opt, 2, 16)
    video = torch.randn(batch, 3, frames, size, size, device=device)
    vis, dec = tube_indices(batch, (frames // 2, size // 16, size // 16), 0.9, device, gen)
    return model, runner, opt, step, video, vis, dec


#: kernel (GPU) or op (CPU) name fragments -> category, first match wins
CATEGORIES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "::mm", "::bmm", "::addmm", "::baddbmm", "matmul")),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("optimizer", ("adam",)),
    ("copy_cast", ("copy", "cast", "memcpy", "memset")),
)


def category(kernel: str) -> str:
    low = kernel.lower()
    return next((c for c, keys in CATEGORIES if any(k in low for k in keys)), "other")


def profile_steps(name: str, batch: int, compile_: bool, frames: int, size: int, device: torch.device,
                  steps: int = 3, warmup: int = 3, top: int = 20) -> dict[str, Any]:
    """Where a step's device time goes (``torch.profiler``): per step, the wall time, the time the
    device was busy with kernels (on CUDA; the ops' own CPU time on CPU), that time by category
    (matmul, attention, layer norm, optimizer, copies and casts, other) and the ``top`` kernels.
    A busy share well under 1 means the GPU waits for the host (launches, Python): what CUDA graphs
    or ``torch.compile`` remove; a small matmul share means the rest of the step is what to fuse."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model, runner, opt, step, video, vis, dec = setup(name, batch, compile_, frames, size, device)
    for _ in range(warmup):
        step(video, vis, dec)
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(video, vis, dec)
        sync()
    wall = (time.perf_counter() - t0) / steps
    kernels: dict[str, float] = {}
    for e in prof.key_averages():
        if cuda:  # kernels are the entries that ran on the device; their self time is the kernel's
            if "cuda" not in str(getattr(e, "device_type", "")).lower():
                continue
            t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        else:  # the ops' own time (children excluded), so nothing is counted twice
            t = e.self_cpu_time_total
        if t > 0:
            kernels[e.key] = kernels.get(e.key, 0.0) + t / 1e3 / steps  # us -> ms per step
    busy = sum(kernels.values())
    by_cat: dict[str, float] = {}
    for k, t in kernels.items():
        by_cat[category(k)] = by_cat.get(category(k), 0.0) + t
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    del model, runner, opt
    return {"model": name, "batch": batch, "compile": compile_, "steps_profiled": steps, "wall_ms": wall * 1e3,
            "device_busy_ms": busy, "busy_share": busy / (wall * 1e3) if wall else None,
            "by_category_ms": {k: round(v, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
            "by_category_share": {k: round(v / busy, 4) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
            "top": [{"name": k[:160], "ms": round(t, 3), "share": round(t / busy, 4), "category": category(k)}
                    for k, t in ranked]}


def model_only(name: str, batch: int, compile_: bool, steps: int, warmup: int, frames: int, size: int,
               peak: float, device: torch.device) -> dict[str, Any]:
    """clips/s, MFU and peak memory of one configuration (halving the batch on OOM)."""
    while True:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            model, runner, opt, step, video, vis, dec = setup(name, batch, compile_, frames, size, device)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(warmup):
                step(video, vis, dec)
            torch.cuda.synchronize()
            warm_s = time.perf_counter() - t0
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                loss = step(video, vis, dec)
            end.record()
            torch.cuda.synchronize()
            step_s = start.elapsed_time(end) / 1000 / steps
            flops = mae_step_flops(model, batch, vis.shape[1], dec.shape[1])
            row = {"model": name, "batch": batch, "compile": compile_,
                   "compiled_ok": bool(getattr(runner, "compiled", False)) if compile_ else False,
                   "compile_error": getattr(runner, "error", None), "step_ms": step_s * 1000,
                   "clips_per_s": batch / step_s, "step_tflop": flops / 1e12, "tflops": flops / step_s / 1e12,
                   "mfu": flops / step_s / peak, "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2 ** 30,
                   "warmup_s": warm_s, "loss": float(loss)}
            del model, runner, opt, video
            return row
        except torch.OutOfMemoryError:
            model = runner = opt = video = step = None  # free this attempt before the next
            gc.collect()
            torch.cuda.empty_cache()
            if batch <= 1:
                return {"model": name, "batch": batch, "compile": compile_, "error": "out of memory at batch 1"}
            batch //= 2
            emit({"model": name, "compile": compile_, "note": f"out of memory; retrying at batch {batch}"})


def _loader_config(args: argparse.Namespace, workers: int) -> Any:
    """The pretraining config both end-to-end modes train with: ``--loader-model``, ``--frames``,
    ``--size``, ``--repeat``, ``--loader-batch``, N workers, no motion; ``--data`` or a synthetic set."""
    import tempfile

    from mvm.config import Config

    cfg = Config()
    cfg.model.name = args.loader_model
    cfg.data.frames, cfg.data.size, cfg.data.workers = args.frames, args.size, workers
    cfg.data.repeat = args.repeat
    cfg.data.motion = "none"
    cfg.optim.batch_size = args.loader_batch
    if args.data:
        cfg.data.train = args.data
    else:
        from mvm.data.synth import make_synthetic

        root = args.synth_dir or tempfile.mkdtemp(prefix="mvm_gpu_synth_")
        if not os.path.exists(f"{root}/train.csv"):
            make_synthetic(root, clips=args.synth_clips, val_clips=8, frames=64, size=256, workers=16)
        args.synth_dir = root
        cfg.data.train = f"{root}/train.csv"
    return cfg


def end_to_end(args: argparse.Namespace, workers: int, device: torch.device) -> dict[str, Any]:
    """Training steps fed by mvm's loader with ``workers`` processes: clips/s and data-wait share."""
    from mvm.data.transforms import normalise_pixels
    from mvm.masking.base import mask_to_indices
    from mvm.train.pretrain import build_loader

    cfg = _loader_config(args, workers)
    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    model = build_mae(cfg.model.name).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step = make_step(model, opt, cfg.model.tubelet, cfg.model.patch)
    _, loader = build_loader(cfg, grid, 0)
    it = iter(loader)
    wait = busy = 0.0
    clips = 0
    t_start = None
    for i in range(args.loader_warmup + args.loader_steps):
        t0 = time.perf_counter()
        batch = next(it)
        # uint8 clips from the loader, normalised on the GPU as PretrainTask.loss does
        video = normalise_pixels(batch["video"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
        vis = mask_to_indices(~batch["encoder_mask"]).to(device, non_blocking=True)
        dec = mask_to_indices(batch["decoder_mask"]).to(device, non_blocking=True)
        t1 = time.perf_counter()
        step(video, vis, dec)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i == args.loader_warmup:
            t_start = t0
        if i >= args.loader_warmup:
            wait, busy, clips = wait + t1 - t0, busy + t2 - t1, clips + video.shape[0]
    total = time.perf_counter() - t_start
    del it, loader
    return {"mode": "end_to_end", "model": cfg.model.name, "workers": workers, "batch": cfg.optim.batch_size,
            "repeat": cfg.data.repeat, "clips_per_s": clips / total, "data_wait_share": wait / total,
            "gpu_step_share": busy / total, "data": cfg.data.train}


def through_the_loop(args: argparse.Namespace, workers: int, device: torch.device) -> dict[str, Any]:
    """``mvm pretrain``'s own loop (``run_pretrain``: loader, masks, bf16, fused AdamW, the guard,
    metrics; no host read inside a step) for a few steps: clips/s and data-wait share per log
    interval (every ``--loop-log-every`` steps: a log line reads the device), medians of the
    intervals after ``--loader-warmup`` steps, and the MFU those clips/s make. On CUDA it also
    counts the run's synchronising calls (``torch.cuda.set_sync_debug_mode``): about two per log
    line and a few at the start and end are the loop's own; more would be reads inside a step."""
    import statistics
    import tempfile
    import warnings

    from mvm.train.pretrain import run_pretrain

    every = args.loop_log_every
    cfg = _loader_config(args, workers)
    cfg.train.device, cfg.train.bf16, cfg.train.probe = device.type, True, False
    cfg.train.steps, cfg.train.log_every = args.loader_warmup + args.loader_steps, every
    cfg.train.ckpt_every = cfg.train.steps + 1
    cfg.train.out = tempfile.mkdtemp(prefix="mvm_loop_")
    cfg.train.compile = args.loop_compile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            summary = run_pretrain(cfg)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    with open(os.path.join(cfg.train.out, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    logged = [r for r in rows if "clips_per_s" in r]
    timed = [r for r in logged if r["step"] - every >= args.loader_warmup] or logged[-1:]
    clips_s = statistics.median(r["clips_per_s"] for r in timed)
    from mvm.masking import build_masks

    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    hidden = build_masks(cfg.mask)[0].count(grid)  # the config's tube mask; every hidden token decoded
    flops_per_clip = mae_step_flops(build_mae(cfg.model.name), 1, grid.num_tokens - hidden, hidden)
    return {"mode": "loop", "model": cfg.model.name, "workers": workers, "batch": cfg.optim.batch_size,
            "repeat": cfg.data.repeat, "compile": cfg.train.compile, "clips_per_s": clips_s,
            "data_wait_share": statistics.median(r["data_wait"] for r in timed),
            "mfu_at_peak": clips_s * flops_per_clip / args.peak if args.peak else None,
            "final_loss": summary.get("final_loss"), "intervals_timed": len(timed), "log_every": every,
            "steps": cfg.train.steps, "log_lines": len(logged),
            "cuda_syncs": syncs if device.type == "cuda" else None, "data": cfg.data.train}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["base", "large"])
    p.add_argument("--batch", type=int, default=0, help="clips per step (default: per model, halved on OOM)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--quick", action="store_true", help="ViT-B only, 8 timed steps")
    p.add_argument("--loader", action="store_true", help="also end to end with mvm's loader (needs PyAV)")
    p.add_argument("--workers", type=int, nargs="+", default=[8], help="loader worker counts to try")
    p.add_argument("--data", default="", help="training list for --loader (default: a synthetic 256 px set)")
    p.add_argument("--synth-dir", default="")
    p.add_argument("--synth-clips", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1, help="data.repeat for --loader")
    p.add_argument("--loader-model", default="base")
    p.add_argument("--loader-batch", type=int, default=32)
    p.add_argument("--loader-steps", type=int, default=15)
    p.add_argument("--loader-warmup", type=int, default=3)
    p.add_argument("--loop", action="store_true",
                   help="also end to end through mvm pretrain's own loop (run_pretrain; needs PyAV)")
    p.add_argument("--loop-compile", action="store_true", help="train.compile=true for --loop")
    p.add_argument("--loop-log-every", type=int, default=5, help="train.log_every for --loop")
    p.add_argument("--profile", action="store_true",
                   help="also where the device time of a step goes (torch.profiler), per model, eager and compiled")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        sys.exit(1)
    if args.quick:
        args.models, args.steps, args.warmup = ["base"], 8, 3
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = bf16_peak(device)
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
                              "frames": args.frames, "size": args.size, "mask": "tube 0.9, decode all masked",
                              "bf16_peak_tflops": peak / 1e12, "model_only": [], "end_to_end": []}
    emit({"bf16_peak_tflops": peak / 1e12, "gpu": result["gpu"]})
    args.peak = peak
    for name in args.models:
        for compile_ in ([False] if args.no_compile else [False, True]):
            batch = args.batch or DEFAULT_BATCH.get(name, 16)
            try:
                row = model_only(name, batch, compile_, args.steps, args.warmup, args.frames, args.size, peak, device)
            except Exception as exc:  # noqa: BLE001 - one failing configuration must not lose the others
                row = {"model": name, "compile": compile_, "error": f"{type(exc).__name__}: {exc}"[:400]}
            result["model_only"].append(row)
            emit(row)
            if args.profile and "error" not in row:
                try:
                    prof = profile_steps(name, row["batch"], compile_, args.frames, args.size, device)
                except Exception as exc:  # noqa: BLE001
                    prof = {"model": name, "compile": compile_, "error": f"{type(exc).__name__}: {exc}"[:400]}
                result.setdefault("profile", []).append(prof)
                emit(prof)
    if args.loader or args.loop:
        try:
            import av  # noqa: F401
        except ImportError:
            result["end_to_end"].append({"error": "PyAV is not installed: end-to-end mode skipped"})
        else:
            modes = [f for f, on in ((end_to_end, args.loader), (through_the_loop, args.loop)) if on]
            for run in modes:
                for w in args.workers:
                    try:
                        row = run(args, w, device)
                    except Exception as exc:  # noqa: BLE001
                        row = {"mode": run.__name__, "workers": w, "error": f"{type(exc).__name__}: {exc}"[:400]}
                    result["end_to_end"].append(row)
                    emit(row)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
