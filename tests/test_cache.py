"""Decode cache: bounded in bytes (frames and motion vectors), spans only for videos over the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mvm.data.datasets as datasets
from mvm.config import DataConfig
from mvm.data.cache import DecodeCache
from mvm.data.video_io import decode_video, encode_video
from mvm.grid import TokenGrid

GRID = TokenGrid.from_clip(frames=4, size=32, tubelet=2, patch=16)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "long.mp4"
    frames = np.zeros((60, 32, 32, 3), np.uint8)
    for t in range(60):
        frames[t, 8:20, t % 16:t % 16 + 12] = 255  # something moves: the stream carries vectors
    encode_video(path, frames, gop=8)
    return path


def test_budget_counts_frames_and_motion_vectors(video):
    decoded = decode_video(video, with_motion=True)
    assert decoded.has_vectors and decoded.nbytes > decoded.frames.nbytes
    cache = DecodeCache(decoded.nbytes * 1.5 / 2**20)
    cache.put("a", decoded)
    cache.put("b", decoded)  # does not fit beside "a": "a" leaves
    assert len(cache) == 1 and cache.used == decoded.nbytes <= cache.budget and cache.get("a") is None
    small = DecodeCache(decoded.nbytes / 2 / 2**20)
    small.put("a", decoded)
    assert len(small) == 0 and small.used == 0 and not small.fits(decoded.nbytes)


def test_videos_over_the_budget_decode_only_their_span_and_items_do_not_depend_on_the_cache(video, monkeypatch):
    calls = []
    real = datasets.decode_video

    def spy(path, **kw):
        calls.append(kw)
        return real(path, **kw)

    monkeypatch.setattr(datasets, "decode_video", spy)
    cfg = dict(frames=4, stride=2, size=32, motion="estimate", workers=0)
    entries = [(str(video), 0)]
    plain = datasets.VideoDataset(entries, GRID, DataConfig(**cfg), train=True, seed=1)
    tiny = datasets.VideoDataset(entries, GRID, DataConfig(**cfg, cache_mb=0.05), train=True, seed=1)  # < 184 KB
    big = datasets.VideoDataset(entries, GRID, DataConfig(**cfg, cache_mb=8), train=True, seed=1)
    for i in range(4):
        a, b, c = plain[i], tiny[i], big[i]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["video"], c["video"])
        assert torch.equal(a["motion"], b["motion"]) and torch.equal(a["motion"], c["motion"])
    assert len(tiny.cache) == 0 and tiny.cache.used == 0
    assert big.cache.misses == 1 and big.cache.hits == 3 and big.cache.used <= big.cache.budget
    whole = [kw for kw in calls if "max_frames" not in kw]
    spans = [kw for kw in calls if "max_frames" in kw]
    assert len(whole) == 1  # the one video that fits, decoded once
    assert len(spans) == 8 and all(kw["max_frames"] <= 9 for kw in spans)  # 4 frames, stride 2, +2 for motion


def test_codec_motion_on_a_window_across_a_keyframe(video):
    from mvm.motion.field import motion_for_clip

    window = decode_video(video, with_motion=True).window(7, 16)  # frame 8 is an I-frame (gop 8)
    motion, _ = motion_for_clip(window, np.array([2, 4, 6, 8]), "auto")
    assert motion.shape[0] == 4 and np.isfinite(motion).all()
