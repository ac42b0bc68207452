"""Clip transforms: shapes, normalisation, and motion following the pixels through crop/resize/flip."""

import numpy as np
import pytest
import torch

from mvm.data.transforms import ClipTransform, normalise_pixels

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _ramps(t: int, h: int, w: int) -> np.ndarray:
    """Red = column index, green = row index: every pixel says where it came from."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 0] = np.arange(w)[None, None, :]
    frames[..., 1] = np.arange(h)[None, :, None]
    return frames


def _pixels(video: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: ``[3, T, S, S]`` -> 0..255."""
    return (video * torch.tensor(STD).view(3, 1, 1, 1) + torch.tensor(MEAN).view(3, 1, 1, 1)) * 255


@pytest.mark.parametrize("train", [True, False])
def test_shapes_dtype_and_normalisation(train):
    frames = np.full((4, 48, 80, 3), 128, np.uint8)
    motion = np.zeros((4, 12, 20, 2), np.float32)
    video, out = ClipTransform(32, train=train)(frames, motion, np.random.default_rng(0))
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
    assert out.shape == (4, 8, 8, 2) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(video.mean((1, 2, 3)), expected, atol=1e-4)
    video, out = ClipTransform(32, train=train)(frames, None, np.random.default_rng(0))
    assert out is None and video.shape == (3, 4, 32, 32)


@pytest.mark.parametrize("train", [True, False])
def test_out_buffer_gets_the_same_values(train):
    frames = np.random.default_rng(4).integers(0, 255, (4, 48, 80, 3), dtype=np.uint8)
    t = ClipTransform(32, train=train)
    video, _ = t(frames, None, np.random.default_rng(7))
    rows = torch.full((2, 3, 4, 32, 32), float("nan"))
    got, _ = t(frames, None, np.random.default_rng(7), out=rows[1])
    assert got.data_ptr() == rows[1].data_ptr() and torch.equal(rows[1], video)
    assert rows[0].isnan().all()  # the other row is untouched
    # the values are the normalisation (x / 255 - mean) / std
    ref = ClipTransform(48, train=False)(frames[:, :, 16:64], None, np.random.default_rng(0))[0]
    x = torch.from_numpy(np.ascontiguousarray(frames[:, :, 16:64])).permute(0, 3, 1, 2).float()
    expected = ((x / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)).permute(1, 0, 2, 3)
    assert torch.allclose(ref, expected, atol=1e-6)
    with pytest.raises(ValueError, match="out must be"):
        t(frames, None, np.random.default_rng(7), out=torch.empty(3, 4, 32, 31))



@pytest.mark.parametrize("train", [True, False])
def test_uint8_clips_normalised_later_equal_the_float_ones_bit_for_bit(train):
    """What the pretraining loader sends (uint8) and what the step makes of it on its device."""
    frames = np.random.default_rng(5).integers(0, 256, (4, 48, 80, 3), dtype=np.uint8)
    t = ClipTransform(32, train=train)
    rows = torch.zeros(2, 3, 4, 32, 32, dtype=torch.uint8)
    for k, seed in enumerate((7, 8)):  # (training: two crops and flips)
        got, _ = t(frames, None, np.random.default_rng(seed), out=rows[k])
        assert got.dtype == torch.uint8 and got.data_ptr() == rows[k].data_ptr()
    floats = torch.stack([t(frames, None, np.random.default_rng(seed))[0] for seed in (7, 8)])
    assert torch.equal(normalise_pixels(rows, MEAN, STD), floats)  # [N, 3, T, S, S]
    assert torch.equal(normalise_pixels(rows[1], MEAN, STD), floats[1])  # [3, T, S, S]
    assert rows.dtype == torch.uint8  # the loader's tensor is left as it was
    assert normalise_pixels(floats, MEAN, STD) is floats  # already normalised: nothing to do
    with pytest.raises(ValueError, match="float32 or uint8"):
        t(frames, None, np.random.default_rng(7), out=torch.empty(3, 4, 32, 32, dtype=torch.float64))


