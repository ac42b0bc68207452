"""``mvm convert`` through the CLI: exports take the clip (frames, size) from the source, not 16 x 224.

The source is a real mvm training run folder (``config.toml`` + ``ckpt-*`` as pretraining writes
them) for a tiny model at 8 frames x 64 px; transformers must then run on such a clip and agree
with mvm. Tiny random weights, CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from mvm.cli import main
from mvm.config import load_config, to_toml
from mvm.interop import load_model, source_clip
from mvm.masking.base import mask_to_indices
from mvm.models import build_mae
from mvm.train.checkpoint import save_checkpoint

transformers = pytest.importorskip("transformers")
FRAMES, SIZE, PATCH = 8, 64, 8


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as ``mvm pretrain`` leaves it, for a 3-layer model trained at 8 frames x 64 px."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny-synthetic", [f"data.frames={FRAMES}", f"data.size={SIZE}", f"model.patch={PATCH}"])
    torch.manual_seed(0)
    mae = build_mae("tiny", patch=PATCH, depth=3, decoder_depth=1)
    with torch.no_grad():
        for p in mae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    (run / "config.toml").write_text(to_toml(cfg))
    save_checkpoint(run, 2, mae, {}, {"config": cfg.to_dict()})
    return run


def clip_and_mask(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(1, 3, FRAMES, SIZE, SIZE, generator=g)  # mvm layout [B, C, T, H, W]
    n = (FRAMES // 2) * (SIZE // PATCH) ** 2
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, torch.randperm(n, generator=g)[: int(0.75 * n)]] = True
    return video, mask


def test_source_clip_of_a_run_folder(run_dir: Path) -> None:
    assert source_clip(run_dir) == (FRAMES, SIZE)
    assert source_clip(next(run_dir.glob("ckpt-*"))) == (FRAMES, SIZE)
    assert source_clip(run_dir / "missing") == (None, None)


@torch.no_grad()
def test_export_takes_the_clip_from_the_run(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["convert", str(run_dir), str(tmp_path / "hf")]) == 0
    assert f"clip {FRAMES} frames x {SIZE} px" in capsys.readouterr().out
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_frames"], config["image_size"], config["patch_size"]) == (FRAMES, SIZE, PATCH)
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    video, mask = clip_and_mask()
    ref = hf(video.transpose(1, 2), bool_masked_pos=mask).logits  # the source's own clip runs
    mine = load_model(run_dir)(video, mask_to_indices(~mask), mask_to_indices(mask))
    assert float((mine - ref).abs().max() / ref.abs().max()) < 1e-4  # decoder.norm eps 1e-6 vs 1e-5


def test_clip_travels_through_mvm_and_original_files(run_dir: Path, tmp_path: Path, capsys) -> None:
    """run -> .safetensors -> .pth -> transformers keeps 8 x 64; --frames/--size still win."""
    assert main(["convert", str(run_dir), str(tmp_path / "m.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "o.pth")]) == 0
    assert main(["convert", str(tmp_path / "o.pth"), str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_frames"], config["image_size"]) == (FRAMES, SIZE)
    assert main(["convert", str(tmp_path / "o.pth"), str(tmp_path / "hf16"), "--frames", "16", "--size", "96"]) == 0
    config = json.loads((tmp_path / "hf16" / "config.json").read_text())
    assert (config["num_frames"], config["image_size"]) == (16, 96)
    capsys.readouterr()


def test_original_videomae_args_and_unknown_clip(tmp_path: Path, capsys) -> None:
    """An original .pth records its clip in ``args``; a file that records none says so in the output."""
    from mvm.interop import mvm_to_original

    mae = build_mae("tiny", patch=16, depth=1, decoder_depth=1)
    sd = mvm_to_original(mae)
    torch.save({"model": sd, "args": argparse.Namespace(num_frames=8, input_size=32)}, tmp_path / "orig.pth")
    assert main(["convert", str(tmp_path / "orig.pth"), str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_frames"], config["image_size"]) == (8, 32)
    torch.save({"model": sd}, tmp_path / "bare.pth")
    assert main(["convert", str(tmp_path / "bare.pth"), str(tmp_path / "hf2")]) == 0
    assert "does not record its clip" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "bare.pth"), str(tmp_path / "hf3"), "--frames", "7"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "bare.pth"), str(tmp_path / "hf4"), "--size", "0"]) == 2
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["convert", str(empty), str(tmp_path / "hf5")]) == 2
    assert "no config.json, model.safetensors or complete ckpt-*" in capsys.readouterr().err
    assert not (tmp_path / "hf3").exists() and not (tmp_path / "hf5").exists()


def test_sources_that_are_no_model_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """A video given as SRC, and a tokenizer run: exit 2, what the file is, nothing written (before:
    exit 1 with a warning about unsafe pickles, and "no patch embedding" for the tokenizer)."""
    import numpy as np

    from mvm.data.video_io import encode_video

    encode_video(tmp_path / "clip.mp4", np.zeros((4, 16, 16, 3), np.uint8))
    assert main(["convert", str(tmp_path / "clip.mp4"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mvm convert: {tmp_path / 'clip.mp4'}: not a PyTorch checkpoint") and "pickle" not in err
    ckpt = tmp_path / "tok" / "ckpt-0000001"
    ckpt.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(2, 2)}, str(ckpt / "model.safetensors"))
    (ckpt / "meta.json").write_text(json.dumps({"step": 1, "kind": "tokenizer"}))
    torch.save({}, ckpt / "state.pt")  # what makes a checkpoint complete
    assert main(["convert", str(tmp_path / "tok"), str(tmp_path / "hf")]) == 2
    assert "a tokenizer checkpoint, not a video MAE or classifier" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
