"""Video I/O: frame counts from the header, decoding limits, clear reasons for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mvm.data.video_io import (
    HeldFrames,
    VideoDecodeError,
    count_frames,
    decode_video,
    encode_video,
    frame_index,
)


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


def test_exported_vectors_own_their_memory(tmp_path):
    # PyAV's side-data view would keep each decoded frame alive with the array: the vectors are
    # copied out, with the same fields and values as PyAV's own array.
    import av

    frames = np.zeros((6, 32, 32, 3), np.uint8)
    for t in range(6):
        frames[t, 8:20, 4 + 2 * t:16 + 2 * t] = 255
    encode_video(tmp_path / "m.mp4", frames, gop=6)
    out = decode_video(tmp_path / "m.mp4", with_motion=True)
    with av.open(str(tmp_path / "m.mp4")) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        raw = [f.side_data.get("MOTION_VECTORS") for f in container.decode(stream)]
        want = [None if sd is None else sd.to_ndarray().copy() for sd in raw]
    assert sum(mv is not None for mv in out.motion_vectors) == 5
    for got, ref in zip(out.motion_vectors, want):
        if ref is None:
            assert got is None
            continue
        assert got.dtype == ref.dtype and np.array_equal(got, ref) and got.flags.writeable
        base = got.base
        while base is not None:  # nothing of PyAV's (side data, frame) down the chain
            assert not type(base).__module__.startswith("av")
            base = getattr(base, "obj", None) or getattr(base, "base", None)


def test_decoded_frames_are_freed_without_the_garbage_collector(tmp_path, monkeypatch):
    # Reading PyAV's side data ties each frame into a reference cycle; decode_video breaks it
    # once the vectors are copied, so no decoded frame outlives the decode even with the
    # collector off (where the release is unavailable, it collects once per decode instead).
    import gc
    import types

    import av

    from mvm.data import video_io

    frames = np.zeros((10, 32, 32, 3), np.uint8)
    for t in range(10):
        frames[t, 8:20, 4 + t:16 + t] = 255
    encode_video(tmp_path / "m.mp4", frames, gop=10)
    assert video_io._RELEASE_SIDE_DATA is not None  # CPython with PyAV's container types
    monkeypatch.setattr(video_io, "gc", types.SimpleNamespace(collect=lambda *a: 0))  # no fallback
    gc.collect()
    gc.disable()
    try:
        out = decode_video(tmp_path / "m.mp4", with_motion=True)
        alive = sum(isinstance(o, av.VideoFrame) for o in gc.get_objects())
    finally:
        gc.enable()
    assert out.has_vectors and sum(mv is not None for mv in out.motion_vectors) == 9
    assert alive == 0


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


@pytest.mark.parametrize("name,kw", [("gop.mp4", dict(gop=8)), ("bframes.mp4", dict(gop=8, bframes=2, refs=2)),
                                     ("vp9.webm", dict(codec="libvpx-vp9")), ("mpeg4.avi", dict(codec="mpeg4"))])
def test_seeking_decode_equals_full_decode(tmp_path, name, kw):
    frames = np.random.default_rng(1).integers(0, 255, (40, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / name, frames, **kw)
    full = decode_video(tmp_path / name, with_motion=True)
    pts = frame_index(tmp_path / name)
    assert len(pts) == full.num_frames == 40
    for start in (1, 8, 13, 39):
        part = decode_video(tmp_path / name, start=start, max_frames=6, with_motion=True, pts=pts if start > 8 else None)
        assert part.start == start and part.num_frames == min(6, 40 - start)
        assert np.array_equal(part.frames, full.frames[start:start + 6])
        # a P-frame's vectors do not depend on where decoding began
        for a, b in zip(part.motion_vectors[1:], full.motion_vectors[start + 1:start + 6]):
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))
    window = full.window(5, 9)
    assert window.start == 5 and np.array_equal(window.frames, full.frames[5:9])
    with pytest.raises(VideoDecodeError, match="no_frames"):
        decode_video(tmp_path / name, start=40)


def test_keep_returns_only_the_asked_frames(tmp_path):
    frames = np.random.default_rng(3).integers(0, 255, (40, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "v.mp4", frames, gop=8)
    full = decode_video(tmp_path / "v.mp4")
    pts = frame_index(tmp_path / "v.mp4")
    keep = np.array([0, 4, 8, 12])
    for start in (0, 3, 13):
        part = decode_video(tmp_path / "v.mp4", start=start, max_frames=13, pts=pts, keep=keep)
        assert part.start == start and part.num_frames == 4 and len(part.pict_types) == 4
        assert np.array_equal(part.frames, full.frames[start + keep])
        assert part.pict_types == [full.pict_types[start + k] for k in keep]
    # max_frames counts every frame, kept or not: offsets past it are not returned
    part = decode_video(tmp_path / "v.mp4", start=30, max_frames=9, pts=pts, keep=np.array([0, 4, 8, 12]))
    assert np.array_equal(part.frames, full.frames[[30, 34, 38]])


def test_rgb_converts_only_the_asked_frames_and_keeps_every_vector(tmp_path):
    frames = np.random.default_rng(5).integers(0, 255, (30, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "v.mp4", frames, gop=8, refs=1)
    pts = frame_index(tmp_path / "v.mp4")
    full = decode_video(tmp_path / "v.mp4", with_motion=True)
    assert full.max_refs == 1 and full.rgb is None and full.single_reference
    part = decode_video(tmp_path / "v.mp4", start=5, max_frames=20, with_motion=True, pts=pts,
                        rgb=np.array([2, 6, 10]))
    assert part.num_frames == 20 and part.frames.shape == (20, 32, 48, 3) and not part.frames.any()
    assert part.rgb.tolist() == [-1, -1, 0, -1, -1, -1, 1, -1, -1, -1, 2] + [-1] * 9
    assert np.array_equal(part.pixels(np.array([2, 10, 6])), full.frames[[7, 15, 11]])
    # the asked frames are held as decoded (half of RGB's bytes) and converted by each read
    assert isinstance(part.rgb_frames, HeldFrames) and part.rgb_frames.shape == (3, 32, 48, 3)
    assert part.nbytes >= 3 * 32 * 48 * 3
    first = part.pixels(np.array([2, 6, 10]))
    assert np.array_equal(first, full.frames[[7, 11, 15]])
    assert not np.shares_memory(first, part.pixels(np.array([2, 6, 10])))
    # a crop is converted and cut in one go, the same pixels as cropping the whole frames
    crop = part.pixels(np.array([10, 2]), box=(3, 5, 20, 31))
    assert crop.shape == (2, 20, 31, 3) and crop.flags.c_contiguous
    assert np.array_equal(crop, full.frames[[15, 7], 3:23, 5:36])
    # converted frames in order: those frames themselves, not a copy; any other order copies
    assert full.pixels(np.arange(full.num_frames)) is full.frames
    assert not np.shares_memory(full.pixels(np.array([2, 1])), full.frames)
    crop = full.pixels(np.array([4, 1]), box=(0, 0, 32, 48))
    assert np.array_equal(crop, full.frames[[4, 1]]) and crop.flags.c_contiguous
    for bad in ((-1, 0, 4, 4), (0, 0, 33, 4), (0, 45, 4, 4), (0, 0, 0, 4)):
        with pytest.raises(ValueError, match="outside 32x48"):
            part.pixels(np.array([2]), box=bad)
        with pytest.raises(ValueError, match="outside 32x48"):
            full.pixels(np.array([2]), box=bad)
    assert part.pict_types == full.pict_types[5:25]
    for a, b in zip(part.motion_vectors[1:], full.motion_vectors[6:25]):  # after the first, as decoded
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))
    window = part.window(4, 12)
    assert np.array_equal(window.pixels(np.array([2, 6])), full.frames[[11, 15]])
    with pytest.raises(ValueError, match="without their pixels"):
        part.pixels(np.array([2, 3]))
    encode_video(tmp_path / "b.mp4", frames, gop=8, refs=2, bframes=2)
    assert not decode_video(tmp_path / "b.mp4", with_motion=True).single_reference


def test_image_folder_honours_start(tmp_path):
    from PIL import Image

    frames = np.random.default_rng(2).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"img_{i + 1:05d}.png")
    part = decode_video(tmp_path, start=2, max_frames=3)
    assert part.start == 2 and np.array_equal(part.frames, frames[2:5])


def test_held_frames_of_a_stream_whose_size_changes_are_converted_and_resized(tmp_path):
    def moving(h, w):
        y, x = np.mgrid[0:h, 0:w]
        return np.stack([np.stack([(x * 5 + y * 3 + 2 * t) % 256, (x * 2 - 3 * t) % 256, (y * 7 + t) % 256], -1)
                         for t in range(10)]).astype(np.uint8)

    encode_video(tmp_path / "a.h264", moving(32, 48), gop=10, bframes=2, refs=2)
    encode_video(tmp_path / "b.h264", moving(40, 64), gop=10, bframes=2, refs=2)
    # one raw H.264 stream whose second half has another size (a new sequence parameter set)
    (tmp_path / "c.h264").write_bytes((tmp_path / "a.h264").read_bytes() + (tmp_path / "b.h264").read_bytes())
    full = decode_video(tmp_path / "c.h264", with_motion=True)
    assert full.frames.shape == (20, 32, 48, 3) and full.luma is None  # brought to the first size
    shown = np.array([1, 5, 12, 17])
    part = decode_video(tmp_path / "c.h264", with_motion=True, rgb=shown)
    assert isinstance(part.rgb_frames, np.ndarray)  # not held: converted and resized at once
    assert np.array_equal(part.pixels(shown), full.frames[shown])
    assert np.array_equal(part.pixels(shown[::-1], box=(2, 3, 20, 30)), full.frames[shown[::-1], 2:22, 3:33])


def test_luma_planes_grow_and_give_up_on_a_size_change():
    import av

    from mvm.data.video_io import _LumaPlanes

    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 256, (6, 10), np.uint8) for _ in range(70)]
    luma = _LumaPlanes(None)  # length unknown: grown past its first 64 planes
    for p in planes:
        luma.add(av.VideoFrame.from_ndarray(p, format="gray"))
    assert np.array_equal(luma.planes(), np.stack(planes))
    exact = _LumaPlanes(3)
    for p in planes[:3]:
        exact.add(av.VideoFrame.from_ndarray(p, format="gray"))
    assert np.array_equal(exact.planes(), np.stack(planes[:3])) and exact.rows() is None
    # skipped frames (before the first plane too) share one zero plane, after the decoded ones
    sparse = _LumaPlanes(5)
    for p in (None, planes[0], None, None, planes[1]):
        sparse.skip() if p is None else sparse.add(av.VideoFrame.from_ndarray(p, format="gray"))
    assert np.array_equal(sparse.planes(), np.stack([planes[0], planes[1], np.zeros_like(planes[0])]))
    assert sparse.rows().tolist() == [2, 0, 2, 2, 1]
    luma.add(av.VideoFrame.from_ndarray(np.zeros((8, 10), np.uint8), format="gray"))
    assert luma.planes() is None  # frames of two sizes: no luma (the check reads RGB instead)


def test_frames_before_the_clip_that_nothing_refers_to_are_not_decoded(tmp_path):
    import av

    from mvm.data.video_io import _decoded

    frames = np.random.default_rng(4).integers(0, 255, (48, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "b.mp4", frames, gop=48, bframes=3, refs=2)  # one keyframe: a long pre-roll
    pts = frame_index(tmp_path / "b.mp4")
    full = decode_video(tmp_path / "b.mp4", with_motion=True)
    part = decode_video(tmp_path / "b.mp4", start=30, max_frames=10, with_motion=True, pts=pts)
    assert np.array_equal(part.frames, full.frames[30:40]) and part.pict_types == full.pict_types[30:40]
    for a, b in zip(part.motion_vectors, full.motion_vectors[30:40]):
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))

    def before_start(first_pts):
        with av.open(str(tmp_path / "b.mp4")) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "NONE"
            container.seek(int(pts[30]), backward=True, any_frame=False, stream=stream)
            return sum(f.pts < pts[30] for f in _decoded(container, stream, first_pts))

    assert before_start(None) == 30  # from the keyframe: every frame before the clip
    assert before_start(int(pts[30])) < 30  # the non-reference B-frames among them are skipped


def test_a_sparse_decode_skips_unneeded_frames_and_still_seeks(tmp_path, caplog):
    import logging

    frames = np.random.default_rng(5).integers(0, 255, (48, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "b.mp4", frames, gop=48, bframes=3, refs=2)
    pts = frame_index(tmp_path / "b.mp4")
    full = decode_video(tmp_path / "b.mp4")
    with caplog.at_level(logging.DEBUG, logger="mvm.data.video_io"):
        for start, keep in [(9, np.arange(0, 33, 4)), (20, np.array([1, 2, 27])), (2, np.array([0]))]:
            part = decode_video(tmp_path / "b.mp4", start=start, max_frames=int(keep[-1]) + 1, pts=pts, keep=keep)
            assert np.array_equal(part.frames, full.frames[start + keep])
    assert "decoding from frame 0" not in caplog.text  # the skipped frames are not taken for a missed seek


def test_skip_unreferenced_keeps_every_frame_in_place_and_decodes_the_shown_ones(tmp_path):
    frames = np.random.default_rng(6).integers(0, 255, (48, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "b.mp4", frames, gop=48, bframes=3, refs=2)
    pts = frame_index(tmp_path / "b.mp4")
    full = decode_video(tmp_path / "b.mp4", start=10, max_frames=29, with_motion=True, pts=pts)
    shown = np.arange(4, 29, 4)
    part = decode_video(tmp_path / "b.mp4", start=10, max_frames=29, with_motion=True, pts=pts, rgb=shown,
                        skip_unreferenced=True)
    assert part.num_frames == 29 and full.luma.shape == (29, 32, 48) and full.luma_rows is None
    assert np.array_equal(part.pixels(shown), full.frames[shown])
    skipped = [k for k, t in enumerate(part.pict_types) if t == "b"]
    assert skipped and not set(skipped) & set(shown.tolist())  # some frames skipped, never a shown one
    # a plane per decoded frame, and one zero plane the skipped frames share
    assert part.luma.shape == (29 - len(skipped) + 1, 32, 48) and part.luma_rows.shape == (29,)
    assert len({int(part.luma_rows[k]) for k in skipped}) == 1
    for k in range(29):
        if k in skipped:  # a placeholder: no vectors, no pixels; was a B-frame
            assert part.motion_vectors[k] is None and not part.luma_plane(k).any() and full.pict_types[k] == "B"
        else:  # decoded: the same as in the full decode
            assert part.pict_types[k] == full.pict_types[k] and np.array_equal(part.luma_plane(k), full.luma_plane(k))
            a, b = part.motion_vectors[k], full.motion_vectors[k]
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))
    window = part.window(3, 20)  # a window keeps the planes and cuts the rows
    assert all(np.array_equal(window.luma_plane(k), part.luma_plane(k + 3)) for k in range(17))
