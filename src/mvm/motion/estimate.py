"""Fallback motion for streams without motion vectors (VP9/AV1, MJPEG, image folders).

Coarse-to-fine block matching on downscaled luma, vectorised over blocks, shifts and frames with
numpy (no Python loop per block): a full search of ``+-COARSE_RADIUS`` pixels on a half-size
level, refined by ``+-1`` pixel on the matching level, then a V fit through the costs for a
sub-pixel estimate. The cost is the mean absolute luma difference plus a small penalty per pixel
of shift, so flat or ambiguous blocks prefer zero motion. Output follows the codec convention
(content moved from the previous frame to this one, pixels, dx right, dy down).

Reach: about ``(2 * COARSE_RADIUS + 1) * scale`` pixels per frame, where ``scale`` is the
downscale factor (1 below 128 px on the short side, 2 at 224 px, 4 at 448 px). Cost is a few
milliseconds per frame pair at 224 px, against tens for dense Farneback flow.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mvm.motion.field import MotionField, fill_invalid_frames, grid_shape

MATCH_BLOCK = 8  # block side on the matching level, in (downscaled) pixels
COARSE_RADIUS = 4  # full search radius on the coarse (half-size) level
PENALTY = 0.25  # grey levels of cost per pixel of shift: ties go to the shorter vector
CHUNK = 16  # frame pairs per vectorised batch (bounds memory on long videos)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def estimate_field(frames: np.ndarray, block: int = 4, codec: str = "", scale: int | None = None) -> MotionField:
    """Block-matching motion between consecutive frames.

    Args:
        frames: ``[F, H, W, 3]`` uint8 RGB.
        block: output grid cell side in pixels (``Hm = ceil(H / block)``).
        codec: recorded in the field.
        scale: downscale factor before matching (default: ``max(1, short_side // 112)``).

    Returns:
        MotionField with ``source="estimated"``; frame 0 (no previous frame) copies frame 1 and
        is marked invalid.
    """
    nf, h, w = frames.shape[:3]
    hm, wm = grid_shape(h, w, block)
    flow = np.zeros((nf, hm, wm, 2), np.float32)
    valid = np.arange(nf) > 0
    if nf < 2:
        return MotionField(flow, np.zeros(nf, bool), block, "estimated", codec)
    s = scale or max(1, min(h, w) // 112)
    luma = _downscale(frames, s)  # [F, h', w']
    cells = np.empty((nf - 1, -(-luma.shape[1] // MATCH_BLOCK), -(-luma.shape[2] // MATCH_BLOCK), 2), np.float32)
    for a in range(0, nf - 1, CHUNK):
        b = min(a + CHUNK, nf - 1)
        cells[a:b] = _match(luma[a + 1:b + 1], luma[a:b])
    cells *= -float(s)  # a block found at +shift in the previous frame moved by -shift, in pixels
    # Output cell centres -> matching cells (nearest).
    ys = np.minimum(((np.arange(hm) + 0.5) * block) // (MATCH_BLOCK * s), cells.shape[1] - 1).astype(int)
    xs = np.minimum(((np.arange(wm) + 0.5) * block) // (MATCH_BLOCK * s), cells.shape[2] - 1).astype(int)
    flow[1:] = cells[:, ys][:, :, xs]
    fill_invalid_frames(flow, valid)
    return MotionField(flow, valid, block, "estimated", codec)


def _downscale(frames: np.ndarray, s: int) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 -> ``[F, H/s, W/s]`` float32 luma (area mean; edges cropped)."""
    nf, h, w = frames.shape[:3]
    hs, ws = max(1, h // s), max(1, w // s)
    x = frames[:, : hs * s, : ws * s].astype(np.float32) @ _LUMA
    if s > 1:
        x = x.reshape(nf, hs, s, ws, s).mean((2, 4))
    return x


def _blocks(img: np.ndarray, bs: int) -> np.ndarray:
    """``[P, h, w]`` -> ``[P, Hc, Wc, bs, bs]`` (edge-padded to whole blocks)."""
    p, h, w = img.shape
    hc, wc = -(-h // bs), -(-w // bs)
    img = np.pad(img, ((0, 0), (0, hc * bs - h), (0, wc * bs - w)), mode="edge")
    return img.reshape(p, hc, bs, wc, bs).transpose(0, 1, 3, 2, 4)


def _search(cur: np.ndarray, prev: np.ndarray, bs: int, centre: np.ndarray,
            r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cost of every shift ``centre + [-r, r]^2`` of every block of ``cur`` against ``prev``.

    Args:
        cur, prev: ``[P, h, w]`` luma.
        centre: ``[P, Hc, Wc, 2]`` int (dy, dx) search centre per block.

    Returns:
        raw cost ``[P, Hc, Wc, 2r+1, 2r+1]`` (mean absolute difference), the cost with the
        shift penalty (what is minimised), and the shifts' offsets ``[2r+1]``.
    """
    blocks = _blocks(cur, bs)  # [P, Hc, Wc, bs, bs]
    p, hc, wc = blocks.shape[:3]
    pad = int(np.abs(centre).max(initial=0)) + r
    ref = np.pad(prev, ((0, 0), (pad, pad + hc * bs), (pad, pad + wc * bs)), mode="edge")
    span = np.arange(bs + 2 * r)
    y0 = (np.arange(hc) * bs)[None, :, None] + centre[..., 0] - r + pad  # [P, Hc, Wc]
    x0 = (np.arange(wc) * bs)[None, None, :] + centre[..., 1] - r + pad
    rows = y0[..., None, None] + span[:, None]  # [P, Hc, Wc, L, 1]
    cols = x0[..., None, None] + span[None, :]  # [P, Hc, Wc, 1, L]
    win = ref[np.arange(p)[:, None, None, None, None], rows, cols]  # [P, Hc, Wc, L, L]
    sw = sliding_window_view(win, (bs, bs), axis=(3, 4))  # [P, Hc, Wc, 2r+1, 2r+1, bs, bs]
    cost = np.abs(sw - blocks[:, :, :, None, None]).mean((-1, -2))
    off = np.arange(-r, r + 1)
    total = np.abs(centre[..., 0, None, None] + off[:, None]) + np.abs(centre[..., 1, None, None] + off[None, :])
    return cost, cost + PENALTY * total, off


def _half(x: np.ndarray) -> np.ndarray:
    """``[P, h, w]`` -> ``[P, h//2, w//2]`` (2x2 means)."""
    p, h, w = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(p, h // 2, 2, w // 2, 2).mean((2, 4))


def _argmin2(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each ``[..., n, n]`` table's minimum."""
    n = cost.shape[-1]
    flat = cost.reshape(*cost.shape[:-2], n * n).argmin(-1)
    return flat // n, flat % n


def _match(cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Per block of ``cur`` (``MATCH_BLOCK`` px), the shift (dx, dy) in pixels of this level
    where it is found in ``prev``; ``[P, Hc, Wc, 2]`` float32 with sub-pixel refinement."""
    p, h, w = cur.shape
    hc, wc = -(-h // MATCH_BLOCK), -(-w // MATCH_BLOCK)
    centre = np.zeros((p, hc, wc, 2), np.int64)
    if min(h, w) >= 4 * MATCH_BLOCK:  # coarse full search on the half-size level, same blocks
        hb = MATCH_BLOCK // 2
        half_cur, half_prev = _half(cur), _half(prev)
        start = np.zeros((p, -(-half_cur.shape[1] // hb), -(-half_cur.shape[2] // hb), 2), np.int64)
        _, cost, off = _search(half_cur, half_prev, hb, start, COARSE_RADIUS)
        iy, ix = _argmin2(cost)
        coarse = np.stack([off[iy], off[ix]], -1) * 2
        centre[:, : coarse.shape[1], : coarse.shape[2]] = coarse[:, :hc, :wc]
        radius = 1
    else:  # too small for two levels: one full search
        radius = COARSE_RADIUS
    raw, cost, off = _search(cur, prev, MATCH_BLOCK, centre, radius)
    iy, ix = _argmin2(cost)
    dy = centre[..., 0] + off[iy] + _subpixel(raw, iy, ix, axis=0)
    dx = centre[..., 1] + off[ix] + _subpixel(raw, iy, ix, axis=1)
    return np.stack([dx, dy], -1).astype(np.float32)


def _subpixel(cost: np.ndarray, iy: np.ndarray, ix: np.ndarray, axis: int) -> np.ndarray:
    """Sub-pixel offset of the minimum along one axis: the equiangular (V) fit through three
    costs, which suits absolute differences. A near-perfect integer match (cost at the minimum
    under a tenth of its neighbours') is left alone: there the V's slopes reflect the texture's
    asymmetry, not a fractional shift."""
    n = cost.shape[-1]
    i = iy if axis == 0 else ix
    inner = (i > 0) & (i < n - 1)
    ic = np.clip(i, 1, n - 2)
    flat = cost.reshape(*cost.shape[:-2], n * n)

    def at(k: np.ndarray) -> np.ndarray:
        y, x = (k, ix) if axis == 0 else (iy, k)
        return np.take_along_axis(flat, (y * n + x)[..., None], -1)[..., 0]

    lo, mid, hi = at(ic - 1), at(ic), at(ic + 1)
    slope = np.maximum(lo, hi) - mid
    delta = np.where(slope > 1e-6, 0.5 * (lo - hi) / np.maximum(slope, 1e-6), 0.0)
    exact = mid < 0.1 * np.minimum(lo, hi)
    return np.where(inner & ~exact, np.clip(delta, -0.5, 0.5), 0.0)
