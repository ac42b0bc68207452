"""Per-frame motion fields, and how they become clip motion and token-grid motion.

Convention (the only one in mvm): a field value is *where content moved from the previous frame
to this one*, in pixels of the decoded frame, ``dx`` to the right and ``dy`` down. Frame 0 has no
previous frame; its value is filled from its neighbours and marked invalid.

    video --frame_motion--> MotionField.flow [F, Hm, Wm, 2]
          --clip_motion(indices)--> [T, Hm, Wm, 2]   (temporal stride accumulates)
          --(data transforms: crop / resize / flip)--> [T, Hs, Ws, 2]
          --to_token_grid(grid)--> [t, h, w, 2]  --token_magnitude--> [t, h, w]
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F

from mvm.data.video_io import DecodedVideo, VideoDecodeError
from mvm.grid import TokenGrid

log = logging.getLogger(__name__)

SOURCES = ("auto", "codec", "estimate", "none")
BLOCK_PER_SHORT_SIDE = 28  # clip_block: at most short side / 28 source pixels per motion cell
MAX_CLIP_BLOCK = 16
NEAREST_CHUNK = 4  # frames computed at a time when looking for a measured frame outside a clip
_scratch = threading.local()  # per-thread reused buffers (see scratch)
_fallback_logged: set[str] = set()  # codecs for which the "estimating instead" note was logged
#: Codecs whose decoders export motion vectors (FFmpeg's H.264 and mpegvideo family); for these a
#: decode without vectors means I-frames only, or a decode without ``with_motion``, not the codec.
VECTOR_CODECS = ("h264", "mpeg4", "mpeg2video", "mpeg1video", "h263", "h263p", "msmpeg4v3", "wmv2")


@dataclass
class MotionField:
    """Dense per-frame motion on a block grid.

    Attributes:
        flow: ``[F, Hm, Wm, 2]`` float32, (dx, dy) in pixels per frame; ``Hm = ceil(H / block)``.
        valid: ``[F]`` bool; False where the value was filled in (I-frames, frame 0 of an
            estimated field, frames without vectors) rather than measured.
        block: pixels per grid cell side.
        source: "codec" (stream motion vectors), "estimated" (block matching) or "none" (zeros).
        codec: the stream's codec name (``h264``, ``vp9``, ``mjpeg``, ``image``...).
    """

    flow: np.ndarray
    valid: np.ndarray
    block: int
    source: str
    codec: str

    @property
    def num_frames(self) -> int:
        return int(self.flow.shape[0])

    def magnitude(self) -> np.ndarray:
        """``[F, Hm, Wm]`` pixels per frame."""
        return np.linalg.norm(self.flow, axis=-1)


def scratch(name: str, size: int, dtype: type) -> np.ndarray:
    """A reused, per-thread 1-D buffer of ``size`` elements, contents undefined.

    For the large temporaries of the motion path (a few MB per clip): a fresh array that size is
    mapped anew by the allocator on every call and costs a page fault per 4 KiB when first
    written, which took longer than the arithmetic on it (measured 1.6 ms against 0.18 ms for a
    1.7 MB division). Callers use the buffer before their next call and never return it.
    """
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = np.empty(max(size, 0 if buf is None else buf.size), dtype)
        setattr(_scratch, name, buf)
    return buf[:size]


def grid_shape(height: int, width: int, block: int) -> tuple[int, int]:
    """``(Hm, Wm) = (ceil(H / block), ceil(W / block))``."""
    if block < 1:
        raise ValueError(f"block must be a positive number of pixels, got {block}")
    return -(-height // block), -(-width // block)


def zero_field(decoded: DecodedVideo, block: int = 4) -> MotionField:
    """All-zero field, every frame marked invalid (``source="none"``)."""
    f, h, w = decoded.frames.shape[:3]
    hm, wm = grid_shape(h, w, block)
    return MotionField(np.zeros((f, hm, wm, 2), np.float32), np.zeros(f, bool), block, "none", decoded.codec)


def frame_motion(decoded: DecodedVideo, source: str = "auto", block: int = 4,
                 path: str | None = None) -> MotionField:
    """Per-frame motion of a decoded video.

    Args:
        decoded: from ``decode_video(..., with_motion=True)`` (without it no vectors are present
            and "auto" falls back to the estimator).
        source: "auto" (codec vectors when the stream has them, else estimated; the fallback is
            logged once per codec and process), "codec" (vectors or an error), "estimate" (always
            block matching), "none" (zeros).
        block: grid cell side in pixels.
        path: the file, only to name it in errors.

    Raises:
        ValueError: unknown ``source``.
        VideoDecodeError: ``source="codec"`` and the stream carries no motion vectors
            (``reason="no_motion_vectors"``).
    """
    kind = _resolve_source(decoded, source, path)
    if kind == "none":
        return zero_field(decoded, block)
    if kind == "codec":
        from mvm.motion.codec import codec_field

        return codec_field(decoded, block)
    from mvm.motion.estimate import estimate_field

    return estimate_field(decoded.frames, block, codec=decoded.codec)


def _resolve_source(decoded: DecodedVideo, source: str, path: str | None) -> str:
    """What ``source`` means for this video: "codec", "estimate" or "none" (see ``frame_motion``)."""
    if source not in SOURCES:
        raise ValueError(f"motion source must be one of {', '.join(SOURCES)}, got '{source}'")
    if source == "none":
        return "none"
    if source in ("auto", "codec") and decoded.has_vectors:
        return "codec"
    if decoded.codec in VECTOR_CODECS:
        # the codec has vectors; these frames did not (all I-frames, or decoded without with_motion)
        why = (f"the {decoded.num_frames} {decoded.codec} frame(s) read carry no motion vectors "
               f"(pict types {''.join(decoded.pict_types[:16]) or '?'}; I-frames have none, and a decode "
               "needs with_motion=True)")
    else:
        why = f"{decoded.codec} streams carry no motion vectors (transcode to H.264 with `mvm prepare`)"
    if source == "codec":
        raise VideoDecodeError(path or "<video>", "no_motion_vectors",
                               f"{why}; motion source 'estimate' uses block matching instead")
    if source == "auto" and decoded.codec not in _fallback_logged:
        _fallback_logged.add(decoded.codec)
        log.info("%s%s; estimating motion by block matching (logged once per codec)",
                 f"{path}: " if path else "", why)
    return "estimate"


def clip_motion(field: MotionField, indices: np.ndarray) -> np.ndarray:
    """Motion at a clip's sampled frames, accumulated over the temporal stride.

    Motion at sample ``k`` is the sum of per-frame motion over frames ``indices[k-1]+1 ..
    indices[k]`` (constant-velocity content sampled every ``s`` frames moves ``s`` times as far).
    Sample 0 uses the ``s = indices[1] - indices[0]`` frames before ``indices[0]``, or copies
    sample 1 when the clip starts too early. Repeated indices (padding of short videos) give
    zero motion; decreasing indices (reversed clips) give negated motion. Indices outside the
    video are clamped into it.

    Args:
        field: per-frame field with ``F`` frames.
        indices: ``[T]`` frame indices.

    Returns:
        ``[T, Hm, Wm, 2]`` float32 pixels.
    """
    idx, first, lo, hi = _clip_span(indices, field.num_frames)
    if idx.size == 1:
        return field.flow[idx[0]][None].astype(np.float32)
    return _accumulate(field.flow[lo + 1:hi + 1], lo, idx, first)


def _clip_span(indices: np.ndarray, num_frames: int) -> tuple[np.ndarray, int | None, int, int]:
    """Clamped indices, the frame sample 0's motion starts from (None: copy sample 1), and the
    span ``lo, hi``: the clip's motion is a function of per-frame motion of frames ``lo+1..hi``."""
    idx = np.clip(np.asarray(indices, dtype=np.int64).reshape(-1), 0, num_frames - 1)
    if idx.size == 0:
        raise ValueError("clip motion needs at least one frame index")
    stride = int(idx[1] - idx[0]) if idx.size > 1 else 1
    first = int(idx[0]) - stride if 0 <= idx[0] - stride < num_frames else None
    lo = int(min(idx.min(), first if first is not None else idx.min()))
    # (a reversed clip's sample 0 reaches the stride after its first frame: past idx.max())
    hi = int(max(idx.max(), first if first is not None else idx.max()))
    return idx, first, lo, hi


