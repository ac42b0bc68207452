"""``mvm masks``: picture and JSON on a real H.264 clip with one moving object; bad input refused."""

import json

import numpy as np
import pytest
import torch

from mvm.cli import main
from mvm.data.video_io import encode_video
from mvm.grid import TokenGrid
from mvm.viz.masks import mask_stats, plot_masks


@pytest.fixture(scope="module")
def moving_square(tmp_path_factory) -> str:
    """24 frames of 64x64: a textured square moving right 2 px/frame over a dim static texture."""
    rng = np.random.default_rng(0)
    bg = (rng.random((64, 64, 3)) * 90).astype(np.uint8)
    tex = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    frames = np.repeat(bg[None], 24, axis=0)
    for i in range(24):
        frames[i, 20:36, 2 + 2 * i:18 + 2 * i] = tex
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    encode_video(path, frames, fps=25, gop=50, bframes=0, refs=1)
    return str(path)


ARGS = ["--size", "64", "--patch", "8", "--frames", "8", "--stride", "2"]


def test_json_and_picture(moving_square, tmp_path, capsys):
    png = tmp_path / "m" / "masks.png"
    rc = main(["masks", moving_square, *ARGS, "--ratio", "0.75", "--out", str(png), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["grid"] == [4, 8, 8] and out["picture"] == str(png) and png.stat().st_size > 1000
    rows = out["strategies"]
    assert list(rows) == ["tube", "mgm", "smm", "random"]
    for row in rows.values():
        assert row["masked_fraction"] == pytest.approx(0.75, abs=0.02)
        assert 0.0 <= row["top_motion_masked"] <= 1.0
    assert rows["mgm"]["fallback"] is False
    assert rows["mgm"]["top_motion_masked"] >= 0.9  # the region sits on the moving square


def test_table_output_and_other_strategies(moving_square, capsys):
    assert main(["masks", moving_square, *ARGS, "--strategies", "frame_random,mgm", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "frame_random" in text and "mgm" in text and "%" in text


@pytest.mark.parametrize("extra, code, message", [
    (["--strategies", "tube,zigzag"], 2, "unknown strategy zigzag"),
    (["--ratio", "1.5"], 2, "ratio"),
    (["--frames", "7"], 2, "divisible"),
])
def test_bad_arguments_are_refused(moving_square, capsys, extra, code, message):
    assert main(["masks", moving_square, *ARGS, *extra]) == code
    assert message in capsys.readouterr().err


def test_unreadable_video(tmp_path, capsys):
    bad = tmp_path / "not.mp4"
    bad.write_bytes(b"definitely not a video")
    assert main(["masks", str(bad), *ARGS]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["masks", str(tmp_path / "missing.mp4"), *ARGS]) == 1


def test_mask_stats_counts_the_fastest_tokens():
    motion = torch.zeros(2, 4, 5, 2)
    motion[0, 0, :4, 0] = 5.0  # 4 of 40 tokens move: the top decile
    mask = torch.zeros(40, dtype=torch.bool)
    mask[:2] = True
    stats = mask_stats(mask, motion)
    assert stats == {"masked_fraction": pytest.approx(0.05), "top_motion_masked": 0.5}
    assert mask_stats(mask, torch.zeros(2, 4, 5, 2))["top_motion_masked"] is None
    assert mask_stats(mask, None)["top_motion_masked"] is None
    with pytest.raises(ValueError):
        mask_stats(mask, torch.zeros(3, 4, 5, 2))


def test_plot_masks_checks_the_frames(tmp_path):
    grid = TokenGrid(2, 2, 2, tubelet=2, patch=4)
    masks = {"a": torch.tensor([True, False] * 4)}
    path = plot_masks(np.zeros((4, 8, 8, 3), np.uint8), masks, grid, tmp_path / "x.png",
                      motion=torch.ones(2, 2, 2, 2))
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="grid"):
        plot_masks(np.zeros((4, 16, 8, 3), np.float32), masks, grid, tmp_path / "y.png")
