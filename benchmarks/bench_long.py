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

The target is norm-pix computed for the decoded tokens only (``norm_pix_target(..., idx=)``, as
``PretrainTask.loss`` does; ``--target full``: the whole clip's target, then gathered). The loss is
``torch.mean((pred - target) ** 2)`` as the loop writes it (``--loss written``) or
``mvm.targets.mse`` (``--loss mse``: one fused op, the same numbers, none of the written form's
pred-sized temporaries). As in the loop, prediction and target are gone before ``backward``.

Memory: on CPU the peak resident set (``VmHWM``) over the steps, and ``step_mb`` = that
minus the resident set just before the first step (model, clip and masks in memory);
``step_mb_each`` is the same per step (the first is the warm-up); ``warm_step_mb`` is the least,
over the steps after the warm-up, of a step's peak minus the resident set just before that step
(what a step adds to a process that has run one, as every step of a training run after its
first does; the first backward's code pages and thread and BLAS buffers are then in place); on CUDA
``torch.cuda.max_memory_allocated`` and the same difference. The resident set also holds what
glibc keeps of freed blocks (``--mmap-threshold`` fixes its adaptive threshold; ``--heap retain``
keeps every freed block, as mvm's training loop does on CPU) and code and
buffers the first step brings in. ``--profile`` first runs one step under ``torch.profiler`` and
reports the peak of live tensor bytes (allocator-independent, the CPU counterpart of
``max_memory_allocated``) and what holds it (:func:`live_tensor_peak`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = {"none": ("none", 1.0), "running_cell": ("running_cell", 0.5), "random15": ("random", 0.15)}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def hwm_mb(reset: bool = False) -> float:
    """Peak resident set (VmHWM) in MB; ``reset``: start a new peak from now (Linux ``clear_refs``)."""
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    return peak


def fix_mmap_threshold(nbytes: int) -> None:
    """glibc ``mallopt(M_MMAP_THRESHOLD, nbytes)``: every block of ``nbytes`` or more gets its own
    mapping, given back to the system when freed. By default the threshold adapts: after a large
    block is freed it rises to that block's size (up to 32 MB), and later blocks below it come
    from the heap, whose freed memory stays resident (what ``MALLOC_MMAP_THRESHOLD_`` sets)."""
    import ctypes

    if not ctypes.CDLL("libc.so.6").mallopt(-3, int(nbytes)):  # M_MMAP_THRESHOLD
        raise RuntimeError(f"mallopt(M_MMAP_THRESHOLD, {nbytes}) failed")


def live_tensor_peak(prof, top: int = 14) -> dict:
    """Peak of live CPU tensor bytes in a ``torch.profiler`` run (``profile_memory=True``, ``with_stack=True``)
    and what is live at that moment, grouped by phase and the innermost mvm line that allocated it.

    Phases: ``forward``; ``recompute`` (forward code run again inside the backward pass: activation
    checkpointing); ``backward`` (autograd's own buffers); ``grads`` (allocated in backward and
    still live when the step ends: the parameters' gradients).
    """
    from torch._C._profiler import _EventType

    allocs = []  # (time, ptr, bytes (negative: free), chain of enclosing event names)
    stack = [(node, ()) for node in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        node, chain = stack.pop()
        if node.tag == _EventType.Allocation:
            f = node.extra_fields
            if f.device.type == "cpu":
                allocs.append((node.start_time_ns, f.ptr, f.alloc_size, chain))
            continue
        stack.extend((c, chain + (node.name,)) for c in node.children)
    allocs.sort(key=lambda a: a[0])
    live: dict[int, tuple[int, tuple]] = {}
    cur = peak = 0
    at_peak: dict[int, tuple[int, tuple]] = {}
    reused = 0  # allocations at an address still live (a free the profiler did not record)
    for _, ptr, size, chain in allocs:
        if size > 0:
            if ptr in live:
                reused += 1
                cur -= live.pop(ptr)[0]
            live[ptr] = (size, chain)
            cur += size
        elif ptr in live:
            cur -= live.pop(ptr)[0]
        if cur > peak:
            peak, at_peak = cur, dict(live)
    groups: dict[str, list] = {}
    for ptr, (size, chain) in at_peak.items():
        in_bwd = any(c.startswith("autograd::engine::evaluate_function") for c in chain)
        frames = [c for c in chain if "mvm" in c and ".py(" in c] or [c for c in chain if "bench_long" in c]
        where = frames[-1].rsplit("/", 1)[-1] if frames else ""
        ops = [c for c in chain if c.startswith("aten::")]
        if in_bwd and ptr in live and live[ptr][1] is chain:
            key = "grads"
        elif in_bwd:
            key = f"recompute {where}" if where and "bench_long" not in where else f"backward {ops[0] if ops else ''}"
        else:
            key = f"forward {where}"
        g = groups.setdefault(f"{key} {ops[0] if ops and not key.startswith('backward') else ''}".strip(), [0, 0])
        g[0] += size
        g[1] += 1
    rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
    return {"live_peak_mb": peak / 2 ** 20, "live_end_mb": cur / 2 ** 20, "reused_live_ptrs": reused,
            "at_peak": {k: [round(v[0] / 2 ** 20, 1), v[1]] for k, v in rows[:top]},
            "at_peak_rest_mb": sum(v[0] for _, v in rows[top:]) / 2 ** 20}


def run_one(args: argparse.Namespace) -> dict:
    """Measure one (frames, mode) configuration in this process."""
    if args.mmap_threshold:
        fix_mmap_threshold(args.mmap_threshold)
    if args.heap == "retain":
        from mvm.data.loader import TRAIN_MAP_FROM, retain_heap

        retain_heap(TRAIN_MAP_FROM)
    import torch

    from mvm.grid import TokenGrid
    from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext, mask_to_indices
    from mvm.models import build_mae
    from mvm.models.layers import set_recompute_chunks
    from mvm.targets import masked_mse, mse, norm_pix_target

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
    set_recompute_chunks(model, args.recompute_chunks)
    video = torch.randn(b, 3, args.one_frames, args.size, args.size, generator=gen).to(device)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def loss_fn() -> torch.Tensor:
        """What ``PretrainTask.loss`` does: prediction and target are locals, gone before backward."""
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(video, vis_idx, dec_idx)
        if args.target == "full":  # the whole clip's target [B, N, D], gathered by masked_mse
            return masked_mse(pred.float(), norm_pix_target(video, 2, 16, mean, std), dec_idx)
        target = norm_pix_target(video, 2, 16, mean, std, idx=dec_idx)  # [B, Nd, D]: decoded tokens only
        if args.loss == "mse":
            return mse(pred, target)  # one fused op, same numbers
        return torch.mean((pred.float() - target) ** 2)  # as written in PretrainTask.loss today

    def step() -> None:
        loss_fn().backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2 ** 20
    else:
        before = rss_mb()
        hwm_mb(reset=True)
    extra: dict = {}
    if args.profile:  # one step under the profiler: live tensors, not resident memory
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=True) as prof:
            loss_fn().backward()
        extra = live_tensor_peak(prof)
        model.zero_grad(set_to_none=True)
        del prof
        extra["profiled_step_mb"] = hwm_mb(reset=True) - before
    times, peaks, warm = [], [], []
    for _ in range(1 + args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        else:
            now = rss_mb()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if device.type != "cuda":
            peak_now = hwm_mb(reset=True)
            peaks.append(peak_now - before)
            warm.append(peak_now - now)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:  # the steps' peak (not the profiled one's: the profiler holds memory of its own)
        peak = before + max(peaks)
        extra["step_mb_each"] = peaks  # peak RSS of each step (first: warm-up) minus before
        # ... minus the resident set just before that step instead: what a step adds to a process
        # that has run one (code pages, thread and BLAS buffers of the first backward in place)
        extra["warm_step_mb"] = min(warm[1:]) if len(warm) > 1 else None
        extra["warm_step_mb_each"] = warm
    return {"frames": args.one_frames, "mode": args.one_mode, "batch": b, "tokens": grid.num_tokens,
            "visible": int(vis_idx.shape[1]), "decoded": int(dec_idx.shape[1]),
            "step_s": min(times[1:]) if len(times) > 1 else times[0], "step_s_all": times,
            "peak_mb": peak, "before_mb": before, "step_mb": peak - before, **extra}


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
    p.add_argument("--recompute-chunks", type=int, default=0,
                   help="with --checkpointing: recompute blocks in pieces, attention in up to N head groups, "
                        "the MLP in N token chunks (model.recompute_chunks)")
    p.add_argument("--target", choices=["decoded", "full"], default="decoded")
    p.add_argument("--loss", choices=["written", "mse"], default="written",
                   help="written: torch.mean((pred - target) ** 2) as the loop has it; mse: mvm.targets.mse")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each subprocess (0: default)")
    p.add_argument("--mmap-threshold", type=int, default=0,
                   help="CPU: fix glibc's mmap threshold at this many bytes (0: glibc's adaptive default)")
    p.add_argument("--heap", choices=("default", "retain"), default="default",
                   help="CPU: retain = glibc keeps freed memory (no mmap), as mvm's training loop sets it on CPU")
    p.add_argument("--profile", action="store_true",
                   help="CPU: first one step under torch.profiler: live tensor peak and what holds it "
                        "(the resident-memory figures then include the profiler's own)")
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
                   "--repeats", str(args.repeats), "--batch", str(args.batch), "--target", args.target, "--loss", args.loss, "--threads", str(args.threads),
                   "--mmap-threshold", str(args.mmap_threshold), "--heap", args.heap, "--recompute-chunks", str(args.recompute_chunks)]
            cmd += ["--bf16"] * args.bf16 + ["--checkpointing"] * args.checkpointing + ["--profile"] * args.profile
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
                                       **({"live_vs_none": by[m]["live_peak_mb"] / by["none"]["live_peak_mb"]}
                                          if "live_peak_mb" in by[m] else {}),
                                       "step_mem_vs_none": by[m]["step_mb"] / by["none"]["step_mb"],
                                       **({"warm_step_mem_vs_none": by[m]["warm_step_mb"] / by["none"]["warm_step_mb"]}
                                          if by[m].get("warm_step_mb") and by["none"].get("warm_step_mb") else {}),
                                       "peak_mem_vs_none": by[m]["peak_mb"] / by["none"]["peak_mb"]}
                                   for m in by if m != "none"}
    print(json.dumps({"device": args.device, "model": args.model, "size": args.size, "batch": args.batch, "bf16": args.bf16,
                      "checkpointing": args.checkpointing, "recompute_chunks": args.recompute_chunks, "target": args.target, "loss": args.loss,
                      "mmap_threshold": args.mmap_threshold, "heap": args.heap, "profile": args.profile, "rows": rows,
                      "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