def _accumulate(span: np.ndarray, lo: int, idx: np.ndarray, first: int | None) -> np.ndarray:
    """Clip motion from ``span`` = per-frame motion of frames ``lo+1 .. hi`` (``[hi-lo, Hm, Wm, 2]``)."""
    # cum(i) = sum of the motion of frames lo+1 .. i, in float64, frame after frame; sample k is
    # cum(idx[k]) - cum(idx[k-1]). Only the sums at the samples' frames are kept.
    pos = np.unique(np.concatenate([idx - lo, [] if first is None else [first - lo]]).astype(np.int64))
    n, hm, wm, _ = span.shape
    # Rows of cells as runs of 2 * Wm values (span may be a crop of the computed cells: read in
    # place); the whole field as one run when it is contiguous, which the compiler vectorises.
    shape = (1, hm * wm * 2) if span.flags.c_contiguous else (hm, wm * 2)
    cum = np.empty((pos.size, *shape), np.float64)
    out = np.empty((idx.size, hm, wm, 2), np.float32)
    _cumsum_at(span.reshape(n, *shape), pos, cum)
    at = np.searchsorted(pos, idx - lo)
    from_ = -1 if first is None else int(np.searchsorted(pos, first - lo))
    _differences(cum, at, from_, out.reshape(idx.size, *shape))
    return out


