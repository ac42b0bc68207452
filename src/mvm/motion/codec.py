"""Dense per-frame motion from the motion vectors stored in the compressed stream (H.264, MPEG-4).

FFmpeg (``flags2=+export_mvs``) exports, per inter-coded block, ``dst`` (block centre in the
current frame), ``src`` (where the prediction was taken from in the reference) and
``motion / motion_scale == src - dst`` (quarter-pixel precise; ``src`` itself is rounded), plus
``source``: -1 for a reference in the past (list 0), +1 for one in the future (list 1, B-frames).
How many frames away the reference is, is *not* exported. We recover it (see ``docs/motion.md``):

- candidates: 1..3 frames, and the nearest I/P frames in that direction (where P-frames of a
  B-frame stream and B-frames take their references);
- each moving vector (>= 1 px, block and reference block inside the picture) is checked against every candidate frame: the block's pixels in
  this frame are compared (mean absolute luma difference on a 4x4 lattice of points) with the
  pixels at ``src`` in the candidate; a clearly better match wins, otherwise the structural
  guess (nearest I/P frame) stays. Vectors under 1 px take the structural guess.

Displacement per frame, in the "content moved from the previous frame to this one" convention:
P (past reference, distance d): ``(dst - src) / d``; B (future reference, distance d): content at
``dst`` is at ``src`` d frames later, so ``(src - dst) / d``. Blocks with both are averaged
(a zero vector FFmpeg exports for the unused direction of a one-sided B partition is dropped); cells
without a vector (intra blocks) take the mean of the vectors within 4 cells (else zero); frames
without vectors (I-frames) or mostly intra take the mean of the nearest measured frames and are
marked invalid.
"""

from __future__ import annotations

import math

import numpy as np

from mvm.data.video_io import DecodedVideo
from mvm.motion.field import MotionField, fill_invalid_frames, grid_shape

NEAR_DISTANCES = (1, 2, 3)  # always-tried reference distances (frames)
ANCHORS = 3  # and this many nearest I/P frames in the vector's direction
MIN_CHECKED = 1.0  # pixels: shorter vectors take the structural distance
# The structural guess is kept unless another candidate beats it by TIE_MARGIN grey levels and
# costs under CLEARLY_BETTER of it: blocks mixing object and background match every candidate
# poorly, and only a clear winner is evidence of a farther reference.
TIE_MARGIN = 2.0
CLEARLY_BETTER = 0.5
MIN_COVERED = 0.5  # share of a frame's cells with a vector for the frame to count as measured


def codec_field(decoded: DecodedVideo, block: int = 4, check_refs: bool = True) -> MotionField:
    """Turn each frame's block vectors into a dense field on a ``block``-pixel grid.

    Args:
        decoded: from ``decode_video(path, with_motion=True)``.
        block: grid cell side in pixels (``Hm = ceil(H / block)``).
        check_refs: verify each moving vector's reference distance against the pixels (see
            module doc); False takes the structural guess for every vector (exact for
            ``ref=1`` streams, an over-estimate by up to the reference distance otherwise).

    Returns:
        MotionField with ``source="codec"``; ``valid[f]`` is False for frames without vectors.
    """
    frames = decoded.frames
    nf, h, w = frames.shape[:3]
    flow = np.zeros((nf, *grid_shape(h, w, block), 2), np.float32)
    valid = np.array([mv is not None and len(mv) > 0 for mv in decoded.motion_vectors[:nf]]
                     + [False] * max(0, nf - len(decoded.motion_vectors)), bool)
    if valid.any():
        fidx, mv = _stack_vectors(decoded.motion_vectors[:nf])
        fidx, mv = _drop_unused_partitions(fidx, mv)
        off = np.stack([mv["motion_x"], mv["motion_y"]], 1) / np.maximum(mv["motion_scale"], 1)[:, None]
        direction = np.where(mv["source"] > 0, 1, -1)
        dist = _reference_distance(frames, decoded.pict_types, fidx, mv, off, direction, check_refs)
        keep = dist > 0  # references outside the decoded frames cannot be placed in time
        # P (past ref): content at src is now at dst -> dst - src = -off; B (future): src - dst = +off.
        disp = (off * direction[:, None]) / np.maximum(dist, 1)[:, None]
        flow, covered = _paint(fidx[keep], mv[keep], disp[keep].astype(np.float32), nf, h, w, block)
        # Frames mostly without vectors (scene cuts coded intra) are filled from their neighbours.
        valid &= covered.reshape(nf, -1).mean(1) >= MIN_COVERED
        _fill_holes(flow, covered, valid)
    fill_invalid_frames(flow, valid)
    return MotionField(flow, valid, block, "codec", decoded.codec)