def test_params_drawn_first_give_the_same_clip():
    # The dataset draws every repeat's crop and flip before computing motion for their union.
    frames = np.random.default_rng(1).integers(0, 255, (4, 48, 80, 3), dtype=np.uint8)
    motion = np.random.default_rng(2).normal(size=(4, 12, 20, 2)).astype(np.float32)
    t = ClipTransform(32, train=True)
    for seed in range(6):  # flips and crops of several kinds
        want = t(frames, motion, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        params = t.draw(48, 80, rng)
        got = t(frames, motion, None, params=params)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.equal(t.motion(motion, (48, 80), params), want[1])  # the motion half alone
        used = np.random.default_rng(seed)
        t(frames, motion, used)
        assert rng.random() == used.random()  # draw takes from the generator what the call takes


def test_eval_takes_the_centre_square_of_the_short_side():
    frames = _ramps(2, 40, 100)
    video, _ = ClipTransform(40, train=False)(frames, None, np.random.default_rng(0))
    px = _pixels(video)
    assert px[0].min() >= 29.5 and px[0].max() <= 69.5  # columns 30..69 of 100
    assert torch.allclose(px[1, 0, :, 0], torch.arange(40.0), atol=0.01)  # rows untouched


def test_train_crops_follow_the_scales_and_stay_inside():
    tf = ClipTransform(32, train=True, scales=(1.0, 0.875, 0.75, 0.66))
    rng = np.random.default_rng(0)
    sides = {int(60 * s) for s in (1.0, 0.875, 0.75, 0.66)}
    for _ in range(200):
        y0, x0, ch, cw = tf.crop_box(60, 90, rng)
        assert ch in sides and cw in sides and y0 + ch <= 60 and x0 + cw <= 90 and y0 >= 0 and x0 >= 0
        assert abs(sorted(sides).index(ch) - sorted(sides).index(cw)) <= 1  # max_distort 1


def test_flip_mirrors_pixels_and_motion_and_negates_dx():
    frames = _ramps(2, 32, 32)
    motion = np.zeros((2, 8, 8, 2), np.float32)
    motion[..., 0] = np.arange(8)[None, None, :] + 1.0  # dx grows to the right
    motion[..., 1] = 0.5
    tf = ClipTransform(32, train=True, scales=(1.0,), flip=True)
    seen = set()
    for seed in range(20):
        video, out = tf(frames, motion, np.random.default_rng(seed))
        flipped = bool(_pixels(video)[0, 0, 0, 0] > 15)  # leftmost column shows column 31
        seen.add(flipped)
        if flipped:
            assert torch.allclose(_pixels(video)[0, 0, 0], 31 - torch.arange(32.0), atol=0.01)
            assert torch.allclose(out[..., 0], -torch.from_numpy(motion[..., 0]).flip(2))
        else:
            assert torch.allclose(out[..., 0], torch.from_numpy(motion[..., 0]))
        assert torch.allclose(out[..., 1], torch.full_like(out[..., 1], 0.5))
    assert seen == {True, False}
    _, out = ClipTransform(32, train=True, scales=(1.0,), flip=False)(frames, motion, np.random.default_rng(0))
    assert torch.allclose(out[..., 0], torch.from_numpy(motion[..., 0]))


def test_upscaling_scales_the_motion():
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    motion = np.zeros((3, 4, 4, 2), np.float32)  # 8-pixel blocks
    motion[..., 0], motion[..., 1] = 2.0, -1.0
    _, out = ClipTransform(64, train=False)(frames, motion, np.random.default_rng(0))
    assert out.shape == (3, 16, 16, 2)
    assert torch.allclose(out[..., 0], torch.full((3, 16, 16), 4.0))
    assert torch.allclose(out[..., 1], torch.full((3, 16, 16), -2.0))
    # a crop of half the frame, shown at the frame's size, doubles the motion too
    _, out = ClipTransform(32, train=True, scales=(0.5,), flip=False)(frames, motion, np.random.default_rng(0))
    assert torch.allclose(out[..., 0], torch.full((3, 8, 8), 4.0))


@pytest.mark.parametrize("h, w, block", [(96, 128, None), (94, 126, 4)])
def test_pixel_and_motion_crops_cover_the_same_region(h, w, block):
    """Motion field = (x, y) of each block centre; after any crop/resize/flip, motion divided by its
    scale factor must name the same source position as the pixels of that output cell. With
    ``block`` the last cells overhang the frame (``Hm = ceil(H / block)``)."""
    frames = _ramps(2, h, w)
    hm, wm = -(-h // 4), -(-w // 4)
    centres_x = np.arange(wm) * 4 + 1.5  # pixel-index units, like the ramp: cell j covers 4j..4j+3
    centres_y = np.arange(hm) * 4 + 1.5
    motion = np.zeros((2, hm, wm, 2), np.float32)
    motion[..., 0], motion[..., 1] = centres_x[None, None, :], centres_y[None, :, None]
    tf = ClipTransform(32, train=True, flip=True)
    for seed in range(12):
        video, out = tf(frames, motion, np.random.default_rng(seed), block=block)
        px = _pixels(video)[:2, 0]  # [2, S, S]: source column and row of each output pixel
        cell = px.reshape(2, 8, 4, 8, 4).mean((2, 4))  # [2, 8, 8] per 4x4 output cell
        # source pixels per output pixel (negative when flipped), from the pixel ramps
        slope_x = (cell[0, :, -1] - cell[0, :, 0]).mean() / 28
        slope_y = (cell[1, -1, :] - cell[1, 0, :]).mean() / 28
        inner = (slice(1, -1), slice(1, -1))
        # 1 px: pixels are resized as uint8, so the ramps (and the slopes read off them) are
        # rounded to whole grey levels; a misplaced crop is off by whole cells (4+ px).
        assert torch.allclose(out[0][inner][..., 0] * slope_x, cell[0][inner], atol=1.0), seed
        assert torch.allclose(out[0][inner][..., 1] * slope_y, cell[1][inner], atol=1.0), seed


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="scales"):
        ClipTransform(32, train=True, scales=(1.5,))
    with pytest.raises(ValueError, match="frames"):
        ClipTransform(32, train=False)(np.zeros((4, 8, 8), np.uint8), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="motion"):
        ClipTransform(32, train=False)(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 2, 2)),
                                       np.random.default_rng(0))


@pytest.mark.parametrize("size,patch,frames,block", [(224, 16, 16, 4), (224, 14, 8, None), (64, 8, 4, 8), (32, 16, 4, 4)])
def test_motion_tokens_equal_resampling_then_pooling(size, patch, frames, block):
    from mvm.grid import TokenGrid
    from mvm.motion.field import to_token_grid

    rng = np.random.default_rng(0)
    grid = TokenGrid.from_clip(frames, size, 2, patch)
    tf = ClipTransform(size, train=True)
    for _ in range(12):  # crops of every scale and offset, flipped or not, up- and downscaled
        h, w = int(rng.integers(size // 2, 3 * size)), int(rng.integers(size // 2, 3 * size))
        cells = (h // 5, w // 7) if block is None else (-(-h // block), -(-w // block))
        motion = (rng.normal(size=(frames, *cells, 2)) * 3).astype(np.float32)
        params = tf.draw(h, w, rng)
        want = to_token_grid(tf.motion(motion, (h, w), params, block), grid)
        got = tf.motion_tokens(motion, (h, w), params, block, grid)
        assert got.shape == (grid.t, grid.h, grid.w, 2) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