@numba.njit(cache=True, nogil=True)
def _cumsum_at(span, pos, out):  # pragma: no cover (compiled)
    """``out[j] = span[:pos[j]].sum(0)`` in float64, added frame by frame (``pos`` sorted);
    ``span`` ``[n, R, C]``, each ``span[i, r]`` a contiguous run."""
    n, nr, nc = span.shape
    running = np.zeros((nr, nc))
    j = 0
    for i in range(n + 1):
        while j < pos.size and pos[j] == i:
            out[j] = running
            j += 1
        if i < n:
            for r in range(nr):
                src, dst = span[i, r], running[r]
                for c in range(nc):
                    dst[c] += src[c]


@numba.njit(cache=True, nogil=True)
def _differences(cum, at, first, out):  # pragma: no cover (compiled)
    """``out[k] = float32(cum[at[k]] - cum[at[k-1]])``; sample 0 from ``cum[first]``, or a copy
    of sample 1 when ``first < 0`` (one pass, no float64 temporaries)."""
    k, nr, nc = out.shape
    for t in range(k):
        if t == 0 and first < 0:
            continue
        a, b = cum[first if t == 0 else at[t - 1]], cum[at[t]]
        for r in range(nr):
            for c in range(nc):
                out[t, r, c] = np.float32(b[r, c] - a[r, c])
    if first < 0:
        out[0] = out[1]


def clip_block(height: int, width: int) -> int:
    """Motion grid cell (pixels of the source) for clips cut from ``height x width`` frames.

    The largest of 4, 8, 16 pixels that is at most ``short side / BLOCK_PER_SHORT_SIDE``: a
    224-px clip has 14 tokens along its crop, at least 0.66 of the short side, so a token spans
    at least ``short / 21`` source pixels and gets at least 1.3 cells per side (bilinearly
    resampled, then averaged per token by ``to_token_grid``). 16 px is an H.264 macroblock.
    """
    block = 4
    while block < MAX_CLIP_BLOCK and 2 * block * BLOCK_PER_SHORT_SIDE <= min(height, width):
        block *= 2
    return block