def _stack_vectors(per_frame: list) -> tuple[np.ndarray, np.ndarray]:
    """All frames' vectors in one structured array, with the frame index of each."""
    parts = [(f, mv) for f, mv in enumerate(per_frame) if mv is not None and len(mv)]
    fidx = np.concatenate([np.full(len(mv), f, np.int64) for f, mv in parts])
    return fidx, np.concatenate([mv for _, mv in parts])


def _drop_unused_partitions(fidx: np.ndarray, mv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the zero vector of a block exported for both directions when the other is non-zero.

    FFmpeg exports every partition of a B macroblock for each list the macroblock uses, so a
    partition predicted from one direction only also appears, with a zero vector, for the other.
    A block truly predicted from both sides by moving content has two non-zero vectors; a static
    one has two zeros. Averaging the placeholder zero in would halve the motion.
    """
    key = np.stack([fidx, mv["dst_x"], mv["dst_y"], mv["w"], mv["h"]], 1)
    _, group, size = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    zero = (mv["motion_x"] == 0) & (mv["motion_y"] == 0)
    moving_in_group = np.bincount(group, weights=~zero, minlength=len(size)) > 0
    keep = ~(zero & (size[group] > 1) & moving_in_group[group])
    return fidx[keep], mv[keep]


def _anchor_distance(types: list[str], nf: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, the distance to the nearest I/P frame before and after it (0: none decoded),
    and the I/P frames themselves."""
    anchors = np.array([i for i in range(nf) if i < len(types) and types[i] in "IP?"], np.int64)
    frame = np.arange(nf)
    back = np.zeros(nf, np.int64)
    fwd = np.zeros(nf, np.int64)
    if anchors.size:
        pos = np.searchsorted(anchors, frame)  # first anchor >= frame
        has_prev = pos > 0
        back[has_prev] = frame[has_prev] - anchors[pos[has_prev] - 1]
        nxt = np.searchsorted(anchors, frame, side="right")
        has_next = nxt < anchors.size
        fwd[has_next] = anchors[nxt[has_next]] - frame[has_next]
    return back, fwd, anchors


def _candidates(types: list[str], nf: int) -> tuple[np.ndarray, np.ndarray]:
    """``[nf, C]`` candidate distances for past and for future references (0 = padding)."""
    back, fwd, anchors = _anchor_distance(types, nf)
    tables = []
    for sign, first in ((-1, back), (1, fwd)):
        rows = []
        for f in range(nf):
            if not first[f]:  # no I/P frame decoded in that direction: the reference is out of reach
                rows.append([])
                continue
            near = [a for a in (anchors[::-1] if sign < 0 else anchors) if (a - f) * sign > 0][:ANCHORS]
            cand = list(dict.fromkeys([int(first[f]), *NEAR_DISTANCES, *(abs(int(a) - f) for a in near)]))
            rows.append([d for d in cand if 0 <= f + sign * d < nf])
        width = max(1, max(len(r) for r in rows))
        tables.append(np.array([r + [0] * (width - len(r)) for r in rows], np.int64).reshape(nf, width))
    return tables[0], tables[1]


def _reference_distance(frames: np.ndarray, types: list[str], fidx: np.ndarray, mv: np.ndarray,
                        off: np.ndarray, direction: np.ndarray, check: bool) -> np.ndarray:
    """Frames between each vector's frame and its reference (0 where none is decoded)."""
    nf, h, w = frames.shape[:3]
    past, future = _candidates(types, nf)
    cand = np.where((direction > 0)[:, None], _pad(future, past.shape[1])[fidx],
                    _pad(past, future.shape[1])[fidx])  # [N, C]; column 0 is the structural guess
    dist = cand[:, 0].copy()
    # Checked: moving vectors whose block and reference block lie inside the picture (near the
    # border the encoder predicts from replicated edge pixels, which no candidate reproduces).
    x0, x1 = mv["dst_x"] - mv["w"] / 2, mv["dst_x"] + mv["w"] / 2
    y0, y1 = mv["dst_y"] - mv["h"] / 2, mv["dst_y"] + mv["h"] / 2
    inside = ((np.minimum(x0, x0 + off[:, 0]) >= 0) & (np.maximum(x1, x1 + off[:, 0]) <= w)
              & (np.minimum(y0, y0 + off[:, 1]) >= 0) & (np.maximum(y1, y1 + off[:, 1]) <= h))
    checked = inside & (np.hypot(off[:, 0], off[:, 1]) >= MIN_CHECKED)
    if not check or not checked.any() or cand.shape[1] < 2:
        return dist
    sel = np.flatnonzero(checked)
    c = cand[sel]  # [M, C]
    # 4x4 lattice of points inside each block, in this frame and at the offset in the reference.
    lat = (np.arange(4) + 0.5) / 4 - 0.5
    px = mv["dst_x"][sel, None].astype(np.float32) + lat[None, :] * mv["w"][sel, None]  # [M, 4]
    py = mv["dst_y"][sel, None].astype(np.float32) + lat[None, :] * mv["h"][sel, None]
    xs = np.broadcast_to(px[:, None, :], (sel.size, 4, 4)).reshape(sel.size, 16)
    ys = np.broadcast_to(py[:, :, None], (sel.size, 4, 4)).reshape(sel.size, 16)
    cur = _sample(frames, fidx[sel, None], ys, xs)  # [M, 16]
    ref_f = fidx[sel, None] + direction[sel, None] * c  # [M, C]
    rx = (xs + off[sel, 0, None])[:, None, :]
    ry = (ys + off[sel, 1, None])[:, None, :]
    ref = _sample(frames, ref_f[:, :, None], ry, rx)  # [M, C, 16]
    cost = np.abs(ref - cur[:, None, :]).mean(-1)
    cost[c == 0] = np.inf
    best = cost.argmin(1)
    rows = np.arange(sel.size)
    better = (cost[rows, best] + TIE_MARGIN < cost[:, 0]) & (cost[rows, best] < CLEARLY_BETTER * cost[:, 0])
    dist[sel] = np.where(better, c[rows, best], c[:, 0])
    return dist


def _pad(table: np.ndarray, width: int) -> np.ndarray:
    if table.shape[1] >= width:
        return table
    return np.pad(table, ((0, 0), (0, width - table.shape[1])))


def _sample(frames: np.ndarray, f: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Green (a cheap luma proxy) at integer-rounded points (clamped to the frame); ``f``
    broadcasts with ``y``, ``x``."""
    nf, h, w = frames.shape[:3]
    fi = np.clip(f, 0, nf - 1)
    yi = np.clip(np.rint(y).astype(np.int64), 0, h - 1)
    xi = np.clip(np.rint(x).astype(np.int64), 0, w - 1)
    return frames[fi, yi, xi, 1].astype(np.float32)


def _paint(fidx: np.ndarray, mv: np.ndarray, disp: np.ndarray, nf: int, h: int, w: int,
           block: int, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean of the block vectors over each grid cell.

    Rectangles are painted with a 2-D difference array on a fine grid (4 px, H.264's smallest
    partition, or a divisor of ``block``), then pooled into ``block`` cells; ``chunk`` frames at
    a time to bound memory on long videos.

    Returns:
        flow ``[nf, Hm, Wm, 2]`` and covered ``[nf, Hm, Wm]`` (cells any vector reached).
    """
    hm, wm = grid_shape(h, w, block)
    flow = np.zeros((nf, hm, wm, 2), np.float32)
    covered = np.zeros((nf, hm, wm), bool)
    for start in range(0, nf, chunk):
        sel = (fidx >= start) & (fidx < start + chunk)
        n = min(chunk, nf - start)
        flow[start:start + n], covered[start:start + n] = _paint_chunk(
            fidx[sel] - start, mv[sel], disp[sel], n, hm, wm, block)
    return flow, covered


def _paint_chunk(fidx: np.ndarray, mv: np.ndarray, disp: np.ndarray, nf: int, hm: int, wm: int,
                 block: int) -> tuple[np.ndarray, np.ndarray]:
    fine = math.gcd(block, 4)
    k = block // fine
    hf, wf = hm * k, wm * k
    x0 = np.clip(np.floor((mv["dst_x"] - mv["w"] / 2) / fine), 0, wf).astype(np.int64)
    x1 = np.clip(np.ceil((mv["dst_x"] + mv["w"] / 2) / fine), 0, wf).astype(np.int64)
    y0 = np.clip(np.floor((mv["dst_y"] - mv["h"] / 2) / fine), 0, hf).astype(np.int64)
    y1 = np.clip(np.ceil((mv["dst_y"] + mv["h"] / 2) / fine), 0, hf).astype(np.int64)
    vals = np.concatenate([disp, np.ones((len(disp), 1), np.float32)], 1)  # dx, dy, count
    size = nf * (hf + 1) * (wf + 1)
    diff = np.empty((3, size), np.float32)
    corners = ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1))
    idx = np.concatenate([(fidx * (hf + 1) + yy) * (wf + 1) + xx for yy, xx, _ in corners])
    sign = np.concatenate([np.full(len(fidx), s, np.float32) for _, _, s in corners])
    for c in range(3):
        diff[c] = np.bincount(idx, weights=np.tile(vals[:, c], 4) * sign, minlength=size)
    acc = diff.reshape(3, nf, hf + 1, wf + 1).cumsum(2).cumsum(3)[:, :, :hf, :wf]
    acc = acc.reshape(3, nf, hm, k, wm, k).sum((3, 5))  # [3, nf, hm, wm]
    count = acc[2]
    covered = count > 0.5
    flow = np.zeros((nf, hm, wm, 2), np.float32)
    flow[covered] = (acc[:2][:, covered] / count[covered]).T
    return flow, covered


