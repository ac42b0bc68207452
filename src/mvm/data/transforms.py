"""Spatial augmentation applied identically to a clip's pixels and to its motion field.

Training uses VideoMAE's multi-scale crop (TSN's ``GroupMultiScaleCrop``: crop sides drawn from
``scales`` times the short side, width and height at most ``max_distort`` scale steps apart, the
offset one of 13 fixed corner / centre / quarter positions), a resize to ``size x size`` and an
optional horizontal flip. Evaluation resizes the short side to ``size`` and takes the centre
crop, done here as "centre square of the short side, resized", which is the same picture with
one resize fewer.

The motion field (pixels per frame, (dx, dy), on a grid of cells over the frame) gets
the same geometry: it is resampled bilinearly onto ``size/4 x size/4`` cells of the output crop,
its vectors are scaled by the resize factor, and a flip mirrors it and negates dx.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numba
import numpy as np
import torch
import torch.nn.functional as F

from mvm.grid import TokenGrid
from mvm.motion.field import to_token_grid

#: Output motion cells are this many output pixels on a side.
MOTION_CELL = 4


class ClipTransform:
    """Crop, resize, flip and normalise a clip; the motion field follows the pixels.

    Args:
        size: output side S in pixels.
        train: multi-scale crop and flip (True) or short-side resize and centre crop (False).
        scales: candidate crop sides as fractions of the short side (training).
        flip: random horizontal flip with probability 0.5 (training).
        mean, std: per-channel normalisation of [0, 1] pixels.
        max_distort: largest index distance between the width and height scales (TSN).
    """

    def __init__(
        self,
        size: int,
        train: bool,
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        flip: bool = True,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        max_distort: int = 1,
    ) -> None:
        if size < MOTION_CELL:
            raise ValueError(f"size must be >= {MOTION_CELL}, got {size}")
        if not scales or not all(0 < s <= 1 for s in scales):
            raise ValueError(f"scales must lie in (0, 1], got {list(scales)}")
        self.size = int(size)
        self.train = train
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.max_distort = max_distort
        self._a, self._b = _scale_shift(tuple(map(float, mean)), tuple(map(float, std)))
        self._cells: torch.Tensor | None = None  # output cell centres in [0, 1] (made once)

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(y0, x0, crop_h, crop_w)`` of the region to keep in a ``height x width`` frame."""
        base = min(height, width)
        if not self.train:
            return (height - base) // 2, (width - base) // 2, base, base
        sides = [max(1, int(base * s)) for s in self.scales]
        pairs = [(ch, cw) for i, ch in enumerate(sides) for j, cw in enumerate(sides)
                 if abs(i - j) <= self.max_distort]
        ch, cw = pairs[int(rng.integers(len(pairs)))]
        hs, ws = (height - ch) // 4, (width - cw) // 4
        # TSN's fixed offsets (fix_crop + more_fix_crop), in quarter steps of the free space.
        offsets = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2),
                   (1, 1), (1, 3), (3, 1), (3, 3)]
        qy, qx = offsets[int(rng.integers(len(offsets)))]
        return qy * hs, qx * ws, ch, cw

    def draw(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int, bool]:
        """``(y0, x0, crop_h, crop_w, flip)`` for a ``height x width`` clip: what ``__call__``
        draws from ``rng`` (the crop, then the flip), for callers that need the crop first."""
        box = self.crop_box(height, width, rng)
        return (*box, self.train and self.flip and bool(rng.random() < 0.5))

    def __call__(
        self, frames: np.ndarray, motion: np.ndarray | None, rng: np.random.Generator | None, block: int | None = None,
        out: torch.Tensor | None = None, params: tuple[int, int, int, int, bool] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Transform one clip.

        Args:
            frames: ``[T, H, W, 3]`` uint8 RGB.
            motion: ``[T, Hm, Wm, 2]`` float32 (dx, dy) in input pixels, or None.
            rng: draws the crop and the flip (training only); unused with ``params``.
            block: the field's cell side in pixels, its cells starting at the top-left pixel
                (``Hm = ceil(H / block)`` may overhang the frame); None: the cells tile the frame.
            out: ``[3, T, S, S]`` contiguous buffer to write the video into (e.g. one row of an
                item's stacked repeats), or None for a new float32 one. A uint8 buffer gets the
                resized pixels as they are, for :func:`normalise_pixels` to normalise later (on
                the GPU: a quarter of the bytes through shared memory, pinning and the copy).
            params: crop and flip drawn beforehand (:meth:`draw`), instead of from ``rng``.

        Returns:
            video ``[3, T, S, S]`` float32 normalised (into a uint8 ``out``: uint8, not normalised),
            and motion ``[T, S/4, S/4, 2]`` float32 in output pixels (None when ``motion`` is None).
        """
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T, H, W, 3], got {tuple(frames.shape)}")
        _, h, w, _ = frames.shape
        y0, x0, ch, cw, flip = self.draw(h, w, rng) if params is None else params
        video = self._pixels(frames, y0, x0, ch, cw, flip, out)
        out_motion = None if motion is None else self.motion(motion, (h, w), (y0, x0, ch, cw, flip), block)
        return video, out_motion

    def motion(self, motion: np.ndarray, frame_hw: tuple[int, int], params: tuple[int, int, int, int, bool],
               block: int | None = None) -> torch.Tensor:
        """The motion half of ``__call__``: ``[T, Hm, Wm, 2]`` motion of ``frame_hw`` frames
        through the crop and flip ``params`` (:meth:`draw`) -> ``[T, S/4, S/4, 2]`` float32 in
        output pixels. For callers that transform a clip's pixels and its motion apart (the
        dataset does all repeats' motion one after the other, while their field is in cache)."""
        if motion.ndim != 4 or motion.shape[-1] != 2:
            raise ValueError(f"motion must be [T, Hm, Wm, 2], got {tuple(motion.shape)}")
        # pixel extent the field covers: the frame, or whole cells of `block` pixels
        extent = frame_hw if block is None else (motion.shape[1] * block, motion.shape[2] * block)
        return self._motion(motion, extent, *params)

    def motion_tokens(self, motion: np.ndarray, frame_hw: tuple[int, int], params: tuple[int, int, int, int, bool],
                      block: int | None, grid: TokenGrid) -> torch.Tensor:
        """``to_token_grid(self.motion(motion, frame_hw, params, block), grid)`` in one step: the
        clip's motion averaged over each token ``[t, h, w, 2]`` float32, in output pixels.

        Both steps are linear and separable in rows and columns: the bilinear resampling onto
        the output cells, then the mean over each token's cells and tubelet frames. So each
        token row is one weighted sum of the field's rows (``Wy [h, Hm]``, the bilinear weights
        of its cells' centres summed), each token column likewise (``Wx [w, Wm]``), and the
        tokens are ``Wy @ (field summed over each tubelet) @ Wx^T`` over the crop's cells, instead
        of resampling ``T x (S/4)^2`` cells and pooling them (0.45 against 1.05 ms per 16x224 clip,
        one thread, as two torch matrix products). Both weight matrices are banded (a token row
        reads the 3-5 field rows under its cells), so one compiled loop over their non-zero bands
        does it in a tenth of the products' work, summing in float64 (:func:`_tokens_loop`). The
        same values up to float32 rounding (tested)."""
        if motion.ndim != 4 or motion.shape[-1] != 2:
            raise ValueError(f"motion must be [T, Hm, Wm, 2], got {tuple(motion.shape)}")
        t, hm, wm = motion.shape[:3]
        n = self.size // MOTION_CELL
        if t != grid.frames or grid.size != (self.size, self.size) or n < max(grid.h, grid.w):
            return to_token_grid(self.motion(motion, frame_hw, params, block), grid)
        y0, x0, ch, cw, flip = params
        h, w = frame_hw if block is None else (hm * block, wm * block)
        wy, (r0, r1) = _cell_weights(y0, ch, h, hm, n, grid.h)
        wx, (c0, c1) = _cell_weights(x0, cw, w, wm, n, grid.w)
        # to output pixels and a mean over the tubelet; a flip mirrors the token columns (whole
        # tokens, as S/4 cells divide into them) and negates dx
        sx, sy = self.size / cw / grid.tubelet, self.size / ch / grid.tubelet
        out = torch.empty(grid.t, grid.h, grid.w, 2, dtype=torch.float32)
        _tokens_loop(np.ascontiguousarray(motion, np.float32), grid.tubelet, r0, c0, wy, wx,
                     np.float32(-sx if flip else sx), np.float32(sy), bool(flip), out.numpy())
        return out

    def _pixels(self, frames: np.ndarray, y0: int, x0: int, ch: int, cw: int, flip: bool,
                out: torch.Tensor | None = None) -> torch.Tensor:
        s = self.size
        crop = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y0 + ch, x0:x0 + cw]))
        x = crop.permute(0, 3, 1, 2)  # [T, 3, ch, cw] uint8, channels-last in memory
        if (ch, cw) != (s, s):
            # Resized as uint8 (torch's channels-last uint8 kernel is ~8x faster than float here,
            # within one grey level of it); antialias only matters (and only works) when shrinking.
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                              antialias=ch > s or cw > s)
        if flip:
            x = x.flip(-1)
        # One float buffer, written once in the output layout and normalised in place: the same
        # values as x.float() * a + b, without three more clip-sized temporaries (each a fresh
        # allocation a loader worker pays page faults for; see docs/benchmarks.md, loader).
        t = x.shape[0]
        if out is None:
            out = torch.empty(3, t, s, s)
        elif (out.shape != (3, t, s, s) or out.dtype not in (torch.float32, torch.uint8)
              or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous float32 or uint8 [3, {t}, {s}, {s}] tensor, got "
                             f"{out.dtype} {tuple(out.shape)}")
        out.copy_(x.permute(1, 0, 2, 3))  # [T, 3, S, S] -> [3, T, S, S] (and uint8 -> float32)
        if out.dtype == torch.uint8:  # normalised where it is used (normalise_pixels)
            return out
        return out.mul_(self._a.view(3, 1, 1, 1)).add_(self._b.view(3, 1, 1, 1))

    def _motion(self, motion: np.ndarray, extent: tuple[int, int], y0: int, x0: int, ch: int, cw: int,
                flip: bool) -> torch.Tensor:
        t, (h, w) = motion.shape[0], extent
        n = self.size // MOTION_CELL
        field = torch.from_numpy(np.ascontiguousarray(motion, dtype=np.float32)).permute(0, 3, 1, 2)
        # Centres of the output cells, in input pixels, then in grid_sample's [-1, 1] where -1 and
        # 1 are the outer edges of the field's cells (align_corners=False).
        if self._cells is None or self._cells.numel() != n:
            self._cells = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        grid = torch.empty(n, n, 2)  # [n, n, (x, y)]
        grid[..., 0] = (x0 + self._cells * cw) * (2.0 / w) - 1.0
        grid[..., 1] = ((y0 + self._cells * ch) * (2.0 / h) - 1.0)[:, None]
        out = F.grid_sample(field, grid.expand(t, n, n, 2), mode="bilinear", padding_mode="border",
                            align_corners=False)  # [T, 2, n, n]
        # to output pixels; a flip mirrors the columns and negates dx (x -1 is exact either way)
        sx = self.size / cw
        out = out.permute(0, 2, 3, 1) * torch.tensor([-sx if flip else sx, self.size / ch])
        return (out.flip(2) if flip else out).contiguous()