def motion_for_clip(decoded: DecodedVideo, indices: np.ndarray, source: str = "auto", path: str = "",
                    block: int | None = None) -> tuple[np.ndarray, int]:
    """A clip's motion, computing per-frame motion only for the frames the clip needs.

    Same values as ``clip_motion(frame_motion(decoded, source, block, path), indices)``: the
    clip's motion at sample ``k`` sums per-frame motion over ``indices[k-1]+1 .. indices[k]``, so
    only frames ``indices[0] - stride + 1 .. indices[-1]`` are turned into fields (plus, for codec
    motion, the nearest measured frame on either side when an I-frame at the span's edge has to
    be filled from it). One difference for codec motion: whether every vector's reference
    distance is checked against the pixels is decided from a probe of the span's vectors, not of
    the whole video's (``mvm.motion.codec``).

    Args:
        decoded: decoded frames (with vectors for codec motion); ``indices`` index
            ``decoded.frames``, which may start anywhere in the file (a seek to a keyframe).
        indices: ``[T]`` frame indices (clamped into the video, as in ``clip_motion``).
        source: "auto", "codec", "estimate" or "none" (see ``frame_motion``).
        path: the file, only to name it in errors and logs.
        block: grid cell side in source pixels; None picks ``clip_block(H, W)``.

    Returns:
        motion ``[T, Hm, Wm, 2]`` float32 pixels (``Hm = ceil(H / block)``), and ``block``.

    Raises:
        ValueError, VideoDecodeError: as ``frame_motion``.
    """
    return motion_for_clips(decoded, [indices], source, path, block)[0]


def motion_for_clips(decoded: DecodedVideo, clips: list[np.ndarray], source: str = "auto", path: str = "",
                     block: int | None = None, region: tuple[int, int, int, int] | None = None
                     ) -> list[tuple[np.ndarray, int]]:
    """``motion_for_clip`` for several clips of one decoded video (``data.repeat``): frames that
    more than one clip needs are turned into motion once (overlapping spans are merged).

    ``region = (y0, y1, x0, x1)``, in pixels of the frame, is the part the caller will read (the
    union of the clips' crops): codec motion is then computed only for the cells a bilinear
    resampling of that part touches, plus the hole-filling reach around them; cells farther out
    are zero. Inside, the values are those of the whole frame, except where the smaller set of
    vectors changes the reference-check probe, or a frame's covered share (``valid``), which is
    judged on the computed cells (``codec_frames``).

    Clips with the same frames (repeats that share one clip's frames) share one motion array:
    treat the results as read-only."""
    nf, h, w = decoded.frames.shape[:3]
    block = clip_block(h, w) if block is None else int(block)
    hm, wm = grid_shape(h, w, block)
    kind = _resolve_source(decoded, source, path)
    spans = []  # per clip: idx, first, lo, and the frames a..hi whose motion it needs
    for indices in clips:
        idx, first, lo, hi = _clip_span(indices, nf)
        spans.append((idx, first, lo, int(idx[0]) if idx.size == 1 else lo + 1, hi))
    need, cells = _region_cells(region, block, hm, wm) if kind == "codec" else ((0, hm, 0, wm), None)
    fields: list[tuple[int, int, np.ndarray]] = []  # merged ranges a..b and their motion [b-a+1, Hm, Wm, 2]
    if kind != "none":
        for a, b in _merge([(s[3], s[4]) for s in spans if s[3] <= s[4]]):
            fields.append((a, b, _span_motion(decoded, kind, a, b, block, cells)))
    out = []
    done: dict[tuple[int, ...], np.ndarray] = {}  # clips with the same frames (data.repeat_mode="frames")
    for idx, first, lo, a, hi in spans:
        if kind == "none" or a > hi:
            out.append((np.zeros((idx.size, hm, wm, 2), np.float32), block))
            continue
        key = (first if first is not None else -1, *idx.tolist())
        if key in done:  # the same motion: one array, shared
            out.append((done[key], block))
            continue
        fa, _, flow = next(f for f in fields if f[0] <= a and hi <= f[1])
        span = flow[a - fa:hi - fa + 1]
        if cells is not None:  # the cells the region reads, inside the computed ones
            span = span[:, need[0] - cells[0]:need[1] - cells[0], need[2] - cells[2]:need[3] - cells[2]]
        motion = span[:1].copy() if idx.size == 1 else _accumulate(span, lo, idx, first)
        if cells is not None:
            whole = np.zeros((idx.size, hm, wm, 2), np.float32)
            whole[:, need[0]:need[1], need[2]:need[3]] = motion
            motion = whole
        done[key] = motion
        out.append((motion, block))
    return out


