"""Fine-tuning task: layer decay, where encoders come from, position tables, and kill/resume exactness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mvm.config import load_config
from mvm.models import build_mae
from mvm.models.classifier import VideoClassifier
from mvm.models.variants import build_encoder
from mvm.train import checkpoint as ckpt_io
from mvm.train.finetune import (
    FinetuneTask,
    checkpoint_geometry,
    fit_positions,
    load_encoder,
    resolve_init,
    set_drop_path,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_layer_decay_groups_embedding_to_head():
    cfg = load_config("ft-synthetic", ["finetune.layer_decay=0.5"])
    model = VideoClassifier(build_encoder("tiny", patch=8, final_norm=False), 4)
    depth = len(model.encoder.blocks)
    scale = {id(p): g["lr_scale"] for g in FinetuneTask(cfg).param_groups(model) for p in g["params"]}
    assert scale[id(model.encoder.patch_embed.proj.weight)] == 0.5 ** (depth + 1)
    assert scale[id(model.head.weight)] == 1.0 and scale[id(model.fc_norm.weight)] == 1.0
    for i, blk in enumerate(model.encoder.blocks):
        assert scale[id(blk.attn.qkv.weight)] == 0.5 ** (depth - i)
    assert len(scale) == sum(1 for _ in model.parameters())  # every parameter is in a group


def _pretrain_run(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    cfg = load_config("tiny-synthetic", ["data.frames=8", "data.size=32"])
    torch.manual_seed(0)
    mae = build_mae("tiny", patch=8, motion_dim=2)
    run = tmp_path / "pre"
    ckpt_io.save_checkpoint(run, 3, mae, {}, {"kind": "pretrain", "config": cfg.to_dict()})
    return run, mae


def test_encoder_from_a_pretraining_run_folder(tmp_path):
    run, mae = _pretrain_run(tmp_path)
    assert resolve_init(run) == run / "ckpt-0000003"
    geo = checkpoint_geometry(run)
    assert geo["model.name"] == "tiny" and geo["model.patch"] == 8 and geo["data.frames"] == 8
    assert geo["data.size"] == 32
    enc = load_encoder(run)
    assert torch.equal(enc.blocks[2].mlp.fc1.weight, mae.encoder.blocks[2].mlp.fc1.weight)
    set_drop_path(enc, 0.2)
    assert enc.blocks[0].drop_path.__class__.__name__ == "Identity" and enc.blocks[-1].drop_path.p == 0.2
    with pytest.raises(ckpt_io.CheckpointError, match="no checkpoint"):
        resolve_init(tmp_path)
    with pytest.raises(ckpt_io.CheckpointError, match="no such"):
        resolve_init(tmp_path / "nope")


def test_learned_position_table_is_resampled_to_the_new_grid():
    from mvm.grid import TokenGrid

    enc = build_encoder("tiny", patch=8)
    enc.use_learned_pos_embed(torch.randn(1, 2 * 2 * 2, enc.dim), (2, 2, 2))
    grid = TokenGrid.from_clip(8, 32, 2, 8)  # (4, 4, 4)
    fit_positions(enc, grid)
    assert enc.pos_grid == (4, 4, 4) and enc.pos_embed.shape == (1, 64, enc.dim)
    assert enc(torch.zeros(1, 3, 8, 32, 32)).shape == (1, 64, enc.dim)


# ---------------------------------------------------------------------------------------------
# SIGKILL mid-run, then --resume: the same weights (and EMA) as an uninterrupted run


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mvm.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, clips=16, val_clips=8, frames=16, size=32, seed=0)
    return root


def _cli(synth: Path, init: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["finetune", "--config", "ft-synthetic", "--init", str(init), "--data", str(synth / "train.csv"),
            "--val", str(synth / "val.csv"), "--out", str(out), "--steps", "8"]
    for o in ("data.workers=0", "optim.batch_size=4", "optim.warmup_steps=2", "train.log_every=1",
              "train.ckpt_every=4", "train.eval_every=4", "train.keep_ckpts=5", "train.bf16=false",
              "finetune.ema=true", "finetune.ema_decay=0.5"):
        args += ["--set", o]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mvm.cli", *args, *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(synth, tmp_path):
    init, _ = _pretrain_run(tmp_path)
    ref = _cli(synth, init, tmp_path / "ref")
    killed = _cli(synth, init, tmp_path / "killed")
    t0 = time.time()
    while not (tmp_path / "killed" / "ckpt-0000004" / "meta.json").exists():
        assert killed.poll() is None, killed.communicate()
        assert time.time() - t0 < 300
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    resumed = _cli(synth, init, tmp_path / "killed", "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "ref" / "ckpt-0000008" / name))
        b = load_file(str(tmp_path / "killed" / "ckpt-0000008" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    import json

    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert 0 <= summary["val_top1"] <= 1 and summary["best_val_top1"] >= summary["val_top1"]
    assert (tmp_path / "killed" / "best" / "model.safetensors").is_file()
