"""Block-matching fallback: the same convention and accuracy as codec motion, on MJPEG and VP9.

Tolerance: per-frame mean vector on the square's inner blocks within 0.5 px of the truth per axis
on average over frames, background under 0.3 px. (Matching blocks are 8 px here, so blocks on the
square's edge mix object and background; the inner blocks are the measure.)
"""

from __future__ import annotations

import numpy as np
import pytest
from test_motion_codec import FRAMES, background, moving_square, object_error, texture

from mvm.data.video_io import decode_video, encode_video
from mvm.motion.estimate import estimate_field


@pytest.mark.parametrize("codec,suffix", [("mjpeg", ".avi"), ("libvpx-vp9", ".webm")])
@pytest.mark.parametrize("v", [(3, 0), (0, 3), (2, 2), (-3, -1)], ids=["right", "down", "diagonal", "left-up"])
def test_direction_and_magnitude_without_vectors(tmp_path, codec, suffix, v):
    frames, pos = moving_square(v)
    path = tmp_path / f"v{suffix}"
    encode_video(path, frames, codec=codec)
    decoded = decode_video(path, with_motion=True)
    assert not decoded.has_vectors
    field = estimate_field(decoded.frames, block=4, codec=decoded.codec)
    assert field.source == "estimated" and field.flow.shape == (FRAMES, 16, 16, 2)
    assert not field.valid[0] and field.valid[1:].all()
    np.testing.assert_array_equal(field.flow[0], field.flow[1])
    err = object_error(field.flow, field.valid, pos, v)
    assert err.mean(0).max() < 0.5, err.mean(0)
    assert background(field.flow, field.valid, pos) < 0.3


def test_static_video_has_no_motion():
    frames = np.repeat(texture(64, 64, 3, 4)[None], 6, 0)
    assert np.abs(estimate_field(frames).flow).max() == 0


def test_larger_frames_reach_farther_through_the_coarse_level():
    """At 224 px the matcher works on a half-size image; 9 px/frame is still found."""
    bg, sq = texture(224, 224, 5, 8), texture(64, 64, 6, 8)
    frames = []
    for f in range(6):
        im = bg.copy()
        im[80:144, 40 + 9 * f: 104 + 9 * f] = sq
        frames.append(im)
    field = estimate_field(np.stack(frames), block=16)
    inner = field.flow[1:, 6:8, 4 + np.arange(5)[:, None] * 0 + 1]  # cells well inside the square
    assert abs(np.median(field.flow[1:, 6:8, 5:7, 0]) - 9) < 0.5, inner.shape
    assert abs(np.median(field.flow[1:, 6:8, 5:7, 1])) < 0.5


def test_horizontal_flip_negates_dx():
    frames, _ = moving_square((3, 1))
    a, b = estimate_field(frames), estimate_field(frames[:, :, ::-1].copy())
    flipped = a.flow[:, :, ::-1] * np.array([-1, 1], np.float32)
    assert np.abs(flipped[1:, 2:-2, 2:-2] - b.flow[1:, 2:-2, 2:-2]).mean() < 0.25


def test_single_frame_and_tiny_frames_do_not_crash():
    one = estimate_field(np.zeros((1, 32, 32, 3), np.uint8))
    assert one.flow.shape == (1, 8, 8, 2) and not one.valid.any()
    tiny = estimate_field(np.random.default_rng(0).integers(0, 255, (4, 10, 14, 3), dtype=np.uint8), block=4)
    assert tiny.flow.shape == (4, 3, 4, 2) and np.isfinite(tiny.flow).all()