def _region_cells(region: tuple[int, int, int, int] | None, block: int, hm: int, wm: int
                  ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int] | None]:
    """Grid cells ``(r0, r1, c0, c1)`` a crop of ``region`` reads (2 cells of slack for the
    bilinear resampling at its edges), and the cells to compute for them (plus the hole-filling
    reach); None when that is the whole grid."""
    from mvm.motion.paint import FILL_RADIUS

    if region is None:
        return (0, hm, 0, wm), None
    y0, y1, x0, x1 = (int(r) for r in region)
    need = (max(y0 // block - 2, 0), min(-(-y1 // block) + 2, hm), max(x0 // block - 2, 0), min(-(-x1 // block) + 2, wm))
    cells = (max(need[0] - FILL_RADIUS, 0), min(need[1] + FILL_RADIUS, hm),
             max(need[2] - FILL_RADIUS, 0), min(need[3] + FILL_RADIUS, wm))
    return need, (None if cells == (0, hm, 0, wm) else cells)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges merged where they overlap or touch."""
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _span_motion(decoded: DecodedVideo, kind: str, a: int, b: int, block: int,
                 cells: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Per-frame motion of frames ``a..b`` (``[b-a+1, Hm, Wm, 2]``, or the ``cells`` of codec
    motion, see ``codec_frames``), as ``frame_motion`` gives it."""
    if kind == "estimate":
        from mvm.motion.estimate import estimate_field

        start = max(a - 1, 0)  # the frame before the span pairs with its first frame
        return estimate_field(decoded.frames[start:b + 1], block, codec=decoded.codec).flow[a - start:]
    return _codec_span(decoded, a, b, block, cells)


def _codec_span(decoded: DecodedVideo, a: int, b: int, block: int,
                cells: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Codec motion of frames ``a..b`` with invalid frames filled as ``codec_field`` fills them
    (mean of the nearest measured frames before and after, found outside the span if need be)."""
    from mvm.motion.codec import codec_frames

    nf = decoded.num_frames
    flow, valid = codec_frames(decoded, np.arange(a, b + 1), block, cells=cells)
    if not valid.all():
        good = np.flatnonzero(valid)
        before = after = None
        if a > 0 and (good.size == 0 or not valid[0]):  # an invalid frame before the first measured one
            before = _nearest_measured(decoded, range(a - 1, -1, -1), block, cells)
        if b < nf - 1 and (good.size == 0 or not valid[-1]):
            after = _nearest_measured(decoded, range(b + 1, nf), block, cells)
        if before is None and after is None:  # filled from inside the span: in place
            fill_invalid_frames(flow, valid)
            return flow
        parts = [p for p in (before, (flow, valid), after) if p is not None]
        full = np.concatenate([p[0] for p in parts])
        fill_invalid_frames(full, np.concatenate([p[1] for p in parts]))
        off = 0 if before is None else 1
        flow = full[off:off + b - a + 1]
    return flow


def _nearest_measured(decoded: DecodedVideo, order: range, block: int,
                      cells: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The first measured frame's field in ``order`` (``[1, Hm, Wm, 2]``, ``[True]``), None if none.
    Frames are computed a few at a time: a measured frame is usually next to the span."""
    from mvm.motion.codec import codec_frames

    frames = list(order)
    for s in range(0, len(frames), NEAREST_CHUNK):
        chunk = np.array(sorted(frames[s:s + NEAREST_CHUNK]))
        flow, valid = codec_frames(decoded, chunk, block, cells=cells)
        hits = np.flatnonzero(valid)
        if hits.size:
            pick = hits[0] if chunk[0] == frames[s] else hits[-1]  # nearest to the span
            return flow[pick:pick + 1], valid[pick:pick + 1]
    return None


def to_token_grid(motion: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """Average motion over each token's tubelet frames and patch area.

    Args:
        motion: ``[T, Hs, Ws, 2]`` (or ``[B, T, Hs, Ws, 2]``) per-frame clip motion at the clip's
            output resolution, ``T == grid.frames``. ``Hs, Ws`` need not equal the pixel size:
            any field at least ``grid.h x grid.w`` is pooled into the token cells (exact means
            when they divide evenly).

    Returns:
        ``[t, h, w, 2]`` (or ``[B, t, h, w, 2]``) float, pixels per frame.
    """
    batched = motion.dim() == 5
    m = motion if batched else motion.unsqueeze(0)
    if m.dim() != 5 or m.shape[-1] != 2:
        raise ValueError(f"motion must be [T, Hs, Ws, 2] or [B, T, Hs, Ws, 2], got {tuple(motion.shape)}")
    b, t, hs, ws, _ = m.shape
    if t != grid.frames:
        raise ValueError(f"motion has {t} frames, the token grid covers {grid.frames}")
    if hs < grid.h or ws < grid.w:
        raise ValueError(f"motion field {hs}x{ws} is coarser than the token grid {grid.h}x{grid.w}")
    if hs % grid.h == 0 and ws % grid.w == 0:
        # Summed one axis at a time in the given layout (the same means as .mean over the three
        # axes of a permuted copy, up to float32 rounding, at a third of the cost).
        ph, pw = hs // grid.h, ws // grid.w
        x = m.float().reshape(b, grid.t, grid.tubelet, grid.h, ph, grid.w, pw, 2)
        out = x.sum(2).sum(3).sum(4) / (grid.tubelet * ph * pw)  # [B, t, h, w, 2]
    else:
        x = F.adaptive_avg_pool3d(m.float().permute(0, 4, 1, 2, 3), (grid.t, grid.h, grid.w))
        out = x.permute(0, 2, 3, 4, 1).contiguous()  # [B, t, h, w, 2]
    return out if batched else out[0]


def token_magnitude(motion_tokens: torch.Tensor) -> torch.Tensor:
    """``[..., t, h, w, 2]`` -> ``[..., t, h, w]`` motion length in pixels per frame."""
    return torch.linalg.vector_norm(motion_tokens, dim=-1)


def fill_invalid_frames(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Give each invalid frame the mean of the nearest valid frames before and after it (in place).

    ``flow`` is ``[F, Hm, Wm, 2]``; with no valid frame at all it is left as it is (zeros). The
    mean is the float32 sum halved, as ``np.mean`` of the two gives it.
    """
    valid = np.asarray(valid, np.bool_)
    if not valid.any() or valid.all():
        return flow
    # one compiled pass (an x264 window has a third of its frames to fill: NumPy calls per frame
    # cost 0.2 ms of a dataset item); a strided field is filled in a contiguous copy
    work = flow if flow.flags.c_contiguous else np.ascontiguousarray(flow)
    _fill_frames_loop(work.reshape(work.shape[0], -1), valid)
    if work is not flow:
        flow[...] = work
    return flow


@numba.njit(cache=True, nogil=True)
def _fill_frames_loop(flow, valid):  # pragma: no cover (compiled)
    """``fill_invalid_frames`` on ``[F, cells]`` rows (some valid, some not): the sum of the two
    neighbours in the field's own float type, halved."""
    before = -1
    for f in range(flow.shape[0]):
        if valid[f]:
            before = f
            continue
        after = f + 1
        while after < flow.shape[0] and not valid[after]:
            after += 1
        if before >= 0 and after < flow.shape[0]:
            for c in range(flow.shape[1]):
                flow[f, c] = (flow[before, c] + flow[after, c]) / np.float32(2)
        else:
            src = before if before >= 0 else after
            for c in range(flow.shape[1]):
                flow[f, c] = flow[src, c]
