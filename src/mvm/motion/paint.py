"""Block vectors onto a cell grid (``paint``) and intra cells filled from their neighbours
(``fill_holes``): the two array steps of ``mvm.motion.codec`` that turn one frame's vectors into
a dense field. Both are exact rewrites of the definitions in ``tests/test_motion_codec.py``
(area-weighted mean per cell; mean of the covered cells within ``FILL_RADIUS``)."""

from __future__ import annotations

import math

import numpy as np

from mvm.motion.field import grid_shape, scratch

FILL_RADIUS = 4  # cells: an intra cell takes the mean of the covered cells this close


def paint(v: dict[str, np.ndarray], disp: np.ndarray, nf: int, h: int, w: int,
           block: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean of the block vectors over each grid cell.

    Every vector is spread over the cells of a painting grid that its block covers, then pooled
    (or repeated) into ``block`` cells. The painting grid is 8 px when every block edge lies on
    it (FFmpeg exports H.264 partitions of 8 and 16 px), else 4 px (H.264's smallest partition),
    else the largest divisor of ``block`` dividing 4.

    Returns:
        flow ``[nf, Hm, Wm, 2]`` and covered ``[nf, Hm, Wm]`` (cells any vector reached).
    """
    hm, wm = grid_shape(h, w, block)
    # Integers (the block corners are exported as ints) of the smallest type that holds the cell
    # index; every painting grid is a power of two pixels, so floor and ceiling are shifts.
    ix = np.int32 if nf * (hm + 1) * (wm + 1) < 2**31 else np.int64
    bw, bh = v["bw"].astype(ix), v["bh"].astype(ix)
    left, top = v["x"].astype(ix) - (bw >> 1), v["y"].astype(ix) - (bh >> 1)
    unit = 8 if not np.any((left | top | bw | bh) & 7) else 4
    if block % unit == 0 or unit % block == 0:
        fine = unit
    else:
        fine = math.gcd(block, 4)
    k = max(1, block // fine)  # fine cells per output cell (pooling)
    r = max(1, fine // block)  # output cells per fine cell (repeating)
    hf, wf = -(-hm // r) * k, -(-wm // r) * k
    shift = fine.bit_length() - 1
    x0 = np.clip(left >> shift, 0, wf)
    x1 = np.clip((left + bw + (fine - 1)) >> shift, 0, wf)
    y0 = np.clip(top >> shift, 0, hf)
    y1 = np.clip((top + bh + (fine - 1)) >> shift, 0, hf)
    hc, wc = hf // k, wf // k
    row = v["row"].astype(ix)
    if k == 1:  # every footprint cell counts once: the common case (8-px partitions, 8-px grid)
        flow, area = _paint_cells(row, x0, x1, y0, y1, disp, nf, hc, wc)
    else:
        flow, area = _paint_pooled(row, x0, x1, y0, y1, disp, nf, hc, wc, k)
    covered = (area > 0).reshape(nf, hc, wc)
    flow = flow.reshape(nf, hc, wc, 2)
    if r > 1:
        flow = flow.repeat(r, 1).repeat(r, 2)[:, :hm, :wm]
        covered = covered.repeat(r, 1).repeat(r, 2)[:, :hm, :wm]
    return flow, covered


def _paint_cells(row: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                 disp: np.ndarray, nf: int, hc: int, wc: int) -> tuple[np.ndarray, np.ndarray]:
    """``paint`` when the painting grid is the output grid: each vector spreads over the cells
    ``[y0, y1) x [x0, x1)`` of frame ``row`` with weight 1.

    Listed cell by cell of the footprint (a 16-px block on an 8-px grid: 4 passes); when no
    cell holds two vectors (every P frame: H.264 partitions tile the picture) the field is an
    assignment, otherwise the sums are float32 ``np.add.at`` in vector order (the same sums as
    adding footprint group by group: bit for bit with up to two terms per cell, both
    directions of a B block; within float32 rounding with more).

    Returns:
        flow ``[nf * hc * wc, 2]`` float32 (means) and area ``[nf * hc * wc]`` (> 0 where covered).
    """
    size = nf * hc * wc
    base = (row * hc + y0) * wc + x0
    nx, ny = x1 - x0, y1 - y0
    flow = np.zeros((size, 2), np.float32)
    # The (cell, vector) pairs, footprint offset by footprint offset, written into one buffer.
    total = int(np.dot(nx.astype(np.int64), ny))
    cell = np.empty(total, base.dtype)
    which = np.empty(total, np.int64)
    n = 0
    for dy in range(int(ny.max(initial=0))):
        for dx in range(int(nx.max(initial=0))):
            at = np.flatnonzero((ny > dy) & (nx > dx))
            np.add(base.take(at), dy * wc + dx, out=cell[n:n + at.size])
            which[n:n + at.size] = at
            n += at.size
    # Cells reached, as a byte stamp: as many stamped cells as pairs means no cell holds two
    # vectors (cheaper than counting per cell, which only the shared case needs).
    stamp = np.zeros(size, np.uint8)
    stamp.put(cell, 1)
    if int(np.count_nonzero(stamp)) == total:  # (dx, dy) pairs moved as one 8-byte item: 1-D take and put
        pairs = np.ascontiguousarray(disp, np.float32).view(np.uint64).reshape(-1)
        flow.view(np.uint64).reshape(-1).put(cell, pairs.take(which))
        return flow, stamp
    area = np.bincount(cell, minlength=size)
    d = disp[which]
    np.add.at(flow[:, 0], cell, d[:, 0])
    np.add.at(flow[:, 1], cell, d[:, 1])
    shared = np.flatnonzero(area > 1)
    flow[shared] /= area[shared, None].astype(np.float32)
    return flow, area


def _paint_pooled(row: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                  disp: np.ndarray, nf: int, hc: int, wc: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``paint`` when ``k x k`` painting cells pool into one output cell (flow ``[nf*hc*wc, 2]``,
    covered area ``[nf*hc*wc]`` in painting cells)."""
    size = nf * hc * wc
    # Sums of area x vector and the covered area per cell. Vectors sharing the shape of their
    # fine-cell footprint and its phase within the output cells cover the same output cells
    # with the same multiplicities (a 16x16 block on a 16-px grid is one cell of weight 4), so
    # each such group is scattered once per cell of its footprint (few groups, few cells each).
    flow = np.zeros((size, 2), np.float32)
    area = scratch("paint_area", size, np.float32)
    area.fill(0)
    nx, ny, px, py = x1 - x0, y1 - y0, x0 % k, y0 % k
    key = ((nx * (int(ny.max()) + 1) + ny) * k + px) * k + py  # small: shapes x phases
    base = (row * hc + y0 // k) * wc + x0 // k
    for g in np.flatnonzero(np.bincount(key)):
        members = np.flatnonzero(key == g)
        m = members[0]
        fy, fx = np.mgrid[py[m]:py[m] + ny[m], px[m]:px[m] + nx[m]]
        out, cnt = np.unique((fy // k) * wc + fx // k, return_counts=True)
        at, d = base[members], disp[members]
        for o, c in zip(out.tolist(), cnt.tolist()):
            cell = at + o
            np.add.at(flow[:, 0], cell, d[:, 0] * np.float32(c) if c != 1 else d[:, 0])
            np.add.at(flow[:, 1], cell, d[:, 1] * np.float32(c) if c != 1 else d[:, 1])
            # (an array of weights: np.add.at with a scalar takes a ~10x slower path)
            np.add.at(area, cell, np.full(members.size, c, np.float32))
    # Most cells hold one vector over their whole area (P blocks on the 8-px grid): only cells
    # with several (both directions of a B block, pooled partitions) need the division.
    shared = np.flatnonzero(area > 1)
    flow[shared] /= area[shared, None]
    return flow, area


def fill_holes(flow: np.ndarray, covered: np.ndarray, valid: np.ndarray, radius: int = FILL_RADIUS) -> None:
    """Cells no vector covered (intra blocks) take the mean of the covered cells within
    ``radius`` cells (a normalised box filter, in place); cells with none stay zero.

    The box sums come from a summed-area table read only at the holes (usually a small share
    of the cells), not from filtering every cell. The table is laid out ``[Hm+1, Wm+1, 3, n]``
    (sum dx, sum dy, count; frames innermost) and summed row by row, then column by column, so
    every step adds long contiguous runs (``np.cumsum`` along the outer axes of an
    ``[n, Hm+1, Wm+1, 3]`` table was 5x slower)."""
    frames = np.flatnonzero(valid & ~covered.reshape(len(covered), -1).all(1))
    if frames.size == 0:
        return
    have = covered[frames]
    n, hm, wm = have.shape
    sel = flow if frames.size == len(flow) else flow[frames]
    # float32 when it sums exactly: quarter-pixel values (H.264 vectors at reference distance 1
    # or 2, one vector per cell) with every sum of a frame's cells, times 4, below 2**24 (a
    # float32's integers): the same sums as float64 at half the memory traffic; else float64.
    quarter = sel * np.float32(4)
    exact = float(np.abs(quarter).max(initial=0)) * hm * wm < 2**24 and np.array_equal(quarter, np.rint(quarter))
    dtype = np.float32 if exact else np.float64
    table = scratch(f"fill_table_{dtype.__name__}", (hm + 1) * (wm + 1) * 3 * n, dtype).reshape(hm + 1, wm + 1, 3, n)
    table[0], table[:, 0] = 0.0, 0.0  # table[y, x, :, f] = sums over cells [:y, :x] of frame f
    np.multiply(sel.transpose(1, 2, 3, 0), have.transpose(1, 2, 0)[:, :, None], out=table[1:, 1:, :2])
    table[1:, 1:, 2] = have.transpose(1, 2, 0)
    for y in range(1, hm + 1):
        table[y] += table[y - 1]
    for x in range(1, wm + 1):
        table[:, x] += table[:, x - 1]
    y, x, f = np.nonzero(~have.transpose(1, 2, 0))  # holes in table order: neighbours share lines
    y0, y1 = np.maximum(y - radius, 0), np.minimum(y + radius + 1, hm)
    x0, x1 = np.maximum(x - radius, 0), np.minimum(x + radius + 1, wm)
    flat, channels = table.reshape(-1), np.arange(3) * n

    def corner(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:  # [holes, 3], one take
        return flat.take(((yy * (wm + 1) + xx) * (3 * n) + f)[:, None] + channels)

    box = corner(y1, x1) - corner(y0, x1) - corner(y1, x0) + corner(y0, x0)  # sum dx, sum dy, count
    ok = np.flatnonzero(box[:, 2] > 0.5)
    box = box[ok].astype(np.float64)  # (divided in float64 either way: the same rounding)
    pairs = box[:, :2] / box[:, 2:]
    ff, yy, xx = frames.take(f.take(ok)), y.take(ok), x.take(ok)
    if flow.flags.c_contiguous:  # (dx, dy) moved as one 8-byte item: a 1-D put, 5x faster
        at = (ff * hm + yy) * wm + xx
        flow.reshape(-1, 2).view(np.uint64).reshape(-1).put(at, pairs.astype(np.float32).view(np.uint64).reshape(-1))
    else:
        flow[ff, yy, xx] = pairs
