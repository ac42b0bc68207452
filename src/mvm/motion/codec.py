"""Dense per-frame motion from the motion vectors stored in the compressed stream (H.264, MPEG-4).

FFmpeg (``flags2=+export_mvs``) exports, per inter-coded block, ``dst`` (block centre in the
current frame), ``src`` (where the prediction was taken from in the reference) and
``motion / motion_scale == src - dst`` (quarter-pixel precise; ``src`` itself is rounded), plus
``source``: -1 for a reference in the past (list 0), +1 for one in the future (list 1, B-frames).
How many frames away the reference is, is *not* exported. We recover it (see ``docs/motion.md``):

- candidates: 1..3 frames, and the nearest I/P frames in that direction (where P-frames of a
  B-frame stream and B-frames take their references);
- moving vectors (>= 1 px, block and reference block inside the picture) are checked against
  every candidate frame: the block's pixels in this frame are compared (mean absolute difference
  of the coded luma plane, which ``decode_video`` keeps with the vectors, on a 4x4 lattice of
  points; the green channel of a DecodedVideo without luma) with the pixels at ``src`` in the
  candidate;
  a clearly better match wins, otherwise the structural guess (nearest I/P frame) stays.
  Vectors under 1 px take the structural guess. To stay cheap, a probe of ``PROBE`` vectors
  spread over the video is checked first; only when more than 2% of them point farther than
  the structural guess (a multi-reference stream) are all of them checked. An H.264 stream whose
  SPS allows one reference frame and that has no B-frames (what ``mvm prepare`` writes) is not
  checked at all (``DecodedVideo.single_reference``): its only possible reference is the previous
  frame, so the decode need not convert the frames no clip shows.

Displacement per frame, in the "content moved from the previous frame to this one" convention:
P (past reference, distance d): ``(dst - src) / d``; B (future reference, distance d): content at
``dst`` is at ``src`` d frames later, so ``(src - dst) / d``. Blocks with both are averaged
(a zero vector FFmpeg exports for the unused direction of a one-sided B partition is dropped); cells
without a vector (intra blocks) take the mean of the vectors within 4 cells (else zero); frames
without vectors (I-frames) or mostly intra take the mean of the nearest measured frames and are
marked invalid.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from mvm.data.video_io import DecodedVideo
from mvm.motion.field import MotionField, fill_invalid_frames, grid_shape, scratch
from mvm.motion.paint import fill_holes, paint
from mvm.motion.prefetch import prefetch

NEAR_DISTANCES = (1, 2, 3)  # always-tried reference distances (frames)
ANCHORS = 3  # and this many nearest I/P frames in the vector's direction
MIN_CHECKED = 1.0  # pixels: shorter vectors take the structural distance
# The structural guess is kept unless another candidate beats it by TIE_MARGIN grey levels and
# costs under CLEARLY_BETTER of it: blocks mixing object and background match every candidate
# poorly, and only a clear winner is evidence of a farther reference.
TIE_MARGIN = 2.0
CLEARLY_BETTER = 0.5
PREFETCH_AHEAD = 8  # vectors: the check asks for the rows of the vector this far on (4-20 measured alike)
PROBE = 256  # vectors checked before deciding whether the stream needs a check of every vector
PROBE_FARTHER = 0.02  # ... which it does when more than this share of the probe points farther
MIN_COVERED = 0.5  # share of a frame's cells with a vector for the frame to count as measured


def codec_field(decoded: DecodedVideo, block: int = 4, check_refs: bool = True) -> MotionField:
    """Turn each frame's block vectors into a dense field on a ``block``-pixel grid.

    Args:
        decoded: from ``decode_video(path, with_motion=True)``.
        block: grid cell side in pixels (``Hm = ceil(H / block)``).
        check_refs: verify moving vectors' reference distance against the pixels (see module
            doc); False takes the structural guess for every vector (exact for ``ref=1``
            streams, an over-estimate by up to the reference distance otherwise).

    Returns:
        MotionField with ``source="codec"``; ``valid[f]`` is False for frames without vectors.
    """
    flow, valid = codec_frames(decoded, np.arange(decoded.num_frames), block, check_refs)
    fill_invalid_frames(flow, valid)
    return MotionField(flow, valid, block, "codec", decoded.codec)


def codec_frames(decoded: DecodedVideo, frames: np.ndarray, block: int = 4, check_refs: bool = True,
                 cells: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The measured field of the listed frames only, before invalid frames are filled.

    Reference frames (pict types, pixels for the distance check) are looked up in all of
    ``decoded``, so a frame's field is the same as in ``codec_field`` of the whole video, except
    that the probe deciding whether every vector's reference is checked (module doc) sees only
    these frames' vectors.

    Args:
        decoded: from ``decode_video(path, with_motion=True)``.
        frames: ``[n]`` increasing frame indices into ``decoded``.
        block, check_refs: as in ``codec_field``.
        cells: ``(r0, r1, c0, c1)``: only grid rows ``r0..r1-1`` and columns ``c0..c1-1`` (the
            part of the frame a crop needs), from the vectors that reach them. Painted cells
            are the same as in the whole grid; hole filling and the covered share that decides
            ``valid`` see only these cells, so cells within ``FILL_RADIUS`` of a cut edge may
            differ (callers add that margin), and so may the probe (it sees fewer vectors).

    Returns:
        flow ``[n, Hm, Wm, 2]`` float32 (``[n, r1-r0, c1-c0, 2]`` with ``cells``; zeros on
        invalid frames) and valid ``[n]`` bool.
    """
    flow, covered, valid = painted_frames(decoded, frames, block, check_refs, cells)
    fill_holes(flow, covered, valid)
    return flow, valid


