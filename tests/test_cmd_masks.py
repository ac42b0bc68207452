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
    (["--patch", "0"], 2, "--patch 0: must be >= 1"),  # before: ZeroDivisionError traceback
    (["--tubelet", "0"], 2, "--tubelet 0: must be >= 1"),
])
def test_bad_arguments_are_refused(moving_square, capsys, extra, code, message):
    assert main(["masks", moving_square, *ARGS, *extra]) == code
    assert message in capsys.readouterr().err


def test_unreadable_video(tmp_path, capsys):
    """The user's file: one line naming it once, exit code 2, no picture written."""
    bad = tmp_path / "not.mp4"
    bad.write_bytes(b"definitely not a video")
    png = tmp_path / "out.png"
    assert main(["masks", str(bad), *ARGS, "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mvm masks: cannot read {bad}: not_video: Invalid data found when processing input"
    assert main(["masks", str(tmp_path / "missing.mp4"), *ARGS, "--out", str(png)]) == 2
    assert capsys.readouterr().err.strip() == f"mvm masks: cannot read {tmp_path / 'missing.mp4'}: missing"
    assert not png.exists()


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


def test_regions_drawn_are_the_ones_the_masks_used(moving_square, tmp_path, capsys):
    """The rectangle the picture outlines is hidden in every token-frame (same seed, same draw), and
    MGM's sits on the square moving right."""
    from mvm.masking import ENCODER_MASKS, MaskContext

    grid = TokenGrid.from_clip(8, 64, 2, 8)
    motion = torch.zeros(1, *grid.shape, 2)
    for i in range(grid.t):  # a 2x2-token object moving right one token per token-frame
        motion[0, i, 3:5, 1 + i:3 + i, 0] = 4.0
    for name in ("mgm", "smm"):
        strategy = ENCODER_MASKS.build(name, ratio=0.75)
        ctx = MaskContext(motion=motion)
        mask = strategy(grid, 1, torch.Generator().manual_seed(5), ctx)[0].view(grid.shape)
        rows, cols, top, left = strategy.regions(grid, 1, torch.Generator().manual_seed(5), ctx)[:4]
        for i in range(grid.t):
            assert mask[i, top[0, i]:top[0, i] + rows[0], left[0, i]:left[0, i] + cols[0]].all()
        if name == "mgm":
            centre = left[0] + cols[0] / 2
            assert (np.diff(centre) >= 0).all() and centre[-1] > centre[0]  # follows the motion right
    png = tmp_path / "regions.png"
    assert main(["masks", moving_square, *ARGS, "--start", "4", "--out", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == [4, 6, 8, 10, 12, 14, 16, 18] and png.stat().st_size > 1000
    assert main(["masks", moving_square, *ARGS, "--start", "20"]) == 2
    assert "--start 20" in capsys.readouterr().err


def test_strong_motion_keeps_the_fast_tokens_without_the_camera():
    from mvm.viz.masks import strong_motion

    motion = torch.zeros(2, 4, 5, 2)
    motion[..., 0] = 3.0  # a camera pan: everything moves 3 px right
    motion[0, 1, 2, 1] = 5.0  # one token also moves down
    vec, strong = strong_motion(motion)
    assert strong.sum() == 1 and strong[0, 1, 2]
    assert np.allclose(vec[1], 0) and np.allclose(vec[0, 1, 2], [0.0, 5.0])


def test_the_key_of_a_short_clip_fits_in_the_picture(tmp_path):
    """4 token-frames make a narrow figure: its key must not run off either side (it did, cut to
    "idden from the encoder ... camera rem")."""
    import matplotlib.image as mpimg

    grid = TokenGrid.from_clip(frames=8, size=32, tubelet=2, patch=8)
    masks = {"tube": torch.ones(grid.num_tokens, dtype=torch.bool)}
    motion = torch.zeros(*grid.shape, 2)
    motion[..., 0] = 1.0
    regions = {"tube": (2, 2, np.zeros(grid.t, int), np.zeros(grid.t, int))}
    path = plot_masks(np.full((8, 32, 32, 3), 128, np.uint8), masks, grid, tmp_path / "k.png", motion=motion,
                      regions=regions)
    img = mpimg.imread(path)[..., :3]
    key = img[-int(img.shape[0] * 0.12):]  # the bottom strip that holds the key
    assert (key < 0.9).any()  # the key is drawn
    assert (key[:, :3] > 0.95).all() and (key[:, -3:] > 0.95).all()  # and nothing touches the edges
