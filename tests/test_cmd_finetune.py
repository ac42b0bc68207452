"""`mvm finetune` and `mvm evaluate` end to end on a transformers VideoMAE checkpoint (random weights)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mvm.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mvm.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, clips=8, val_clips=8, frames=16, size=32, seed=0)
    return root


def test_transformers_checkpoint_through_finetune_and_evaluate(synth, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=32,
                                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                         use_mean_pooling=True, num_labels=5)
    hf_dir = tmp_path / "hf"
    transformers.VideoMAEForVideoClassification(config).save_pretrained(hf_dir)

    run = tmp_path / "run"
    rc = main(["finetune", "--init", str(hf_dir), "--data", str(synth / "train.csv"), "--val", str(synth / "val.csv"),
               "--out", str(run), "--steps", "2", "--json", "--set", "data.workers=0", "--set", "optim.batch_size=4",
               "--set", "train.eval_every=1", "--set", "optim.warmup_steps=1"])
    cap = capsys.readouterr()
    out = cap.out
    assert rc == 0, cap.err[-2000:]
    summary = json.loads(out[out.index("{"):])
    # the geometry came from the transformers config: 8 frames of 32 px, patch 8
    saved = (run / "config.toml").read_text()
    assert "frames = 8" in saved and "size = 32" in saved and "patch = 8" in saved
    assert 0 <= summary["val_top1"] <= 1 and "best_val_top1" in summary

    rc = main(["evaluate", str(run), "--data", str(synth / "val.csv"), "--views", "2x3", "--out", str(tmp_path / "ev"),
               "--json", "--workers", "0"])
    cap = capsys.readouterr()
    out = cap.out
    assert rc == 0, cap.err[-2000:]
    metrics = json.loads(out[out.index("{"):])
    assert metrics["videos"] == 8 and metrics["views"] == "2x3"
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
    rows = list(csv.reader(open(tmp_path / "ev" / "predictions.csv")))
    assert rows[0][:4] == ["path", "label", "class1", "score1"] and len(rows) == 9
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000


def test_evaluate_refuses_an_encoder_without_head(tmp_path, capsys):
    from mvm.interop.load import save_mvm
    from mvm.models.variants import build_encoder

    ckpt = save_mvm(build_encoder("tiny", patch=8), tmp_path / "enc.safetensors")
    (tmp_path / "v.txt").write_text("a.mp4 0\n")
    from mvm.data.synth import make_synthetic

    make_synthetic(tmp_path / "s", clips=2, val_clips=2, frames=8, size=32, seed=0)
    rc = main(["evaluate", str(ckpt), "--data", str(tmp_path / "s" / "val.csv"), "--frames", "8", "--size", "32"])
    assert rc == 2 and "fine-tune it first" in capsys.readouterr().err
