"""MotionField plumbing: source selection, temporal stride, token grid."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_motion_codec import FRAMES, moving_square, object_error

from mvm.data.video_io import DecodedVideo, VideoDecodeError, decode_video, encode_video
from mvm.grid import TokenGrid
from mvm.motion import field as field_mod
from mvm.motion.field import (
    MotionField,
    clip_block,
    clip_motion,
    frame_motion,
    motion_for_clip,
    motion_for_clips,
    to_token_grid,
    token_magnitude,
)


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
    # a reversed clip with room after it: sample 0 is the negated motion of the stride after
    rev = clip_motion(constant_field(frames=12), np.array([8, 6, 4]))
    np.testing.assert_allclose(rev[:, 0, 0], [[-2.0, 1.0]] * 3)
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


def test_token_grid_is_the_mean_over_each_tokens_frames_and_cells():
    grid = TokenGrid(t=3, h=2, w=3, tubelet=2, patch=8)
    motion = torch.randn(6, 8, 12, 2, generator=torch.Generator().manual_seed(0))  # 4x4 cells per token
    want = torch.stack([torch.stack([torch.stack([
        motion[2 * k:2 * k + 2, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(-1, 2).mean(0)
        for j in range(3)]) for i in range(2)]) for k in range(3)])
    torch.testing.assert_close(to_token_grid(motion, grid), want, rtol=0, atol=1e-6)


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


# motion_for_clip: the clip's motion from the clip's frames only. On these 64-px clips fewer than
# PROBE (256) vectors are checkable, so every moving vector's reference is checked both in the
# whole-video field and in the span, and the per-frame fields agree exactly; the tolerance only
# covers float summation order (hole filling in float64, accumulation from the span's start).
SPAN_TOL = 1e-4


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    """32-frame moving-square videos, GOP 16 (an I-frame at 16), per (refs, bframes)."""
    root = tmp_path_factory.mktemp("gop")
    frames, _ = moving_square((1, -1), frames=32)
    out = {}
    for refs in (1, 3):
        for bframes in (0, 2):
            path = root / f"r{refs}b{bframes}.mp4"
            encode_video(path, frames, gop=16, bframes=bframes, refs=refs)
            out[refs, bframes] = decode_video(path, with_motion=True)
    return out


@pytest.mark.parametrize("refs,bframes", [(1, 0), (1, 2), (3, 0), (3, 2)])
@pytest.mark.parametrize("stride", [2, 4])
def test_motion_for_clip_equals_the_whole_video_path(gop_videos, refs, bframes, stride):
    decoded = gop_videos[refs, bframes]
    for start in (0, 1, 3, 9, 16 - stride, 17, 32 - 6 * stride, -1):  # at the start, around the I-frame, at the end
        # (-1: a reversed clip, whose sample 0 reads the stride after its first frame)
        idx = np.arange(start, start + 6 * stride, stride) if start >= 0 else np.arange(20, 20 - 6 * stride, -stride)
        want = clip_motion(frame_motion(decoded, block=4), idx)
        got, block = motion_for_clip(decoded, idx, block=4)
        assert block == 4 and got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=SPAN_TOL, err_msg=f"clip from frame {start}")
        assert np.abs(want).max() > 1  # the square moves: a real comparison


def test_motion_for_clip_reads_only_the_frames_it_needs(gop_videos):
    decoded = gop_videos[1, 0]
    idx = np.arange(6, 30, 4)  # needs the motion of frames 3..26
    want, _ = motion_for_clip(decoded, idx, block=4)
    # Vectors of frames outside the span (and not needed to fill an I-frame) do not matter ...
    rng = np.random.default_rng(0)
    noisy = list(decoded.motion_vectors)
    for f in (1, 2, 27, 28, 29, 30, 31):  # frame 0 is the I-frame
        mv = noisy[f].copy()
        mv["motion_x"] = rng.integers(-200, 200, len(mv))
        noisy[f] = mv
    poisoned = DecodedVideo(decoded.frames, decoded.fps, decoded.codec, noisy, decoded.pict_types)
    np.testing.assert_array_equal(motion_for_clip(poisoned, idx, block=4)[0], want)
    # ... and a decode cut from the keyframe before the clip's first needed frame to its last
    # (what the dataset decodes) gives the same clip motion (ref=1: no reference is cut off).
    window = decoded.window(0, 27)
    np.testing.assert_allclose(motion_for_clip(window, idx, block=4)[0], want, atol=SPAN_TOL)
    cut = decoded.window(16, 32)  # starts at the I-frame: indices are relative to the window
    np.testing.assert_allclose(motion_for_clip(cut, idx[3:] - 16, block=4)[0],
                               clip_motion(frame_motion(cut, block=4), idx[3:] - 16), atol=SPAN_TOL)


def test_motion_for_clips_shares_frames_and_matches_single_clips(gop_videos):
    decoded = gop_videos[3, 2]
    clips = [np.arange(2, 26, 4), np.arange(5, 17, 2), np.arange(20, 32, 2), np.array([7])]
    many = motion_for_clips(decoded, clips, block=8)
    for idx, (motion, block) in zip(clips, many):
        assert block == 8
        np.testing.assert_allclose(motion, clip_motion(frame_motion(decoded, block=8), idx), atol=SPAN_TOL)
    # repeats that share one clip's frames (data.repeat_mode="frames") share one array
    same = motion_for_clips(decoded, [clips[0], clips[0].copy(), clips[1]], block=8)
    assert same[0][0] is same[1][0] and same[2][0] is not same[0][0]
    np.testing.assert_array_equal(same[0][0], many[0][0])


@pytest.mark.parametrize("source", ["estimate", "none"])
def test_motion_for_clip_other_sources(gop_videos, source):
    decoded = gop_videos[1, 0]
    for idx in (np.arange(0, 24, 4), np.arange(9, 31, 2)):
        want = clip_motion(frame_motion(decoded, source, block=4), idx)
        np.testing.assert_allclose(motion_for_clip(decoded, idx, source, block=4)[0], want, atol=SPAN_TOL)
    with pytest.raises(ValueError, match="motion source"):
        motion_for_clip(decoded, np.arange(4), "flow")


def test_clip_block_follows_the_token_size():
    # at most short side / 28 source pixels per cell, between 4 and 16 (an H.264 macroblock)
    assert [clip_block(h, 640) for h in (64, 144, 224, 340, 720)] == [4, 4, 8, 8, 16]
    decoded = DecodedVideo(np.zeros((3, 340, 452, 3), np.uint8), 25.0, "h264", [None] * 3, ["I"] * 3)
    motion, block = motion_for_clip(decoded, np.array([0, 2]), "none")
    assert block == 8 and motion.shape == (2, 43, 57, 2)


def test_window_starting_after_its_references(gop_videos):
    # A decode that starts at a P-frame (the dataset's window) has no usable vector in its first
    # frame: every reference lies before it. That frame counts as unmeasured, nothing crashes.
    cut = gop_videos[1, 0].window(5, 32)
    motion, _ = motion_for_clip(cut, np.array([1, 5, 9]), block=4)
    np.testing.assert_allclose(motion, clip_motion(frame_motion(cut, block=4), np.array([1, 5, 9])), atol=SPAN_TOL)
    assert np.isfinite(motion).all()


def wide_pan(frames: int = 32, square: bool = True) -> np.ndarray:
    """A 64x160 textured background panning left by 2 px/frame under (with ``square``) a square
    moving right by 2 px/frame and down by 1 px every other frame."""
    from test_motion_codec import texture

    bg, sq = texture(64, 160 + 2 * frames, 1, 8), texture(20, 20, 2, 4)
    out = []
    for f in range(frames):
        im = bg[:, 2 * f:2 * f + 160].copy()
        y, x = 10 + f // 2, 40 + 2 * f
        if square:
            im[y:y + 20, x:x + 20] = sq
        out.append(im)
    return np.stack(out)


@pytest.mark.parametrize("bframes", [0, 2])
def test_region_gives_the_whole_frames_values_where_it_reads(tmp_path, bframes):
    path = tmp_path / "wide.mp4"
    encode_video(path, wide_pan(), gop=16, bframes=bframes)
    decoded = decode_video(path, with_motion=True)
    clips = [np.arange(5, 29, 4), np.arange(2, 14, 2)]
    whole = motion_for_clips(decoded, clips, "codec", block=4)
    for region in [(8, 50, 30, 90), (0, 64, 100, 160), (20, 30, 0, 20)]:
        part = motion_for_clips(decoded, clips, "codec", block=4, region=region)
        for (m, _), (p, block) in zip(whole, part):
            assert block == 4 and p.shape == m.shape
            y0, y1, x0, x1 = (region[0] // 4 - 2, -(-region[1] // 4) + 2, region[2] // 4 - 2, -(-region[3] // 4) + 2)
            inner = (slice(None), slice(max(y0, 0), y1), slice(max(x0, 0), x1))
            np.testing.assert_allclose(p[inner], m[inner], atol=1e-5)
            assert np.abs(m[inner]).max() > 1
        if region[3] <= 90:  # cells far right of the region are not computed
            assert not part[0][0][:, :, 40:].any()


@pytest.mark.parametrize("repeat", [1, 3])
def test_dataset_motion_from_the_crops_region_equals_the_whole_frame(tmp_path, monkeypatch, repeat):
    # The dataset computes codec motion only where the crops it is about to draw read it; the
    # token-grid motion is the same as from the whole frame.
    from mvm.config import DataConfig
    from mvm.data import datasets

    path = tmp_path / "wide.mp4"
    encode_video(path, wide_pan(), gop=16)
    cfg = DataConfig(frames=4, stride=2, size=32, motion="codec", cache_mb=0, repeat=repeat)
    grid = TokenGrid.from_clip(4, 32, 2, 16)
    ds = datasets.VideoDataset([(str(path), 0)], grid, cfg, train=True, seed=3, repeat=repeat)
    items = [ds[i] for i in range(6)]
    real = datasets._clips_motion
    monkeypatch.setattr(datasets, "_clips_motion", lambda w, c, s, p, region=None: real(w, c, s, p))
    for i, item in enumerate(items):
        full = ds[i]
        assert torch.equal(item["video"], full["video"])
        torch.testing.assert_close(item["motion"], full["motion"], atol=1e-5, rtol=0)
    assert max(float(it["motion"].abs().max()) for it in items) > 0.5


def test_motion_start_does_not_reach_into_an_earlier_gop():
    from mvm.data.datasets import motion_start

    keys = np.array([0, 16, 32])
    assert motion_start(20, 4, keys) == 16  # the stride before the clip lies in its GOP
    assert motion_start(18, 4, keys) == 18  # a keyframe (16) among them: start at the clip
    assert motion_start(16, 4, keys) == 16  # the clip starts at a keyframe
    assert motion_start(2, 4, keys) == 0 and motion_start(18, 4, None) == 14


def test_dataset_first_sample_after_a_keyframe_is_as_correct(tmp_path):
    # A clip starting 1-3 frames after a keyframe decodes from the clip and its sample 0 copies
    # sample 1: on steady motion (a pan) that is the motion of the stride frames before it, as
    # the whole-video path measures it, within the codec's frame-to-frame noise. (Where motion
    # changes within a stride, e.g. at a moving object's edge, the first tubelet gets the
    # motion inside the clip instead of half of it from before the clip.)
    from mvm.config import DataConfig
    from mvm.data import datasets

    path = tmp_path / "wide.mp4"
    encode_video(path, wide_pan(48, square=False), gop=16)
    full = decode_video(path, with_motion=True)
    field = frame_motion(full, "codec", block=4)
    cfg = DataConfig(frames=4, stride=4, size=32, motion="codec", cache_mb=0)
    grid = TokenGrid.from_clip(4, 32, 2, 16)
    ds = datasets.VideoDataset([(str(path), 0)], grid, cfg, train=True, seed=0)
    cut = 0
    for i in range(16):
        rngs = ds.clip_rngs(i)
        window, clips = ds._decode(ds.entries[0], rngs)
        idx = clips[0] + window.start
        if idx[0] % 16 in (1, 2, 3):
            cut += 1
            assert window.start == idx[0]  # no frame of the earlier GOP decoded
        want = ds.transform(full.frames[idx], clip_motion(field, idx), rngs[0], block=4)[1]
        got = ds[i]["motion"]
        assert (got - to_token_grid(want, grid)).abs().max() < 0.25 and got[..., 0].abs().min() > 1
    assert cut >= 2


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_invalid_frames_take_the_mean_of_their_nearest_valid_neighbours(layout):
    """The compiled fill (contiguous float32) and the NumPy one (anything else) give each
    invalid frame np.mean of the valid frames on either side, or the one there is; bit for bit."""
    from mvm.motion.field import fill_invalid_frames

    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 10))
        flow = (rng.normal(size=(n, 3, 4, 2)) * 7).astype(np.float32)
        valid = rng.random(n) < rng.random()
        want = flow.copy()
        good = np.flatnonzero(valid)
        for f in np.flatnonzero(~valid) if good.size else []:
            before, after = good[good < f], good[good > f]
            near = [*before[-1:], *after[:1]]
            want[f] = np.mean(flow[near], 0)
        arg = flow.copy() if layout == "contiguous" else np.asfortranarray(flow)
        got = fill_invalid_frames(arg, valid)
        assert got is arg and np.array_equal(got, want), trial
    untouched = np.ones((3, 2, 2, 2), np.float32)
    assert np.array_equal(fill_invalid_frames(untouched.copy(), np.zeros(3, bool)), untouched)  # nothing valid
