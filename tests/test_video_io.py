"""Video I/O: frame counts from the header, decoding limits, clear reasons for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mvm.data.video_io import VideoDecodeError, count_frames, decode_video, encode_video


def _frames(t: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(t).integers(0, 255, (t, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, codec", [("a.mp4", "libx264"), ("a.webm", "libvpx-vp9"), ("a.avi", "mjpeg")])
def test_count_frames_matches_decoding(tmp_path, name, codec):
    encode_video(tmp_path / name, _frames(10), codec=codec)
    assert count_frames(tmp_path / name) == 10 == decode_video(tmp_path / name).num_frames


def test_decode_stops_at_max_frames_and_exports_vectors(tmp_path):
    frames = np.zeros((12, 32, 32, 3), np.uint8)
    for t in range(12):
        frames[t, 8:20, 4 + t:16 + t] = 255  # a square moving right
    encode_video(tmp_path / "m.mp4", frames, gop=12)
    out = decode_video(tmp_path / "m.mp4", max_frames=5, with_motion=True)
    assert out.frames.shape == (5, 32, 32, 3) and out.codec == "h264" and out.pict_types[0] == "I"
    assert out.motion_vectors[0] is None and out.has_vectors


def test_image_folder(tmp_path):
    for i, img in enumerate(_frames(3)):
        Image.fromarray(img).save(tmp_path / f"{i:03d}.png")
    assert count_frames(tmp_path) == 3
    assert decode_video(tmp_path, max_frames=2).frames.shape == (2, 32, 32, 3)


def test_bad_files_have_reasons(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    for name, reason in (("missing.mp4", "missing"), ("zero.mp4", "empty_file"), ("text.mp4", "not_video")):
        with pytest.raises(VideoDecodeError) as e:
            count_frames(tmp_path / name)
        assert e.value.reason == reason and name in str(e.value)
