"""The synthetic motion set: real H.264 files, VideoMAE lists, balanced classes, determinism."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import av
import numpy as np
import pytest

from mvm.data.synth import CLASSES, make_synthetic, render_clip


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, make_synthetic(root, clips=16, val_clips=8, frames=12, size=32, seed=0)


def test_files_lists_and_classes(synth):
    root, summary = synth
    assert summary["train"] == 16 and summary["val"] == 8 and summary["classes"] == list(CLASSES)
    assert (root / "classes.txt").read_text().split() == list(CLASSES) and len(CLASSES) >= 8
    for split, n in (("train", 16), ("val", 8)):
        lines = (root / f"{split}.csv").read_text().splitlines()
        assert len(lines) == n
        labels = []
        for line in lines:
            rel, label = line.split(" ")
            assert rel.startswith(f"{split}/") and rel.endswith(".mp4")
            frames = _decode(root / rel)
            assert frames.shape == (12, 32, 32, 3)
            labels.append(int(label))
        assert np.bincount(labels, minlength=len(CLASSES)).tolist() == [n // len(CLASSES)] * len(CLASSES)
    meta = json.loads((root / "train_meta.json").read_text())
    assert len(meta) == 16 and len(meta[0]["bbox"]) == 12 and len(meta[0]["bbox"][0]) == 4
    assert json.loads((root / "synth.json").read_text())["args"]["seed"] == 0


def test_same_seed_same_clips_other_seed_other_clips(synth, tmp_path):
    root, _ = synth
    make_synthetic(tmp_path / "again", clips=8, val_clips=0, frames=12, size=32, seed=0)
    make_synthetic(tmp_path / "other", clips=8, val_clips=0, frames=12, size=32, seed=1)
    for i in (0, 5):
        first = _decode(root / f"train/{i:05d}.mp4")[0]
        assert np.array_equal(first, _decode(tmp_path / "again" / f"train/{i:05d}.mp4")[0])
        assert not np.array_equal(first, _decode(tmp_path / "other" / f"train/{i:05d}.mp4")[0])


def test_the_class_is_the_motion():
    """Object centre and size per frame (the metadata) move as the class says, and pixels change."""
    size, frames = 64, 16
    for seed in range(3):
        for label, name in enumerate(CLASSES):
            video, meta = render_clip(label, np.random.default_rng([seed, label]), frames, size)
            assert video.shape == (frames, size, size, 3) and video.dtype == np.uint8
            assert np.abs(np.diff(video.astype(np.int16), axis=0)).mean() > 1  # things move
            centre, radius = np.array(meta["centre"]), np.array(meta["radius"])
            step = (np.diff(centre, axis=0) + size / 2) % size - size / 2  # unwrapped per-frame move
            vx, vy = step.mean(0)
            if name in ("right", "left", "up", "down"):
                along = {"right": vx, "left": -vx, "down": vy, "up": -vy}[name]
                assert 0.5 <= along <= 4.0, (name, vx, vy)  # 1.5-3 px/frame, give or take the pan
            else:
                assert np.hypot(vx, vy) <= 1.01  # only the camera pan moves it
            if name == "approach":
                assert radius[-1] > 3 * radius[0]
            elif name == "recede":
                assert radius[0] > 3 * radius[-1]
            else:
                assert radius[0] == radius[-1]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size"):
        make_synthetic(tmp_path, clips=2, size=33)
    with pytest.raises(ValueError, match="clips"):
        make_synthetic(tmp_path, clips=0)


def test_command(tmp_path, capsys):
    from mvm.commands import synth as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    out = tmp_path / "cli"
    assert cmd.run(p.parse_args([str(out), "--clips", "8", "--val-clips", "0", "--frames", "4",
                                 "--size", "16", "--seed", "3", "--gop", "4"])) == 0
    assert "8 train + 0 val clips" in capsys.readouterr().out
    assert _decode(out / "train/00007.mp4").shape == (4, 16, 16, 3)
    assert cmd.run(p.parse_args([str(out), "--size", "15"])) == 2


@pytest.mark.skipif(any(importlib.util.find_spec(f"mvm.commands.{c}") is None
                        for c in ("pretrain", "synth", "motion", "prepare", "masks", "convert")),
                    reason="another subcommand module is not written yet")
def test_through_the_cli(tmp_path, capsys):
    from mvm.cli import main

    assert main(["synth", str(tmp_path / "s"), "--clips", "8", "--val-clips", "8", "--frames", "4",
                 "--size", "16"]) == 0
    assert "8 train + 8 val clips" in capsys.readouterr().out
    assert len((tmp_path / "s" / "val.csv").read_text().splitlines()) == 8


def test_object_masks_follow_the_object(tmp_path):
    """``--object-masks`` writes a mask per clip whose pixels are the object's: its centre moves
    with the metadata centre and the masked pixels differ from the unmasked ones."""
    from mvm.commands import synth as cmd
    from mvm.data.synth import load_object_mask, object_mask_path

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    out = tmp_path / "masks"
    assert cmd.run(p.parse_args([str(out), "--clips", "8", "--val-clips", "8", "--frames", "6", "--size", "32",
                                 "--object-masks"])) == 0
    meta = json.loads((out / "val_meta.json").read_text())
    for i, row in enumerate(meta):
        video = out / row["path"]
        mask = load_object_mask(video)
        assert object_mask_path(video).name == f"{i:05d}.mask.npz"
        assert mask.shape == (6, 32, 32) and mask.dtype == bool
        share = mask.mean(axis=(1, 2))
        assert (share > 0.005).all() and (share < 0.5).all()  # an object, not the frame
        # the mask sits where the metadata says the object is (centre within a couple of pixels,
        # measured on the wrapped torus so an object crossing the border still counts)
        cx, cy = row["centre"][0]
        ys, xs = np.nonzero(mask[0])
        dx = (xs - cx + 16) % 32 - 16
        dy = (ys - cy + 16) % 32 - 16
        assert abs(dx.mean()) < 2.5 and abs(dy.mean()) < 2.5, (i, dx.mean(), dy.mean())
    # without the flag there is no mask, and asking for one names the file
    make_synthetic(tmp_path / "plain", clips=8, val_clips=0, frames=4, size=16)
    with pytest.raises(FileNotFoundError, match="00000.mask.npz"):
        load_object_mask(tmp_path / "plain" / "train" / "00000.mp4")


def test_fixed_camera_keeps_the_background_still_and_the_object_moving():
    """``pan=0``: a background pixel far from the object never changes; the object still moves as
    its class says; other draws (shape, colours, start) are those of the panning clip."""
    from mvm.data.synth import render_clip_with_mask

    size, frames = 32, 8
    for label in range(len(CLASSES)):
        still, meta0, mask = render_clip_with_mask(label, np.random.default_rng([5, label]), frames, size, pan=0.0)
        _, meta1, _ = render_clip_with_mask(label, np.random.default_rng([5, label]), frames, size)
        near = mask.any(0)  # pixels the object ever covers, grown by 2 px for its soft edge
        near = np.logical_or.reduce([np.roll(near, (dy, dx), (0, 1)) for dy in range(-2, 3) for dx in range(-2, 3)])
        never = ~near
        diff = np.abs(np.diff(still.astype(np.int16), axis=0)).max(0).max(-1)  # [S, S]
        assert diff[never].max() == 0
        assert meta0["radius"] == meta1["radius"]  # same draws, only the camera differs
        assert np.abs(np.diff(still.astype(np.int16), axis=0)).mean() > 0.1  # the object moves


def test_pan_is_recorded_only_when_not_the_default(tmp_path):
    make_synthetic(tmp_path / "a", clips=2, val_clips=0, frames=2, size=16)
    make_synthetic(tmp_path / "b", clips=2, val_clips=0, frames=2, size=16, pan=0.0)
    assert "pan" not in json.loads((tmp_path / "a" / "synth.json").read_text())["args"]
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["args"]["pan"] == 0.0
    with pytest.raises(ValueError, match="pan"):
        make_synthetic(tmp_path / "c", clips=2, pan=-1.0)


def test_background_contrast_scales_the_texture_and_nothing_else():
    """``background_contrast``: 0 leaves a flat background, 0.5 about half the texture's spread;
    the object, its mask and the other draws are those of the default clip."""
    from mvm.data.synth import render_clip_with_mask

    size, frames = 32, 4
    for label in (0, 4, 6):
        full, meta1, mask1 = render_clip_with_mask(label, np.random.default_rng([7, label]), frames, size)
        half, _, _ = render_clip_with_mask(label, np.random.default_rng([7, label]), frames, size,
                                           background_contrast=0.5)
        flat, meta0, mask0 = render_clip_with_mask(label, np.random.default_rng([7, label]), frames, size,
                                                   background_contrast=0.0)
        assert meta0 == meta1 and np.array_equal(mask0, mask1)
        near = np.logical_or.reduce([np.roll(mask1.any(0), (dy, dx), (0, 1))
                                     for dy in range(-2, 3) for dx in range(-2, 3)])
        bg = ~near
        assert np.ptp(flat[:, bg].astype(np.int16), axis=1).max() <= 1  # one colour (rounding)
        spread = [x[:, bg].astype(np.float32).std(1).mean() for x in (full, half)]
        assert 0.4 < spread[1] / spread[0] < 0.6, spread  # (clipping at 0/255 bends it a little)
        inside = mask1 & mask0  # the object's pixels do not depend on the background's texture
        far = np.logical_and.reduce([np.roll(mask1, (dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        assert np.abs(full[far & inside].astype(np.int16) - flat[far & inside]).max() <= 1


def test_background_contrast_is_recorded_only_when_not_the_default(tmp_path):
    make_synthetic(tmp_path / "a", clips=2, val_clips=0, frames=2, size=16, background_contrast=0.25)
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["args"]["background_contrast"] == 0.25
    with pytest.raises(ValueError, match="background_contrast"):
        make_synthetic(tmp_path / "c", clips=2, background_contrast=-0.5)
