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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mvm.data.video_io import DecodedVideo, VideoDecodeError
from mvm.grid import TokenGrid

log = logging.getLogger(__name__)

SOURCES = ("auto", "codec", "estimate", "none")
_fallback_logged: set[str] = set()  # codecs for which the "estimating instead" note was logged


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
    if source not in SOURCES:
        raise ValueError(f"motion source must be one of {', '.join(SOURCES)}, got '{source}'")
    if source == "none":
        return zero_field(decoded, block)
    if source in ("auto", "codec") and decoded.has_vectors:
        from mvm.motion.codec import codec_field

        return codec_field(decoded, block)
    if source == "codec":
        raise VideoDecodeError(path or "<video>", "no_motion_vectors",
                               f"the {decoded.codec} stream exports no motion vectors (decode it with "
                               "with_motion=True, transcode it with `mvm prepare`, or use source=estimate)")
    if source == "auto" and decoded.codec not in _fallback_logged:
        _fallback_logged.add(decoded.codec)
        log.info("%s streams carry no motion vectors%s; estimating motion by block matching "
                 "(logged once per codec)", decoded.codec, f" ({path})" if path else "")
    from mvm.motion.estimate import estimate_field

    return estimate_field(decoded.frames, block, codec=decoded.codec)


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
    idx = np.clip(np.asarray(indices, dtype=np.int64).reshape(-1), 0, field.num_frames - 1)
    if idx.size == 0:
        raise ValueError("clip_motion needs at least one frame index")
    stride = int(idx[1] - idx[0]) if idx.size > 1 else 1
    first = idx[0] - stride if 0 <= idx[0] - stride < field.num_frames else None
    # Running sum over just the frames the clip spans: cum[i - lo] = sum of flow[lo+1 .. i].
    lo = int(min(idx.min(), first if first is not None else idx.min()))
    hi = int(idx.max())
    cum = np.cumsum(field.flow[lo:hi + 1], axis=0, dtype=np.float64)
    cum -= cum[0]
    out = np.empty((idx.size, *field.flow.shape[1:]), np.float32)
    out[1:] = cum[idx[1:] - lo] - cum[idx[:-1] - lo]
    if first is not None:
        out[0] = cum[idx[0] - lo] - cum[first - lo]
    elif idx.size > 1:
        out[0] = out[1]
    else:
        out[0] = field.flow[idx[0]]
    return out


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
    x = m.float().permute(0, 4, 1, 2, 3)  # [B, 2, T, Hs, Ws]
    if hs % grid.h == 0 and ws % grid.w == 0:
        x = x.reshape(b, 2, grid.t, grid.tubelet, grid.h, hs // grid.h, grid.w, ws // grid.w).mean((3, 5, 7))
    else:
        x = F.adaptive_avg_pool3d(x, (grid.t, grid.h, grid.w))
    out = x.permute(0, 2, 3, 4, 1).contiguous()  # [B, t, h, w, 2]
    return out if batched else out[0]


def token_magnitude(motion_tokens: torch.Tensor) -> torch.Tensor:
    """``[..., t, h, w, 2]`` -> ``[..., t, h, w]`` motion length in pixels per frame."""
    return torch.linalg.vector_norm(motion_tokens, dim=-1)


def fill_invalid_frames(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Give each invalid frame the mean of the nearest valid frames before and after it (in place).

    ``flow`` is ``[F, Hm, Wm, 2]``; with no valid frame at all it is left as it is (zeros).
    """
    good = np.flatnonzero(valid)
    if good.size == 0:
        return flow
    for f in np.flatnonzero(~valid):
        pos = np.searchsorted(good, f)
        near = [good[i] for i in (pos - 1, pos) if 0 <= i < good.size]
        flow[f] = np.mean([flow[g] for g in near], axis=0)
    return flow
