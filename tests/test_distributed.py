"""torchrun with two CPU processes (gloo): DDP and FSDP2 train the same model to the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mvm.data.datasets import EpochSampler

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_ranks_partition_the_global_order():
    from itertools import islice

    glob = list(islice(iter(EpochSampler(10, seed=3)), 20))
    shards = [list(islice(iter(EpochSampler(10, seed=3, num_replicas=2, rank=r)), 10)) for r in range(2)]
    assert shards[0] == glob[0::2] and shards[1] == glob[1::2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mvm.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, clips=8, val_clips=8, frames=8, size=32, seed=0)
    return root


def _torchrun(synth: Path, out: Path, mode: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    sets = [f"data.train={synth / 'train.csv'}", f"data.val={synth / 'val.csv'}", "data.frames=8",
            "data.size=32", "data.workers=0", "model.patch=8", "optim.batch_size=2", "train.steps=4",
            f"train.out={out}", f"train.parallel={mode}", "train.probe=false", *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=127.0.0.1:0",
           "-m", "mvm.cli", "pretrain", "--config", "tiny-synthetic"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_and_fsdp_agree(synth, tmp_path):
    """DDP and FSDP2 agree, also with blocks recomputed in pieces (whose calls must keep FSDP's
    hooks; pieces against whole blocks differ by float rounding, which AdamW's first steps magnify,
    so each is compared with its own kind)."""
    weights = {}
    pieces = ("model.checkpointing=true", "model.recompute_chunks=2")
    runs = {"ddp": ("ddp", ()), "fsdp": ("fsdp", ()), "ddp_pieces": ("ddp", pieces), "fsdp_pieces": ("fsdp", pieces)}
    for name, (mode, extra) in runs.items():
        res = _torchrun(synth, tmp_path / name, mode, extra)
        assert res.returncode == 0, res.stderr[-3000:]
        weights[name] = load_file(str(tmp_path / name / "ckpt-0000004" / "model.safetensors"))
    for a, b in (("ddp", "fsdp"), ("ddp_pieces", "fsdp_pieces")):
        assert weights[a].keys() == weights[b].keys()
        for k in weights[a]:
            torch.testing.assert_close(weights[a][k], weights[b][k], rtol=1e-4, atol=1e-5, msg=f"{b} {k}")