def painted_frames(decoded: DecodedVideo, frames: np.ndarray, block: int = 4, check_refs: bool = True,
                   cells: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``codec_frames`` before hole filling: flow ``[n, Hm, Wm, 2]`` (zero where no vector
    reached), covered ``[n, Hm, Wm]`` bool (cells a vector reached), valid ``[n]`` bool."""
    h, w = decoded.frames.shape[1:3]
    hm, wm = grid_shape(h, w, block)
    r0, r1, c0, c1 = (0, hm, 0, wm) if cells is None else cells
    frames = np.asarray(frames, np.int64).reshape(-1)
    n = frames.size
    mvs = [decoded.motion_vectors[f] if f < len(decoded.motion_vectors) else None for f in frames]
    valid = np.array([mv is not None and len(mv) > 0 for mv in mvs], bool)

    def nothing() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.zeros((n, r1 - r0, c1 - c0, 2), np.float32), np.zeros((n, r1 - r0, c1 - c0), bool), np.zeros(n, bool)

    if not valid.any():
        return nothing()
    # only the blocks that reach the cells (a block is kept or dropped whole)
    v = _columns(mvs, frames, None if cells is None else (r0 * block, r1 * block, c0 * block, c1 * block))
    if v["f"].size == 0:
        return nothing()
    # Vectors that go (B placeholders, references outside the decoded frames) are marked, not cut
    # out of the columns: one mask instead of copying nine columns twice (about 1 ms an x264 item).
    alive = _used_partitions(v)
    # One reference frame and no B-frames (mvm prepare's streams): the structural guess is the
    # only possible reference, so no pixel is read (and none need be decoded to RGB).
    check = check_refs and not decoded.single_reference
    # The check compares the coded luma (decode_video keeps it with the vectors); a DecodedVideo
    # made otherwise is compared on its frames' green channel.
    pixels = decoded.luma if decoded.luma is not None else decoded.frames
    if check and decoded.luma is None and decoded.rgb is not None and (decoded.rgb < 0).any():
        raise ValueError("checking reference distances reads every decoded frame's pixels; "
                         "this decode converted only some (decode_video(rgb=...)) and kept no luma")
    dist = _reference_distance(pixels, decoded.pict_types, v, check, alive,
                               decoded.luma_rows if decoded.luma is not None else None)
    use = dist > 0  # references outside the decoded frames cannot be placed in time
    if not use.any():  # every reference lies outside the decoded frames (a window's first frames)
        return nothing()
    # P (past ref): content at src is now at dst -> dst - src = -off; B (future): src - dst = +off.
    disp = _displacement(v["dir"], dist, v["ox"], v["oy"])
    if cells is not None:  # paint the cells as a picture of their own (whole cells: same footprints)
        h, w = (r1 - r0) * block, (c1 - c0) * block
    flow, covered = paint(v, disp, n, h, w, block, use=use,
                          origin=(0, 0) if cells is None else (c0 * block, r0 * block))
    # Frames mostly without vectors (scene cuts coded intra) are filled from their neighbours.
    # (counted, not averaged: a mean converts every cell to float64 first)
    cells_per_frame = covered[0].size
    valid &= (cells_per_frame > 0) & (np.count_nonzero(covered.reshape(n, -1), axis=1) >= MIN_COVERED * cells_per_frame)
    return flow, covered, valid


def _columns(per_frame: list, frames: np.ndarray, box: tuple[int, int, int, int] | None = None
             ) -> dict[str, np.ndarray]:
    """The listed frames' vectors as contiguous columns: frame ``f`` (index into the video),
    ``row`` (position in ``frames``), direction ``dir`` (-1 past, +1 future), block centre
    ``x, y`` and size ``bw, bh``, offset ``ox, oy = src - dst`` (float32). With ``box = (y0, y1,
    x0, x1)`` pixels, only the blocks overlapping it."""
    parts = [(r, mv) for r, mv in enumerate(per_frame) if mv is not None and len(mv)]
    arrays = [m for _, m in parts]
    dtype = arrays[0].dtype
    if all(m.dtype == dtype and m.flags.c_contiguous for m in arrays):
        # Concatenated as bytes: concatenating structured arrays promotes their fields pair by
        # pair, which costs more than the copy. Into a reused buffer (the returned columns are
        # all copies): a fresh one cost more in page faults than the copy itself.
        chunks = [m.view(np.uint8).reshape(-1) for m in arrays]
        raw = np.concatenate(chunks, out=scratch("columns", sum(c.size for c in chunks), np.uint8))
    else:
        joined = np.ascontiguousarray(np.concatenate(arrays))
        raw, dtype = joined.view(np.uint8).reshape(-1), joined.dtype
    mv = raw.view(dtype)
    row = np.repeat(np.array([r for r, _ in parts], np.int64), [len(m) for m in arrays])
    n = row.size
    cols = {"f": np.empty(n, np.int64), "row": np.empty(n, np.int64), "dir": np.empty(n, np.int64),
            **{k: np.empty(n, np.float32) for k in ("x", "y", "bw", "bh", "ox", "oy")}}
    y0, y1, x0, x1 = box if box is not None else (-(2**20), 2**20, -(2**20), 2**20)
    kept = _columns_loop(mv, row, np.asarray(frames, np.int64), int(y0), int(y1), int(x0), int(x1),
                         *(cols[k] for k in ("f", "row", "dir", "x", "y", "bw", "bh", "ox", "oy")))
    return {k: a[:kept] for k, a in cols.items()}


@numba.njit(cache=True, nogil=True)
def _columns_loop(mv, row, frames, y0, y1, x0, x1, f, rows, direction, x, y, bw, bh, ox, oy
                  ):  # pragma: no cover (compiled)
    """One pass over FFmpeg's records: the blocks overlapping ``[y0, y1) x [x0, x1)`` (in
    integers: twice the centre against twice the box, the size once) as float32 columns."""
    n = 0
    for i in range(mv.size):
        rec = mv[i]
        cx, cy, w, h = np.int32(rec.dst_x) * 2, np.int32(rec.dst_y) * 2, np.int32(rec.w), np.int32(rec.h)
        if cx + w <= 2 * x0 or cx - w >= 2 * x1 or cy + h <= 2 * y0 or cy - h >= 2 * y1:
            continue
        scale = np.float32(max(np.int32(rec.motion_scale), 1))
        rows[n] = row[i]
        f[n] = frames[row[i]]
        direction[n] = 1 if rec.source > 0 else -1
        x[n], y[n] = np.float32(rec.dst_x), np.float32(rec.dst_y)
        bw[n], bh[n] = np.float32(rec.w), np.float32(rec.h)
        ox[n] = np.float32(rec.motion_x) / scale
        oy[n] = np.float32(rec.motion_y) / scale
        n += 1
    return n


def _used_partitions(v: dict[str, np.ndarray]) -> np.ndarray | None:
    """``[n]`` bool, False for the zero vector of a block exported for both directions when the
    other is non-zero; None when no vector looks ahead (no B-frames: nothing to drop).

    FFmpeg exports every partition of a B macroblock for each list the macroblock uses, so a
    partition predicted from one direction only also appears, with a zero vector, for the other.
    A block truly predicted from both sides by moving content has two non-zero vectors; a static
    one has two zeros. Averaging the placeholder zero in would halve the motion.
    """
    if not (v["dir"] > 0).any():
        return None
    cols = tuple(v[k] for k in ("f", "x", "y", "bw", "bh", "ox", "oy"))
    keep = _unused_partitions_runs(*cols)
    return _unused_partitions_loop(*cols) if keep is None else keep


@numba.njit(cache=True, nogil=True)
def _unused_partitions_runs(f, x, y, bw, bh, ox, oy):  # pragma: no cover (compiled)
    """``_unused_partitions_loop`` for columns in FFmpeg's export order, None for any other.

    FFmpeg exports a frame's vectors macroblock by macroblock in raster order, each macroblock's
    blocks for list 0 and then for list 1, so the blocks sharing a key lie in one run of records
    of one macroblock (at most 8): only runs holding both a zero and a moving vector are
    searched, within the run, in one sequential pass (the hash table took 0.68 ms of a repeat-4
    x264 item, this 0.42). The order is checked as the pass goes: a frame that comes back, or a
    macroblock before the one before it in its frame, answers None (the caller then hashes), so
    the answer is the table's whatever the order."""
    n = f.size
    keep = np.ones(n, np.bool_)
    prev_f, prev_mb = np.int64(-1), np.int64(-1)
    start, zero, moving = 0, False, False
    for i in range(n + 1):
        if i < n:
            fi, mb = f[i], _macroblock(x[i], y[i], bw[i], bh[i])
            still = ox[i] == 0 and oy[i] == 0
            if fi == prev_f and mb == prev_mb:  # the run goes on
                zero |= still
                moving |= not still
                continue
            if fi < prev_f or (fi == prev_f and mb < prev_mb):
                return None
        if zero and moving:  # the run start..i-1 ends: its zero vectors against its moving ones
            for a in range(start, i):
                if ox[a] != 0 or oy[a] != 0:
                    continue
                for b in range(start, i):
                    if ((ox[b] != 0 or oy[b] != 0) and np.int64(x[a]) == np.int64(x[b])
                            and np.int64(y[a]) == np.int64(y[b]) and np.int64(bw[a]) // 4 == np.int64(bw[b]) // 4
                            and np.int64(bh[a]) // 4 == np.int64(bh[b]) // 4):  # (the table's key)
                        keep[a] = False
                        break
        if i < n:
            start, prev_f, prev_mb, zero, moving = i, fi, mb, still, not still
    return keep


@numba.njit(cache=True, nogil=True, inline="always")
def _macroblock(x, y, bw, bh):  # pragma: no cover (compiled)
    """The 16-px macroblock holding a block's top-left pixel, numbered in raster order."""
    return ((np.int64(y) - np.int64(bh) // 2) >> 4) * 65536 + ((np.int64(x) - np.int64(bw) // 2) >> 4)


@numba.njit(cache=True, nogil=True)
def _unused_partitions_loop(f, x, y, bw, bh, ox, oy):  # pragma: no cover (compiled)
    """``[n]`` bool: False for a zero vector whose block (frame, centre, size) has another,
    non-zero vector. The moving vectors' blocks go into a hash table of their packed keys, and
    only the zero vectors look theirs up: one pass each (a table of every vector's block, counted,
    took 0.42 ms of an x264 item; the stable sort of the keys before it 1.1-1.2 ms)."""
    n = f.size
    moving = 0
    for i in range(n):
        if ox[i] != 0 or oy[i] != 0:
            moving += 1
    keep = np.ones(n, np.bool_)
    if moving == 0 or moving == n:  # no zero vector, or none with a moving one to lose to
        return keep
    bits = 1
    while (1 << bits) < 2 * moving:
        bits += 1
    mask = (1 << bits) - 1
    table = np.empty(1 << bits, np.int64)  # packed keys of the blocks with a moving vector
    full = np.zeros(1 << bits, np.bool_)  # (keys may be negative: no sentinel value)
    for i in range(n):
        if ox[i] != 0 or oy[i] != 0:
            key = _block_key(f[i], x[i], y[i], bw[i], bh[i])
            slot = _slot(key, bits, mask)
            while full[slot] and table[slot] != key:  # linear probing
                slot = (slot + 1) & mask
            table[slot] = key
            full[slot] = True
    for i in range(n):
        if ox[i] == 0 and oy[i] == 0:
            key = _block_key(f[i], x[i], y[i], bw[i], bh[i])
            slot = _slot(key, bits, mask)
            while full[slot]:
                if table[slot] == key:
                    keep[i] = False
                    break
                slot = (slot + 1) & mask
    return keep


@numba.njit(cache=True, nogil=True, inline="always")
def _block_key(f, x, y, bw, bh):  # pragma: no cover (compiled)
    """A block's frame, centre and size packed into one int64."""
    return (((f * 65536 + np.int64(y)) * 65536 + np.int64(x)) * 64
            + np.int64(bw) // 4 * 8 + np.int64(bh) // 4)


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(key, bits, mask):  # pragma: no cover (compiled)
    """Fibonacci hashing of a key into ``2**bits`` slots."""
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits)) & mask


@numba.njit(cache=True, nogil=True)
def _displacement(direction, dist, ox, oy):  # pragma: no cover (compiled)
    """``[N, 2]`` float32 per-frame displacement ``(ox, oy) * float32(dir / dist)`` (zero where
    ``dist`` is 0): the NumPy ``(dir / dist).astype(float32)`` then float32 products, per vector."""
    out = np.zeros((dist.size, 2), np.float32)
    for i in range(dist.size):
        if dist[i] > 0:
            scale = np.float32(direction[i] / dist[i])
            out[i, 0] = ox[i] * scale
            out[i, 1] = oy[i] * scale
    return out


def _candidates(types: list[str], nf: int) -> tuple[np.ndarray, np.ndarray]:
    """``[nf, C]`` candidate distances for past and for future references (0 = none), read-only.

    Column 0 is the structural guess (the nearest I/P frame in that direction; 0 when none is
    decoded, which drops the vector), then 1..3 frames and the next-nearest I/P frames; none of
    them a frame of type ``"b"`` (skipped by the decode as unreferenced), each distance once per
    row (repeats are 0). Kept per picture-type pattern: a stream's windows repeat a few patterns
    (GOP phase and length)."""
    return _candidates_of("".join(types[:nf]), nf)


@functools.lru_cache(maxsize=256)
def _candidates_of(types: str, nf: int) -> tuple[np.ndarray, np.ndarray]:
    codes = np.frombuffer(types.encode("ascii"), np.uint8)
    # (one compiled pass, 9 us: NumPy's two dozen small calls per table took 126 us a pattern,
    # and about half of x264 windows bring a pattern not seen yet)
    past, future = _candidates_loop(codes, nf, np.array(NEAR_DISTANCES, np.int64), ANCHORS)
    past.flags.writeable = future.flags.writeable = False  # shared by every window with this pattern
    return past, future


@numba.njit(cache=True, nogil=True)
def _candidates_loop(codes, nf, near, anchors):  # pragma: no cover (compiled)
    """``_candidates`` from the picture types as ASCII codes (``codes[i]``; frames past its end
    are of unknown type, neither anchor nor skipped)."""
    width = 1 + near.size + anchors - 1
    tables = np.zeros((2, nf, width), np.int64)
    row = np.empty(width, np.int64)
    for s in range(2):
        sign = -1 if s == 0 else 1
        for f in range(nf):
            # the `anchors` nearest I/P frames that way (0: none), nearest first
            found = 0
            g = f + sign
            while 0 <= g < nf and found < anchors:
                if g < codes.size and (codes[g] == 73 or codes[g] == 80 or codes[g] == 63):  # I, P, ?
                    row[found if found == 0 else near.size + found] = abs(g - f)
                    found += 1
                g += sign
            if found == 0:
                continue  # no I/P frame that way: the reference is out of reach (row of zeros)
            for k in range(found, anchors):
                row[near.size + k] = 0
            for k in range(near.size):
                t = f + sign * near[k]
                skipped = 0 <= t < codes.size and codes[t] == 98  # b: not decoded, nobody's reference
                row[1 + k] = near[k] if 0 <= t < nf and not skipped else 0
            for j in range(width):
                d = row[j]
                for i in range(j):
                    if d != 0 and tables[s, f, i] == d:  # each distance tried once
                        d = 0
                        break
                tables[s, f, j] = d
    return tables[0], tables[1]


def _reference_distance(frames: np.ndarray, types: list[str], v: dict[str, np.ndarray],
                        check: bool, alive: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Frames between each vector's frame and its reference (0 where none is decoded, and for
    vectors ``alive`` marks False). ``rows``: frame t's plane is ``frames[rows[t]]`` (None: row t)."""
    nf = frames.shape[0] if rows is None else rows.size
    h, w = frames.shape[1:3]
    tables = _candidates(types, nf)
    # The structural guess, and which vectors are checked: moving vectors whose block and
    # reference block lie inside the picture (near the border the encoder predicts from
    # replicated edge pixels, which no candidate reproduces) and that have another candidate to
    # compare with; one compiled pass instead of a dozen array passes over the columns.
    dist, sel = _structural_loop(*(v[k] for k in ("f", "dir", "x", "y", "bw", "bh", "ox", "oy")), *tables,
                                 np.ones(v["f"].size, np.bool_) if alive is None else alive,
                                 w, h, check, np.float32(MIN_CHECKED ** 2))
    if not check:
        return dist
    if sel.size > PROBE:
        at = np.linspace(0, sel.size - 1, PROBE).astype(np.int64)
        probed = _best_distance(frames, v, tables, sel[at], rows)
        if (probed != dist[sel[at]]).mean() <= PROBE_FARTHER:
            return dist  # (almost) no sign of farther references: the structural guess holds
        dist[sel[at]] = probed  # (each vector's check is its own: the probe's need not be redone)
        sel = np.delete(sel, at)
    dist[sel] = _best_distance(frames, v, tables, sel, rows)
    return dist


@numba.njit(cache=True, nogil=True)
def _structural_loop(f, direction, x, y, bw, bh, ox, oy, past, future, alive, w, h, check,
                     min_sq):  # pragma: no cover (compiled)
    """Per vector the structural distance (column 0 of its direction's table; 0 where not
    ``alive``) and the indices of the vectors to check (float32 arithmetic, as the columns)."""
    n = f.size
    dist = np.zeros(n, np.int64)
    sel = np.empty(n, np.int64)
    m = 0
    half = np.float32(2)
    for i in range(n):
        if not alive[i]:
            continue
        table = future if direction[i] > 0 else past
        dist[i] = table[f[i], 0]
        if not check or ox[i] * ox[i] + oy[i] * oy[i] < min_sq:
            continue
        x0, x1 = x[i] - bw[i] / half, x[i] + bw[i] / half
        y0, y1 = y[i] - bh[i] / half, y[i] + bh[i] / half
        if (min(x0, x0 + ox[i]) < 0 or max(x1, x1 + ox[i]) > w
                or min(y0, y0 + oy[i]) < 0 or max(y1, y1 + oy[i]) > h):
            continue
        for j in range(1, table.shape[1]):
            if table[f[i], j] > 0:
                sel[m] = i
                m += 1
                break
    return dist, sel[:m]


def _best_distance(frames: np.ndarray, v: dict[str, np.ndarray], tables: tuple[np.ndarray, np.ndarray],
                   sel: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """For vectors ``sel``, the candidate distance whose frame matches best.

    ``frames``: ``[F, H, W]`` luma planes, or ``[F, H, W, 3]`` RGB whose green channel stands in
    for luma; with ``rows`` (``DecodedVideo.luma_rows``), frame t's plane is ``frames[rows[t]]``
    and ``F = rows.size``. ``tables``: ``(past, future)`` ``[F, C]`` candidate distances (``_candidates``); a
    vector's candidates are its frame's row of its direction's table. Cost: mean absolute
    difference on a 4x4 lattice of points inside the block (integer-rounded, clamped to the
    frame) between this frame and the candidate frame at the vector's offset. Column 0 (the
    structural guess) is kept unless another candidate costs ``TIE_MARGIN`` less and under
    ``CLEARLY_BETTER`` of it; among those, the cheapest (the first on ties). Returns ``[M]``
    distances."""
    h, w = frames.shape[1:3]
    rows = np.arange(frames.shape[0]) if rows is None else np.asarray(rows, np.int64)
    step, channel = (3, 1) if frames.ndim == 4 else (1, 0)  # green of RGB, or the luma plane
    return _best_distance_loop(
        np.ascontiguousarray(frames).reshape(-1), rows, rows.size, h, w, step, channel,
        *(np.ascontiguousarray(v[k], dt) for k, dt in (("f", np.int64), ("dir", np.int64), ("x", np.float32),
                                                        ("y", np.float32), ("bw", np.float32), ("bh", np.float32),
                                                        ("ox", np.float32), ("oy", np.float32))),
        np.asarray(sel, np.int64), *tables, np.float32(TIE_MARGIN), np.float32(CLEARLY_BETTER))


@numba.njit(cache=True, nogil=True)
def _best_distance_loop(flat, rows, nf, h, w, step, channel, f, sign, x, y, bw, bh, ox, oy, sel, past, future,
                        margin, better):  # pragma: no cover (compiled)
    lat = (np.arange(4).astype(np.float32) + np.float32(0.5)) / np.float32(4) - np.float32(0.5)
    # The lattice's 16 points are 4 columns x 4 rows, so a frame's points take 4 + 4 roundings
    # (offsets within a frame), not 16 + 16: the same points in 15% less time.
    cx = np.empty(4, np.int64)  # this block's lattice columns (offsets within a frame)
    cy = np.empty(4, np.int64)  # ... and rows
    rx = np.empty(4, np.int64)  # the same at the vector's offset
    ry = np.empty(4, np.int64)
    there = np.empty(16, np.int64)  # pixel offsets of the reference points within a frame
    cur = np.empty(16, np.int64)  # this block's pixels at the lattice points
    fsize = h * w * step
    out = np.empty(sel.size, np.int64)
    # Vector by vector, all its candidates at once (measured 15% faster than candidate by
    # candidate over all vectors, which walks one reference frame at a time but keeps the
    # vectors' points in memory).
    for k_out in range(sel.size):
        if k_out + PREFETCH_AHEAD < sel.size:
            # The lattice rows of a vector further on, in its frame and its structural reference:
            # read from planes beyond L2 at addresses no hardware prefetcher guesses, they were
            # two thirds of this loop's time (mvm.motion.prefetch).
            q = sel[k_out + PREFETCH_AHEAD]
            ref = min(max(f[q] + sign[q] * (future[f[q], 0] if sign[q] > 0 else past[f[q], 0]), 0), nf - 1)
            at = rows[f[q]] * fsize + channel + np.int64(min(max(np.rint(x[q]), 0), w - 1)) * step
            at_ref = rows[ref] * fsize + channel + np.int64(min(max(np.rint(x[q] + ox[q]), 0), w - 1)) * step
            for b in range(4):
                py = y[q] + lat[b] * bh[q]
                prefetch(flat, at + np.int64(min(max(np.rint(py), 0), h - 1)) * w * step)
                prefetch(flat, at_ref + np.int64(min(max(np.rint(py + oy[q]), 0), h - 1)) * w * step)
        m = sel[k_out]
        cand = future[f[m]] if sign[m] > 0 else past[f[m]]  # this vector's candidate distances
        out[k_out] = cand[0]
        for b in range(4):
            px = x[m] + lat[b] * bw[m]
            cx[b] = np.int64(min(max(np.rint(px), 0), w - 1)) * step
            rx[b] = np.int64(min(max(np.rint(px + ox[m]), 0), w - 1)) * step
            py = y[m] + lat[b] * bh[m]
            cy[b] = np.int64(min(max(np.rint(py), 0), h - 1)) * w * step
            ry[b] = np.int64(min(max(np.rint(py + oy[m]), 0), h - 1)) * w * step
        # The diagonal of the lattice first: a candidate whose first 4 points already cost too much
        # to win is dropped without reading the other 12 (they can only add), a third of the reads.
        here = rows[f[m]] * fsize + channel
        k = 0
        for a in range(4):
            cur[k] = flat[here + cy[a] + cx[a]]
            there[k] = ry[a] + rx[a] + channel
            k += 1
        for a in range(4):
            for b in range(4):
                if a != b:
                    cur[k] = flat[here + cy[a] + cx[b]]
                    there[k] = ry[a] + rx[b] + channel
                    k += 1
        base = rows[min(max(f[m] + sign[m] * cand[0], 0), nf - 1)] * fsize
        total = 0
        for k in range(16):
            total += abs(np.int64(flat[base + there[k]]) - cur[k])
        cost0 = np.float32(total / 16)
        if cost0 <= margin:  # no candidate can beat the guess by the margin
            continue
        best, best_j = cost0, 0
        for j in range(1, cand.size):  # the other candidates' first points, asked for at once
            if cand[j] != 0:
                base = rows[min(max(f[m] + sign[m] * cand[j], 0), nf - 1)] * fsize
                for k in range(4):
                    prefetch(flat, base + there[k])
        for j in range(1, cand.size):
            if cand[j] == 0:
                continue
            base = rows[min(max(f[m] + sign[m] * cand[j], 0), nf - 1)] * fsize
            total = 0
            for k in range(4):
                total += abs(np.int64(flat[base + there[k]]) - cur[k])
            c = np.float32(total / 16)
            if not (c + margin < cost0 and c < better * cost0):
                continue
            for k in range(4, 16):
                total += abs(np.int64(flat[base + there[k]]) - cur[k])
            c = np.float32(total / 16)
            if c < best:  # the first of equal costs stays, as argmin picks it
                best, best_j = c, j
        if best + margin < cost0 and best < better * cost0:
            out[k_out] = cand[best_j]
    return out
