"""The fine-tuning EMA under FSDP2: time per update and bytes kept per rank, this tree's sharded
average against the gather-every-step average of an older revision. Prints JSON (rank 0).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ema.py                 # 2 ranks, gloo, CPU, ~1 min
    PYTHONPATH=src .venv/bin/python benchmarks/bench_ema.py --prev 3318932 --model vit-s --updates 12

Launches itself under ``torch.distributed.run`` (``--ranks`` processes). The model is a ViT
classifier (400 classes) wrapped as ``train.parallel=fsdp`` wraps it; both EMAs follow the same
sharded model. ``--prev``'s ``src/mvm/train/ema.py`` is read with ``git show``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _old_ema(rev: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/mvm/train/ema.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "ema_prev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ema_prev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModelEma


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from mvm.models.classifier import VideoClassifier
    from mvm.models.variants import build_encoder
    from mvm.train import distributed as mdist
    from mvm.train.ema import ModelEma

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = VideoClassifier(build_encoder(args.model, tubelet=2, patch=16, final_norm=False), 400)
    emas = {"gather_every_step_prev": _old_ema(args.prev)(model, 0.9999), "sharded_now": ModelEma(model, 0.9999)}
    model = mdist.wrap_model(model, mdist.DistInfo(rank, world, rank), "fsdp", torch.device("cpu"))
    taken = torch.tensor(True)
    out: dict = {"model": args.model, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                 "ranks": world, "backend": "gloo", "device": "cpu", "prev": args.prev, "updates": args.updates}
    for name, ema in emas.items():
        times = []
        for _ in range(args.updates):
            dist.barrier()
            t0 = time.perf_counter()
            ema.update(model, taken)
            times.append(time.perf_counter() - t0)
        kept = ema.nbytes() if hasattr(ema, "nbytes") else sum(
            t.numel() * t.element_size() for t in ema.module.state_dict().values())
        out[name] = {"median_update_ms": round(1e3 * statistics.median(times[2:]), 2), "mib_kept_per_rank": round(kept / 2**20, 1)}
    dist.barrier()
    t0 = time.perf_counter()
    emas["sharded_now"].gather(keep=rank == 0)  # what a checkpoint or a validation now pays, once
    out["sharded_now"]["gather_ms"] = round(1e3 * (time.perf_counter() - t0), 1)
    if rank == 0:
        print(json.dumps({"ema_fsdp": out}, indent=1))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prev", default="3318932", help="revision whose EMA gathers every weight each step")
    ap.add_argument("--model", default="vit-s")
    ap.add_argument("--updates", type=int, default=12, help="timed updates per EMA (median of all but the first 2)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.ranks}", "--rdzv-backend=c10d",
           "--rdzv-endpoint=127.0.0.1:0", __file__, "--worker", "--prev", args.prev, "--model", args.model,
           "--updates", str(args.updates)]
    raise SystemExit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