@functools.lru_cache(maxsize=16)
def _scale_shift(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``a, b`` ``[1, 3, 1, 1]`` float32 on ``device`` such that ``x * a + b = (x / 255 - mean) /
    std``: a pixel normalised in one multiply-add, the same constants wherever it is done. Made
    once per device: a host tensor made in a step would wait for the GPU."""
    std_t = torch.tensor(std, dtype=torch.float32)
    a = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1)
    b = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1)
    return a.to(device), b.to(device)


def normalise_pixels(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``[N, 3, T, S, S]`` or ``[3, T, S, S]`` uint8 clips (a loader's ``pixels="uint8"``
    output) -> float32 normalised on their device, bit for bit what :class:`ClipTransform` gives
    as float32 (the same conversion, then the same multiply and add). A float tensor is returned
    as it is (already normalised).

    The loader then moves a quarter of the bytes through shared memory, pinning and the copy to
    the GPU (9.2 instead of 36.8 MB for four 16x224 clips), and the GPU does the normalising."""
    if video.dtype != torch.uint8:
        return video
    a, b = (c.view(3, 1, 1, 1) for c in _scale_shift(tuple(map(float, mean)), tuple(map(float, std)), video.device))
    return video.to(torch.float32).mul_(a).add_(b)


@numba.njit(cache=True, nogil=True)
def _tokens_loop(motion, tubelet, r0, c0, wy, wx, sx, sy, flip, out):  # pragma: no cover (compiled)
    """``out[t, i, j] = (Wy @ field_t @ Wx^T)[i, j] * (sx, sy)``, field_t the motion ``[T, Hm, Wm, 2]``
    summed over tubelet ``t`` (float32, frame after frame, as ``np.sum`` along that axis) at rows
    ``r0 + (0 .. R-1)`` and columns ``c0 + (0 .. C-1)``; ``wy [th, R]``, ``wx [tw, C]`` float32,
    read only within each row's non-zero band; products summed in float64, then float32 as
    stored and scaled. ``flip`` mirrors the token columns (``sx`` carries the sign of dx)."""
    nt, th, tw = out.shape[0], out.shape[1], out.shape[2]
    rows, cols = wy.shape[1], wx.shape[1]
    ya, yb = _bands(wy)
    xa, xb = _bands(wx)
    field = np.empty((rows, cols, 2), np.float32)
    acc = np.empty((cols, 2))
    for t in range(nt):
        for r in range(rows):
            for q in range(cols):
                for k in range(2):
                    s = motion[t * tubelet, r0 + r, c0 + q, k]
                    for u in range(1, tubelet):
                        s += motion[t * tubelet + u, r0 + r, c0 + q, k]
                    field[r, q, k] = s
        for i in range(th):
            acc[:] = 0.0
            for r in range(ya[i], yb[i]):
                weight = np.float64(wy[i, r])
                for q in range(cols):
                    acc[q, 0] += weight * field[r, q, 0]
                    acc[q, 1] += weight * field[r, q, 1]
            for j in range(tw):
                dx = 0.0
                dy = 0.0
                for q in range(xa[j], xb[j]):
                    dx += np.float64(wx[j, q]) * acc[q, 0]
                    dy += np.float64(wx[j, q]) * acc[q, 1]
                col = tw - 1 - j if flip else j
                out[t, i, col, 0] = np.float32(dx) * sx
                out[t, i, col, 1] = np.float32(dy) * sy


@numba.njit(cache=True, nogil=True)
def _bands(weights):  # pragma: no cover (compiled)
    """Per row of ``[rows, n]`` weights, the range ``[a, b)`` holding its non-zero entries."""
    n = weights.shape[0]
    a = np.zeros(n, np.int64)
    b = np.zeros(n, np.int64)
    for i in range(n):
        first, last = -1, -1
        for j in range(weights.shape[1]):
            if weights[i, j] != 0:
                if first < 0:
                    first = j
                last = j
        if first >= 0:
            a[i], b[i] = first, last + 1
    return a, b


def _cell_weights(start: int, extent: int, size: int, cells: int, n: int, tokens: int
                  ) -> tuple[np.ndarray, tuple[int, int]]:
    """Along one axis: ``[tokens, hi - lo]`` float32 weights of field cells ``lo .. hi - 1``
    giving each token's mean of the bilinear samples at its output cells' centres.

    The ``n`` output cells' centres ``start + (j + 0.5) / n * extent`` (input pixels, over a
    field of ``cells`` cells spanning ``size`` pixels) are sampled as ``F.grid_sample`` does
    (align_corners=False, border padding: the coordinate in cells, less a half, clamped to the
    field), and pooled into ``tokens`` bins as ``adaptive_avg_pool`` bins them (a compiled loop:
    the NumPy version, a ``[n, hi - lo]`` sample matrix and a pooling product, took 20 us a
    call, twice per clip)."""
    weights, lo, hi = _cell_weights_loop(float(start), float(extent), float(size), int(cells), int(n), int(tokens))
    return weights, (lo, hi)


@numba.njit(cache=True, nogil=True)
def _cell_weights_loop(start, extent, size, cells, n, tokens):  # pragma: no cover (compiled)
    """``_cell_weights``: each output cell's two bilinear weights (float64) added into the token
    bins that hold it (``adaptive_avg_pool``'s bins: ``[k n / tokens, ceil((k + 1) n / tokens))``,
    each cell weighing one over its bin's size)."""
    i0 = np.empty(n, np.int64)
    frac = np.empty(n)
    for j in range(n):
        u = min(max((start + (j + 0.5) * (extent / n)) * (cells / size) - 0.5, 0.0), cells - 1.0)
        i0[j] = np.int64(u)  # floor (u >= 0)
        frac[j] = u - i0[j]
    lo, hi = i0[0], min(i0[n - 1] + 1, cells - 1) + 1  # centres increase
    weights = np.zeros((tokens, hi - lo))
    for k in range(tokens):
        a, b = (k * n) // tokens, -(-((k + 1) * n) // tokens)
        share = 1.0 / (b - a)
        for j in range(a, b):
            weights[k, i0[j] - lo] += share * (1.0 - frac[j])
            weights[k, min(i0[j] + 1, cells - 1) - lo] += share * frac[j]
    return weights.astype(np.float32), lo, hi
