"""Block vectors onto a cell grid (``paint``) and intra cells filled from their neighbours
(``fill_holes``): the two array steps of ``mvm.motion.codec`` that turn one frame's vectors into
a dense field, as definitions of ``tests/test_motion_codec.py`` say (area-weighted mean per cell;
mean of the covered cells within ``FILL_RADIUS``).

Both are compiled loops (numba), one pass over the vectors and one over each frame's cells.
The NumPy versions they replace (footprint-offset scatters, a summed-area table read at the
holes; in git history at e4b1aea) took about 1.9x (painting) and 5x (hole filling) their time per
340-px loader item on real footage: every array pass walks the whole ``[frames, cells]`` field,
where the loops touch each vector and cell once (docs/benchmarks.md, "Compiled motion field").
"""

from __future__ import annotations

import numba
import numpy as np

from mvm.motion.field import grid_shape

FILL_RADIUS = 4  # cells: an intra cell takes the mean of the covered cells this close


def paint(v: dict[str, np.ndarray], disp: np.ndarray, nf: int, h: int, w: int, block: int,
          use: np.ndarray | None = None, origin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean of the block vectors over each ``block``-pixel grid cell.

    Args:
        v: vector columns (``mvm.motion.codec._columns``): block centre ``x, y`` and size
            ``bw, bh`` (pixels, integer-valued), frame ``row`` (``0..nf-1``).
        disp: ``[N, 2]`` float32 displacement per vector.
        nf, h, w: frames and picture size of the grid (``Hm = ceil(h / block)``).
        use: ``[N]`` bool, the vectors to paint (None: all); the others are passed over, so the
            caller need not copy the columns to drop some.
        origin: ``(x, y)`` pixel of the grid's top-left corner in the vectors' frame (a crop
            region's cells painted as a picture of their own).

    Returns:
        flow ``[nf, Hm, Wm, 2]`` float32 and covered ``[nf, Hm, Wm]`` bool (cells a vector reached).

    The weights are pixels of overlap. H.264 block edges lie on a 4-px grid, so a cell's weights
    share a power-of-two factor and the means are those of counting 4- or 8-px sub-cells: a
    cell holding one vector gets it exactly, one holding two their float32 mean.
    """
    hm, wm = grid_shape(h, w, block)
    flow = np.zeros((nf, hm, wm, 2), np.float32)
    area = np.zeros((nf, hm, wm), np.int32)
    n = v["row"].size
    _paint_loop(*(np.ascontiguousarray(v[k], dt) for k, dt in (("row", np.int64), ("x", np.float32), ("y", np.float32),
                                                               ("bw", np.float32), ("bh", np.float32))),
                np.ones(n, np.bool_) if use is None else np.ascontiguousarray(use, np.bool_),
                int(origin[0]), int(origin[1]), np.ascontiguousarray(disp, np.float32), int(block), _shift(block), flow, area)
    return flow, area > 0


def _shift(block: int) -> int:
    """``log2(block)`` for a power of two (cells found by a shift), else -1 (by division)."""
    return block.bit_length() - 1 if block & (block - 1) == 0 else -1


@numba.njit(cache=True, nogil=True)
def _paint_loop(row, x, y, bw, bh, use, ox0, oy0, disp, block, shift, flow, area):  # pragma: no cover (compiled)
    nf, hm, wm = area.shape
    painted = np.zeros(nf, np.bool_)  # frames a vector reached (the others stay zero: no division)
    whole = np.int32(block * block)  # a whole cell's pixels
    for i in range(row.size):
        if not use[i]:
            continue
        r, d0, d1 = row[i], disp[i, 0], disp[i, 1]
        painted[r] = True
        # the block's pixels (integers; int32 truncation as NumPy's astype), the grid at the origin
        w_i, h_i = np.int64(np.int32(bw[i])), np.int64(np.int32(bh[i]))
        x0 = np.int64(np.int32(x[i])) - ox0 - (w_i >> 1)
        y0 = np.int64(np.int32(y[i])) - oy0 - (h_i >> 1)
        x1, y1 = x0 + w_i, y0 + h_i
        if (shift >= 0 and min(x0, y0) >= 0 and ((x0 | y0 | w_i | h_i) & (block - 1)) == 0
                and x1 <= wm * block and y1 <= hm * block):
            # A block of whole cells (H.264 partitions on an 8-px grid): each cell gets all of
            # its pixels, no overlap to measure (the same sums as below, a tenth less time).
            e0, e1 = np.float32(whole) * d0, np.float32(whole) * d1
            for cy in range(y0 >> shift, y1 >> shift):
                for cx in range(x0 >> shift, x1 >> shift):
                    area[r, cy, cx] += whole
                    flow[r, cy, cx, 0] += e0
                    flow[r, cy, cx, 1] += e1
            continue
        cy = max(y0, 0) >> shift if shift >= 0 else max(y0, 0) // block  # (a shift: 4x cheaper)
        while cy < hm and cy * block < y1:  # the cells the block overlaps, and by how many pixels
            oy = min(y1, (cy + 1) * block) - max(y0, cy * block)
            cx = max(x0, 0) >> shift if shift >= 0 else max(x0, 0) // block
            while cx < wm and cx * block < x1:
                a = oy * (min(x1, (cx + 1) * block) - max(x0, cx * block))
                area[r, cy, cx] += a
                weight = np.float32(a)
                flow[r, cy, cx, 0] += weight * d0
                flow[r, cy, cx, 1] += weight * d1
                cx += 1
            cy += 1
    for f in range(nf):
        if not painted[f]:
            continue
        for cy in range(hm):
            for cx in range(wm):
                a = area[f, cy, cx]
                if a > 0:
                    flow[f, cy, cx, 0] /= np.float32(a)
                    flow[f, cy, cx, 1] /= np.float32(a)


def fill_holes(flow: np.ndarray, covered: np.ndarray, valid: np.ndarray, radius: int = FILL_RADIUS) -> None:
    """Cells no vector covered (intra blocks) take the mean of the covered cells within
    ``radius`` cells (a normalised box filter, in place); cells with none stay zero.

    Args:
        flow: ``[n, Hm, Wm, 2]`` float32, written in place at the holes of ``valid`` frames.
        covered: ``[n, Hm, Wm]`` bool; valid: ``[n]`` bool (other frames are left alone).

    The box sums come from each frame's summed-area table in float64, summed down the rows,
    then along them (exact for H.264's quarter-pixel values); a frame with few holes sums each
    hole's window directly instead, the same float64 sums in another order (exact alike).
    """
    if flow.dtype != np.float32 or not flow.flags.c_contiguous:
        raise ValueError("fill_holes works in place on a C-contiguous float32 [n, Hm, Wm, 2] field")
    _fill_loop(flow, np.ascontiguousarray(covered), np.ascontiguousarray(valid, np.bool_), int(radius))


@numba.njit(cache=True, nogil=True)
def _fill_loop(flow, covered, valid, radius):  # pragma: no cover (compiled)
    n, hm, wm = covered.shape
    table = np.empty((hm + 1, wm + 1, 3))  # table[y, x] = sums over cells [:y, :x]: dx, dy, count
    hole = np.empty(hm * wm, np.int64)  # a frame's holes, as y * wm + x
    for f in range(n):
        if not valid[f]:
            continue
        holes = 0
        for y in range(hm):
            for x in range(wm):
                if not covered[f, y, x]:
                    hole[holes] = y * wm + x
                    holes += 1
        if holes == 0:
            continue
        if holes * (2 * radius + 1) ** 2 < 4 * hm * wm:
            # Few holes (most x264 frames: a median of 21 of 3268 cells): each one's window summed
            # directly costs less than the table (the same float64 sums, in another order: exact
            # for these values alike; bit for bit on 690 frames of real footage).
            _fill_direct(flow, covered, f, radius, hole[:holes])
            continue
        table[0, :, :] = 0.0
        table[:, 0, :] = 0.0
        for y in range(hm):
            for x in range(wm):
                if covered[f, y, x]:
                    table[y + 1, x + 1, 0] = flow[f, y, x, 0]
                    table[y + 1, x + 1, 1] = flow[f, y, x, 1]
                    table[y + 1, x + 1, 2] = 1.0
                else:
                    table[y + 1, x + 1, :] = 0.0
        for y in range(1, hm + 1):
            for x in range(wm + 1):
                for c in range(3):
                    table[y, x, c] += table[y - 1, x, c]
        for y in range(hm + 1):
            for x in range(1, wm + 1):
                for c in range(3):
                    table[y, x, c] += table[y, x - 1, c]
        for y in range(hm):
            ya, yb = max(y - radius, 0), min(y + radius + 1, hm)
            for x in range(wm):
                if covered[f, y, x]:
                    continue
                xa, xb = max(x - radius, 0), min(x + radius + 1, wm)
                count = table[yb, xb, 2] - table[ya, xb, 2] - table[yb, xa, 2] + table[ya, xa, 2]
                if count > 0.5:
                    for c in range(2):
                        s = table[yb, xb, c] - table[ya, xb, c] - table[yb, xa, c] + table[ya, xa, c]
                        flow[f, y, x, c] = np.float32(s / count)


@numba.njit(cache=True, nogil=True)
def _fill_direct(flow, covered, f, radius, hole):  # pragma: no cover (compiled)
    """``_fill_loop`` for frame ``f``'s ``hole`` cells (``y * Wm + x``), each by summing its
    window's covered cells."""
    _, hm, wm = covered.shape
    for k in range(hole.size):
        cy, cx = hole[k] // wm, hole[k] % wm
        s0, s1, count = 0.0, 0.0, 0
        for y in range(max(cy - radius, 0), min(cy + radius + 1, hm)):
            for x in range(max(cx - radius, 0), min(cx + radius + 1, wm)):
                if covered[f, y, x]:
                    s0 += flow[f, y, x, 0]
                    s1 += flow[f, y, x, 1]
                    count += 1
        if count > 0:
            flow[f, cy, cx, 0] = np.float32(s0 / count)
            flow[f, cy, cx, 1] = np.float32(s1 / count)
