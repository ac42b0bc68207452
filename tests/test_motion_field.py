"""MotionField plumbing: source selection, temporal stride, token grid."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_motion_codec import FRAMES, moving_square, object_error

from mvm.data.video_io import VideoDecodeError, decode_video, encode_video
from mvm.grid import TokenGrid
from mvm.motion import field as field_mod
from mvm.motion.field import MotionField, clip_motion, frame_motion, to_token_grid, token_magnitude


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    frames, pos = moving_square((2, 1))
    encode_video(root / "h264.mp4", frames)
    encode_video(root / "mjpeg.avi", frames, codec="mjpeg")
    return root, pos


def constant_field(v=(1.0, -0.5), frames=20, hm=4, wm=5) -> MotionField:
    flow = np.tile(np.array(v, np.float32), (frames, hm, wm, 1))
    return MotionField(flow, np.ones(frames, bool), 4, "codec", "h264")


def test_auto_uses_codec_vectors_when_present_and_estimates_otherwise(videos, caplog):
    root, _ = videos
    assert frame_motion(decode_video(root / "h264.mp4", with_motion=True)).source == "codec"
    field_mod._fallback_logged.clear()
    with caplog.at_level(logging.INFO, logger="mvm.motion.field"):
        a = frame_motion(decode_video(root / "mjpeg.avi", with_motion=True), path="mjpeg.avi")
        b = frame_motion(decode_video(root / "mjpeg.avi", with_motion=True))
    assert a.source == b.source == "estimated" and a.codec == "mjpeg"
    assert sum("block matching" in r.message for r in caplog.records) == 1  # once per codec


def test_strict_codec_source_names_the_file(videos):
    root, _ = videos
    with pytest.raises(VideoDecodeError, match="mjpeg.avi.*no_motion_vectors") as e:
        frame_motion(decode_video(root / "mjpeg.avi", with_motion=True), "codec", path=str(root / "mjpeg.avi"))
    assert e.value.reason == "no_motion_vectors"


def test_estimate_and_none_are_forced(videos):
    root, pos = videos
    decoded = decode_video(root / "h264.mp4", with_motion=True)
    est = frame_motion(decoded, "estimate")
    assert est.source == "estimated"
    assert object_error(est.flow, est.valid, pos, (2, 1)).mean(0).max() < 0.5
    none = frame_motion(decoded, "none", block=8)
    assert none.source == "none" and none.flow.shape == (FRAMES, 8, 8, 2)
    assert not none.flow.any() and not none.valid.any()
    with pytest.raises(ValueError, match="motion source"):
        frame_motion(decoded, "optical-flow")


def test_stride_accumulates_motion():
    f = constant_field()
    for stride in (1, 2, 4):
        idx = np.arange(4, 20, stride)[:4]
        out = clip_motion(f, idx)
        assert out.shape == (4, 4, 5, 2) and out.dtype == np.float32
        np.testing.assert_allclose(out, stride * np.array([1.0, -0.5]) * np.ones_like(out))


def test_first_sample_at_the_start_copies_the_second():
    f = constant_field()
    f.flow[5] *= 3  # frames 1..4 move (1, -0.5), frame 5 three times as far
    out = clip_motion(f, np.array([0, 2, 4, 6]))
    np.testing.assert_allclose(out[0], out[1])
    np.testing.assert_allclose(out[3, 0, 0], [4.0, -2.0])  # frames 5 and 6


def test_repeated_reversed_and_out_of_range_indices():
    f = constant_field(frames=10)
    out = clip_motion(f, np.array([6, 8, 9, 9, 9]))  # padded with the last frame
    assert not out[3:].any()
    rev = clip_motion(f, np.array([8, 6, 4]))
    np.testing.assert_allclose(rev[1:, 0, 0], [[-2.0, 1.0]] * 2)
    clamped = clip_motion(f, np.array([8, 9, 12, 15]))
    assert not clamped[2:].any()
    single = clip_motion(f, np.array([3]))
    np.testing.assert_allclose(single[0, 0, 0], [1.0, -0.5])
    with pytest.raises(ValueError):
        clip_motion(f, np.array([], np.int64))


@pytest.mark.parametrize("stride", [2, 4])
def test_stride_on_real_codec_motion(videos, stride):
    root, pos = videos
    field = frame_motion(decode_video(root / "h264.mp4", with_motion=True))
    idx = np.arange(2, FRAMES, stride)
    clip = clip_motion(field, idx)
    err = object_error(clip[1:], np.ones(len(idx) - 1, bool), [pos[i] for i in idx[1:]], (2 * stride, stride))
    assert err.mean(0).max() < 0.35 * stride, err


def test_token_grid_averages_tubelets_and_patches():
    grid = TokenGrid(t=2, h=2, w=3, tubelet=2, patch=4)
    motion = torch.zeros(4, 8, 12, 2)
    motion[0, :4, :4, 0] = 4.0  # token (0, 0, 0), first of its two frames
    motion[3, 4:, 8:, 1] = -2.0  # token (1, 1, 2), second frame
    tokens = to_token_grid(motion, grid)
    assert tokens.shape == (2, 2, 3, 2)
    assert tokens[0, 0, 0, 0] == 2.0 and tokens[1, 1, 2, 1] == -1.0
    assert tokens.abs().sum() == 3.0
    mag = token_magnitude(tokens)
    assert mag.shape == (2, 2, 3) and mag[0, 0, 0] == 2.0
    batched = to_token_grid(motion[None].repeat(3, 1, 1, 1, 1), grid)
    assert batched.shape == (3, 2, 2, 3, 2) and torch.equal(batched[1], tokens)


def test_token_grid_pools_block_fields_and_rejects_wrong_shapes():
    grid = TokenGrid(t=2, h=2, w=2, tubelet=2, patch=16)
    block_field = torch.ones(4, 7, 9, 2)  # e.g. a 4-px block field of a 28x36 crop: not divisible
    assert torch.allclose(to_token_grid(block_field, grid), torch.ones(2, 2, 2, 2))
    with pytest.raises(ValueError, match="frames"):
        to_token_grid(torch.zeros(3, 8, 8, 2), grid)
    with pytest.raises(ValueError, match="coarser"):
        to_token_grid(torch.zeros(4, 1, 8, 2), grid)
    with pytest.raises(ValueError):
        to_token_grid(torch.zeros(4, 8, 8), grid)