def _fill_holes(flow: np.ndarray, covered: np.ndarray, valid: np.ndarray, radius: int = 4) -> None:
    """Cells no vector covered (intra blocks) take the mean of the covered cells within
    ``radius`` cells (a normalised box filter, in place); cells with none stay zero."""
    frames = np.flatnonzero(valid & ~covered.reshape(len(covered), -1).all(1))
    if frames.size == 0:
        return
    have = covered[frames]
    vals = np.concatenate([flow[frames] * have[..., None], have[..., None]], -1).astype(np.float32)
    box = _box_sum(_box_sum(vals, radius, 1), radius, 2)  # [n, Hm, Wm, 3]: sum dx, sum dy, count
    hole = ~have & (box[..., 2] > 0.5)
    sub = flow[frames]
    sub[hole] = box[..., :2][hole] / box[..., 2][hole][:, None]
    flow[frames] = sub


def _box_sum(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Sum over a window of ``2r + 1`` along ``axis`` (zeros beyond the edges), by a running sum."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    c = np.zeros((n + 2 * r + 1, *x.shape[1:]), x.dtype)
    np.cumsum(x, axis=0, out=c[r + 1:n + r + 1])
    c[n + r + 1:] = c[n + r]
    return np.moveaxis(c[2 * r + 1:] - c[:n], 0, axis)
