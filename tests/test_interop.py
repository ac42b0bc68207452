"""Weights in and out: transformers' VideoMAE, original VideoMAE .pth, mvm safetensors, safety.

Random weights, tiny configs (hidden 64, 2 layers). Agreement is measured as the max relative
error ``max|mvm - reference| / max|reference|`` and printed (run with ``-s`` to see it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path

import pytest
import torch

from mvm.interop import (
    InteropError,
    UnsafeCheckpointError,
    export_transformers,
    from_hf_model,
    load_model,
    mvm_to_original,
    save_mvm,
    save_original,
    spec_from_model,
)
from mvm.masking.base import mask_to_indices
from mvm.models import build_classifier, build_mae
from mvm.targets import masked_mse, norm_pix_target, pixel_target

transformers = pytest.importorskip("transformers")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TOL = 1e-5  # fp32 rounding on these sizes; measured figures in docs/interop.md

CONFIGS = {  # name: (VideoMAEConfig overrides)
    "f4-p16-t2-eps1e-12": dict(num_frames=4, image_size=32, patch_size=16, tubelet_size=2, num_attention_heads=2,
                               layer_norm_eps=1e-12, use_mean_pooling=False),
    "f8-p8-t2-eps1e-6": dict(num_frames=8, image_size=32, patch_size=8, tubelet_size=2, num_attention_heads=4,
                             layer_norm_eps=1e-6, use_mean_pooling=False, norm_pix_loss=False),
    "f4-p16-t1-nonorm": dict(num_frames=4, image_size=32, patch_size=16, tubelet_size=1, num_attention_heads=2,
                             layer_norm_eps=1e-6, use_mean_pooling=True, qkv_bias=False),
}


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


def report(record_property, what: str, err: float) -> None:
    record_property(what, err)
    print(f"\n[interop] {what}: max relative error {err:.2e}")


def hf_config(**overrides):
    base = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, decoder_hidden_size=32,
                decoder_num_hidden_layers=2, decoder_num_attention_heads=2, decoder_intermediate_size=64)
    return transformers.VideoMAEConfig(**{**base, **overrides})


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights everywhere (biases, norms and the mask token included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def clip_and_mask(cfg, batch: int = 2, ratio: float = 0.75, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=g)  # mvm layout
    n = (cfg.num_frames // cfg.tubelet_size) * (cfg.image_size // cfg.patch_size) ** 2
    mask = torch.zeros(batch, n, dtype=torch.bool)
    for i in range(batch):
        mask[i, torch.randperm(n, generator=g)[: int(ratio * n)]] = True
    return video, mask


def mvm_pretrain_outputs(model, video, mask, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    pred = model(video, mask_to_indices(~mask), mask_to_indices(mask))
    target_fn = norm_pix_target if cfg.norm_pix_loss else pixel_target
    loss = masked_mse(pred, target_fn(video, cfg.tubelet_size, cfg.patch_size, MEAN, STD), mask_to_indices(mask))
    return pred, loss


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_import_pretraining_matches_transformers(name: str, tmp_path: Path, record_property) -> None:
    cfg = hf_config(**CONFIGS[name])
    torch.manual_seed(0)
    hf = randomise(transformers.VideoMAEForPreTraining(cfg), 1)
    video, mask = clip_and_mask(cfg)
    ref = hf(video.transpose(1, 2), bool_masked_pos=mask)  # transformers takes [B, T, C, H, W]
    for how, model in (("memory", from_hf_model(hf)), ("folder", None)):
        if model is None:
            hf.save_pretrained(tmp_path / "hf")
            model = load_model(tmp_path / "hf")
        pred, loss = mvm_pretrain_outputs(model, video, mask, cfg)
        err = rel_err(pred, ref.logits)
        report(record_property, f"import pretraining {name} ({how})", err)
        assert err < TOL
        assert float(loss) == pytest.approx(float(ref.loss), rel=TOL)


@pytest.mark.parametrize("frames", [4, 8])
@torch.no_grad()
def test_import_classification_matches_transformers(frames: int, tmp_path: Path, record_property) -> None:
    cfg = hf_config(num_frames=frames, image_size=32, patch_size=16, num_attention_heads=4, layer_norm_eps=1e-12,
                    use_mean_pooling=True, num_labels=7)
    torch.manual_seed(0)
    hf = randomise(transformers.VideoMAEForVideoClassification(cfg), 2)
    video, _ = clip_and_mask(cfg, batch=3)
    ref = hf(video.transpose(1, 2)).logits
    hf.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    assert spec_from_model(model).kind == "classify" and model.num_classes == 7
    err = rel_err(model(video), ref)
    report(record_property, f"import classification f{frames}", err)
    assert err < TOL


@pytest.mark.parametrize("name", list(CONFIGS)[:2])
@torch.no_grad()
def test_export_reloads_in_transformers(name: str, tmp_path: Path, record_property) -> None:
    """transformers -> mvm -> transformers folder: from_pretrained with clean loading info, same outputs."""
    cfg = hf_config(**CONFIGS[name])
    torch.manual_seed(0)
    hf = randomise(transformers.VideoMAEForPreTraining(cfg), 3)
    model = from_hf_model(hf)
    export_transformers(model, tmp_path / "out", frames=cfg.num_frames, size=cfg.image_size)
    back, info = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert back.config.layer_norm_eps == cfg.layer_norm_eps
    video, mask = clip_and_mask(cfg, seed=1)
    err = rel_err(back.eval()(video.transpose(1, 2), bool_masked_pos=mask).logits,
                  hf(video.transpose(1, 2), bool_masked_pos=mask).logits)
    report(record_property, f"transformers -> mvm -> transformers {name}", err)
    assert err < TOL


@torch.no_grad()
def test_export_native_mvm_models(tmp_path: Path, record_property) -> None:
    """mvm-built models (eps 1e-6 everywhere) in transformers: decoder.norm / fc_norm get transformers'
    fixed eps 1e-5, the only difference left."""
    torch.manual_seed(0)
    mae = randomise(build_mae("tiny", tubelet=2, patch=16, dim=64, depth=2, heads=2, decoder_dim=32, decoder_heads=2), 4)
    export_transformers(mae, tmp_path / "mae", frames=4, size=32)
    hf, info = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "mae", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    cfg = hf.config
    video, mask = clip_and_mask(cfg)
    ref = hf.eval()(video.transpose(1, 2), bool_masked_pos=mask).logits
    err = rel_err(mae(video, mask_to_indices(~mask), mask_to_indices(mask)), ref)
    report(record_property, "native mvm pretraining -> transformers", err)
    assert err < 1e-4

    clf = randomise(build_classifier("tiny", 6, patch=16, dim=64, depth=2, heads=2), 5)
    export_transformers(clf, tmp_path / "clf", frames=4, size=32, labels=list("abcdef"))
    hfc, info = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "clf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert hfc.config.id2label[5] == "f"
    err = rel_err(clf(video), hfc.eval()(video.transpose(1, 2)).logits)
    report(record_property, "native mvm classifier -> transformers", err)
    assert err < 1e-4
    with pytest.raises(InteropError, match="layer scale"):
        export_transformers(build_mae("tiny", depth=1, init_values=0.1), tmp_path / "ls")


@torch.no_grad()
def test_original_pth_round_trip(tmp_path: Path) -> None:
    """mvm -> original-layout .pth -> mvm is exact, for pretraining and fine-tuned layouts."""
    torch.manual_seed(0)
    mae = randomise(build_mae("tiny", patch=16, dim=64, depth=2, heads=2, decoder_dim=32, decoder_heads=2), 6)
    video = torch.randn(2, 3, 4, 32, 32)
    vis, dec = torch.tensor([[0, 3], [2, 7]]), torch.tensor([[1, 2, 4, 5, 6, 7], [0, 1, 3, 4, 5, 6]])
    back = load_model(save_original(mae, tmp_path / "pretrain.pth"))
    assert torch.equal(back(video, vis, dec), mae(video, vis, dec))
    sd = torch.load(tmp_path / "pretrain.pth", weights_only=True)["model"]
    assert "encoder.blocks.0.attn.qkv.weight" in sd and "encoder.blocks.0.attn.q_bias" in sd
    assert {"mask_token", "encoder_to_decoder.weight", "decoder.head.weight", "encoder.patch_embed.proj.weight"} <= set(sd)

    clf = randomise(build_classifier("tiny", 4, patch=16, depth=2), 7)
    sd = mvm_to_original(clf)
    assert {"blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "fc_norm.weight", "head.weight"} <= set(sd)
    # As the original code saves it: wrapped, with argparse args, no mvm spec (heads from the width: tiny).
    torch.save({"module": sd, "epoch": 3, "args": argparse.Namespace(model="vit_tiny", lr=1e-3)}, tmp_path / "ft.pth")
    back = load_model(tmp_path / "ft.pth")
    assert back.encoder.heads == 3
    torch.testing.assert_close(back(video), clf(video), rtol=0, atol=0)


@torch.no_grad()
def test_learned_pos_embed_checkpoint(tmp_path: Path) -> None:
    clf = build_classifier("tiny", 3, patch=16, depth=1).eval()
    sd = mvm_to_original(clf)
    sd["pos_embed"] = torch.randn(1, 8, 192)
    torch.save({"model": sd}, tmp_path / "learned.pth")
    with pytest.raises(InteropError, match="frames and size"):
        load_model(tmp_path / "learned.pth")
    model = load_model(tmp_path / "learned.pth", frames=4, size=32)
    assert model.encoder.pos_grid == (2, 2, 2)
    assert model(torch.randn(1, 3, 8, 48, 48)).shape == (1, 3)  # another grid: table interpolated


@torch.no_grad()
def test_mvm_safetensors_and_training_checkpoint(tmp_path: Path) -> None:
    mae = randomise(build_mae("tiny", patch=16, depth=1, decoder_depth=1), 8)
    mae.decoder.norm.eps = 1e-5  # not inferable from shapes: must travel in the header
    back = load_model(save_mvm(mae, tmp_path / "m.safetensors"))
    assert back.decoder.norm.eps == 1e-5
    video = torch.randn(1, 3, 4, 32, 32)
    vis, dec = torch.tensor([[1, 6]]), torch.tensor([[0, 2, 3]])
    assert torch.equal(back(video, vis, dec), mae(video, vis, dec))
    # A training checkpoint folder (train/checkpoint.py layout): heads from the config's size name.
    from mvm.train.checkpoint import save_checkpoint

    mae.decoder.norm.eps = 1e-6  # training checkpoints carry no spec: mvm's defaults apply
    ckpt = save_checkpoint(tmp_path / "run", 5, mae, {}, {"config": {"model": {"name": "tiny"}}})
    assert torch.equal(load_model(ckpt)(video, vis, dec), mae(video, vis, dec))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": build_classifier("tiny", 2, depth=1).state_dict(), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        load_model(tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InteropError, match="junk.pth"):
        load_model(tmp_path / "junk.pth")
    with pytest.raises(InteropError, match="no such file"):
        load_model(tmp_path / "missing.pth")
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(InteropError, match="no tensor state dict"):
        load_model(tmp_path / "empty.pth")


def _cli(argv: list[str]) -> int:
    """``mvm.cli.main``; while sibling subcommands are still missing, the convert module alone."""
    try:
        for name in importlib.import_module("mvm.cli").COMMANDS:
            importlib.import_module(f"mvm.commands.{name}")
    except ModuleNotFoundError:
        from mvm.commands import convert

        p = argparse.ArgumentParser()
        convert.add_arguments(p)
        return convert.run(p.parse_args(argv[1:]))
    from mvm.cli import main

    return main(argv)


@torch.no_grad()
def test_convert_command(tmp_path: Path, capsys) -> None:
    cfg = hf_config(**CONFIGS["f4-p16-t2-eps1e-12"])
    torch.manual_seed(0)
    hf = randomise(transformers.VideoMAEForPreTraining(cfg), 9)
    hf.save_pretrained(tmp_path / "hf")
    assert _cli(["convert", str(tmp_path / "hf"), str(tmp_path / "m.safetensors")]) == 0
    assert _cli(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "o.pth")]) == 0
    assert _cli(["convert", str(tmp_path / "o.pth"), str(tmp_path / "hf2"), "--to", "transformers",
                 "--frames", "4", "--size", "32"]) == 0
    assert "pretrain, dim 64, depth 2, heads 2" in capsys.readouterr().out
    assert _cli(["convert", str(tmp_path / "hf"), str(tmp_path / "hf3")]) == 0
    config = json.loads((tmp_path / "hf3" / "config.json").read_text())
    assert (config["num_frames"], config["image_size"]) == (4, 32)  # default: the source's
    back = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf2").eval()
    video, mask = clip_and_mask(cfg)
    a = back(video.transpose(1, 2), bool_masked_pos=mask).logits
    b = hf(video.transpose(1, 2), bool_masked_pos=mask).logits
    assert rel_err(a, b) < TOL
    assert _cli(["convert", str(tmp_path / "nope"), str(tmp_path / "x.pth")]) == 2
    assert "no such file" in capsys.readouterr().err


@torch.no_grad()
def test_bare_encoder_and_in_memory_export(record_property) -> None:
    """A bare VideoMAEModel imports as a VideoEncoder; to_hf_model builds transformers in memory."""
    cfg = hf_config(num_frames=4, image_size=32, patch_size=16, num_attention_heads=2, use_mean_pooling=False)
    torch.manual_seed(0)
    bare = randomise(transformers.VideoMAEModel(cfg), 10)
    enc = from_hf_model(bare)
    video, mask = clip_and_mask(cfg)
    err = rel_err(enc(video, mask_to_indices(~mask)), bare(video.transpose(1, 2), bool_masked_pos=mask).last_hidden_state)
    report(record_property, "import bare VideoMAEModel", err)
    assert err < TOL
    from mvm.interop import to_hf_model

    mae = randomise(build_mae("tiny", patch=16, dim=64, depth=2, heads=2, decoder_dim=32, decoder_heads=2), 11)
    hf = to_hf_model(mae, frames=4, size=32)
    err = rel_err(mae(video, mask_to_indices(~mask), mask_to_indices(mask)),
                  hf(video.transpose(1, 2), bool_masked_pos=mask).logits)
    assert err < 1e-4


@torch.no_grad()
def test_motion_head_travels_with_mvm_and_original_weights(tmp_path: Path) -> None:
    """A model pretrained with the codec-motion target keeps its head in mvm and .pth files (read off
    shapes when no spec is stored); transformers has no such head, so export leaves it out."""
    mae = randomise(build_mae("tiny", patch=16, dim=64, depth=1, heads=2, decoder_dim=32, decoder_heads=2,
                              decoder_depth=1, motion_dim=2), 9)
    assert spec_from_model(mae).motion_dim == 2
    video = torch.randn(1, 3, 4, 32, 32)
    vis, dec = torch.tensor([[1, 6]]), torch.tensor([[0, 2, 3]])
    ref_pix, ref_motion = mae(video, vis, dec, with_motion=True)
    for back in (load_model(save_mvm(mae, tmp_path / "m.safetensors")),
                 load_model(save_original(mae, tmp_path / "m.pth"))):
        pix, motion = back(video, vis, dec, with_motion=True)
        assert torch.equal(pix, ref_pix) and torch.equal(motion, ref_motion)
    from mvm.train.checkpoint import save_checkpoint  # no spec in a training checkpoint: inferred

    ckpt = save_checkpoint(tmp_path / "run", 3, mae, {}, {"config": {"model": {"name": "tiny"}}})
    assert load_model(ckpt, heads=2, decoder_heads=2).motion_head.weight.shape == (2, 64)
    export_transformers(mae, tmp_path / "hf", frames=4, size=32)
    hf, info = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
