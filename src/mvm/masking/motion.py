"""Motion masks: simulated motion masking (SMM) and motion-guided masking (MGM, Fan et al. ICCV 2023).

Both hide, in every token-frame, a rectangle that moves continuously through the clip, and fill the
rest of the per-frame budget with another strategy, so the count is exact:

- budget per token-frame ``k = int(ratio * h * w)``, total ``k * t`` (as tube masking);
- rectangle of about ``motion_share * k`` tokens, aspect ratio (rows/cols) drawn log-uniformly in
  ``aspect`` per sample, always whole inside the grid; its tokens are taken first (if rounding
  makes it larger than ``k``, MGM keeps its highest-motion tokens);
- fill ``tube`` (default): one random ranking of the spatial positions per sample, each
  token-frame taking the best-ranked positions outside the rectangle, so the fill is the same in
  every token-frame except where the rectangle displaces it; ``random``: independent per frame;
- SMM moves the rectangle by a random walk with momentum (velocity kept with probability 0.8),
  at most ``max_step`` (default 1) tokens per axis per token-frame, reflected at the borders;
- MGM centres it on the strongest motion: per token-frame, the motion magnitude minus the
  frame's median vector (camera pan), box-filtered with the rectangle itself plus its central half
  (a pyramid kernel that favours centring), [1, 2, 1]-smoothed over time; the rectangle then
  follows the best placement at most ``max_step`` (default 2) tokens per axis per token-frame, so
  it is continuous and the moving content stays hidden from the encoder. A sample with no token
  faster than ``min_motion`` pixels (or no motion at all) falls back to SMM, counted in
  ``fallbacks``.

Design choice (the paper leaves it open): ``motion_share = 0.5`` by default, i.e. half of the
budget follows the motion and half is tube-masked. At 224px (14x14 tokens) that is a rectangle of
about 73 tokens per frame at ratio 0.75 and 88 at ratio 0.9: large enough to cover a moving person
or object, while the tube half still stops copying from neighbouring frames elsewhere.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from mvm.grid import TokenGrid
from mvm.masking.base import ENCODER_MASKS, MaskContext, MaskStrategy, random_subset

log = logging.getLogger(__name__)

FILLS = ("tube", "random")


def _rand(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


class RegionMask(MaskStrategy):
    """Shared machinery: a moving rectangle per token-frame plus a fill to the exact budget.

    Args:
        ratio: share of tokens hidden, in (0, 1).
        motion_share: share of the per-frame budget spent on the rectangle, in [0, 1].
        aspect: (min, max) rows/cols aspect ratio of the rectangle.
        fill: "tube" (the same positions in every token-frame where the rectangle is not) or
            "random" (independent per token-frame).
        max_step: largest move of the rectangle per token-frame, in tokens, per axis.
    """

    default_max_step = 1

    def __init__(self, ratio: float, motion_share: float = 0.5, aspect: tuple[float, float] = (0.5, 2.0),
                 fill: str = "tube", max_step: int | None = None) -> None:
        super().__init__(ratio)
        if not 0.0 <= motion_share <= 1.0:
            raise ValueError(f"motion_share must be in [0, 1], got {motion_share}")
        lo, hi = aspect
        if not 0 < lo <= hi:
            raise ValueError(f"aspect must be (min, max) with 0 < min <= max, got {aspect}")
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}, got '{fill}'")
        max_step = self.default_max_step if max_step is None else int(max_step)
        if max_step < 0:
            raise ValueError(f"max_step must be >= 0, got {max_step}")
        self.motion_share = float(motion_share)
        self.aspect = (float(lo), float(hi))
        self.fill = fill
        self.max_step = max_step

    def count(self, grid: TokenGrid) -> int:
        return int(self.ratio * grid.spatial) * grid.t

    def geometry(self, grid: TokenGrid, batch: int, generator: torch.Generator) -> tuple[np.ndarray, ...]:
        """Rectangle size and a random walk of its corner, from one draw of the generator.

        Returns:
            ``rows, cols`` ``[B]`` and ``top, left`` ``[B, t]`` int64 arrays (the geometry is
            done in numpy: the arrays are tiny and numpy's per-call overhead is a third of torch's).
        """
        t = grid.t
        u = torch.rand(batch, 3 + 4 * t, generator=generator, dtype=torch.float64,
                       device=generator.device).cpu().numpy()
        area = self.motion_share * int(self.ratio * grid.spatial)
        lo, hi = math.log(self.aspect[0]), math.log(self.aspect[1])
        aspect = np.exp(lo + u[:, 0] * (hi - lo))  # rows / cols, log-uniform
        if area > 0:
            rows = np.clip(np.rint(np.sqrt(area * aspect)), 1, grid.h).astype(np.int64)
            cols = np.clip(np.rint(area / rows), 1, grid.w).astype(np.int64)
        else:
            rows = cols = np.zeros(batch, dtype=np.int64)
        limit = np.stack([grid.h - rows, grid.w - cols], 1)  # [B, 2] largest corner per axis
        walk = self.random_walk(limit, u[:, 1:3], u[:, 3:].reshape(batch, 2, 2, t))
        return rows, cols, walk[:, 0], walk[:, 1]

    def random_walk(self, limit: np.ndarray, u_start: np.ndarray, u_steps: np.ndarray,
                    momentum: float = 0.8) -> np.ndarray:
        """Positions ``[..., steps]`` in ``[0, limit]`` moving at most ``max_step`` per step.

        Args:
            limit: ``[...]`` largest position; ``u_start`` ``[...]`` and ``u_steps``
                ``[..., 2, steps]`` uniform draws in [0, 1).

        The velocity is redrawn uniformly in ``[-max_step, max_step]`` with probability
        ``1 - momentum`` at every step, otherwise kept; the unbounded walk is folded back into
        ``[0, limit]`` by reflection (1-Lipschitz, so the step bound survives).
        """
        s, steps = self.max_step, u_steps.shape[-1]
        start = np.floor(u_start * (limit + 1)).astype(np.int64)
        new = np.floor(u_steps[..., 0, :] * (2 * s + 1)).astype(np.int64) - s
        redraw = u_steps[..., 1, :] >= momentum
        redraw[..., 0] = True
        last = np.maximum.accumulate(np.where(redraw, np.arange(steps), 0), axis=-1)  # last redraw
        vel = np.take_along_axis(new, last, -1)
        vel[..., 0] = 0
        pos = start[..., None] + vel.cumsum(-1)
        lim = limit[..., None]
        period = np.maximum(2 * lim, 1)
        return np.where(lim > 0, lim - np.abs(np.mod(pos, period) - lim), 0)

    def compose(self, grid: TokenGrid, top: np.ndarray, left: np.ndarray, rows: np.ndarray,
                cols: np.ndarray, generator: torch.Generator, inner: torch.Tensor | None = None) -> torch.Tensor:
        """Rectangle tokens first, then the fill, exactly ``k`` per token-frame.

        Args:
            top, left: ``[B, t]`` rectangle corner per token-frame.
            rows, cols: ``[B]`` rectangle size.
            inner: optional ``[B, t, h*w]`` in [0, 1): order among rectangle tokens when the
                rectangle exceeds the budget (higher kept first; MGM passes motion magnitude).

        Returns:
            ``[B, N]`` bool.
        """
        b, (t, h, w), hw = top.shape[0], grid.shape, grid.spatial
        k = int(self.ratio * hw)
        ys, xs = np.arange(h), np.arange(w)
        in_y = (ys >= top[..., None]) & (ys < (top + rows[:, None])[..., None])  # [B, t, h]
        in_x = (xs >= left[..., None]) & (xs < (left + cols[:, None])[..., None])  # [B, t, w]
        region = torch.from_numpy((in_y[..., :, None] & in_x[..., None, :]).reshape(b, t, hw))
        noise = _rand((b, hw) if self.fill == "tube" else (b, t, hw), generator).cpu()
        # Integer ranks, so random_subset's 1e-3 tie-break noise cannot reorder the tube fill
        # between token-frames: where the rectangle is not, the same positions win every frame.
        rank = noise.argsort(-1).argsort(-1).float()
        fill = rank[:, None, :].expand(b, t, hw) if self.fill == "tube" else rank
        top_priority = float(hw + 1) if inner is None else hw + 1 + inner.clamp(0, 0.999)
        priority = torch.where(region, top_priority, fill)
        cand = torch.ones(b * t, hw, dtype=torch.bool)
        return random_subset(cand, k, generator, priority.reshape(b * t, hw)).view(b, grid.num_tokens)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ratio={self.ratio}, motion_share={self.motion_share}, "
                f"aspect={self.aspect}, fill='{self.fill}', max_step={self.max_step})")


class SimulatedMotionMask(RegionMask):
    """SMM: a random rectangle that wanders continuously through the clip, rest filled by tube."""

    def regions(self, grid: TokenGrid, batch: int, generator: torch.Generator,
                context: MaskContext | None = None) -> tuple[np.ndarray, ...]:
        """``rows, cols`` ``[B]`` and corner ``top, left`` ``[B, t]`` of the rectangle."""
        return self.geometry(grid, batch, generator)

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        rows, cols, top, left = self.regions(grid, batch, generator, context)
        return self.compose(grid, top, left, rows, cols, generator)


class MotionGuidedMask(RegionMask):
    """MGM: the rectangle sits on the strongest motion of each token-frame and follows it.

    Extra args:
        min_motion: pixels; a token-frame whose largest (compensated) token motion is below this
            has no motion and the rectangle holds still there; a clip with none falls back to SMM.
        compensate_camera: subtract each token-frame's median motion vector first, so a camera
            pan does not count as foreground motion.

    Attributes:
        fallbacks: samples so far that had no motion and got an SMM rectangle instead.
    """

    needs_motion = True

    default_max_step = 2

    def __init__(self, ratio: float, motion_share: float = 0.5, aspect: tuple[float, float] = (0.5, 2.0),
                 fill: str = "tube", max_step: int | None = None, min_motion: float = 0.25,
                 compensate_camera: bool = True) -> None:
        super().__init__(ratio, motion_share, aspect, fill, max_step)
        self.min_motion = float(min_motion)
        self.compensate_camera = bool(compensate_camera)
        self.fallbacks = 0

    def regions(self, grid: TokenGrid, batch: int, generator: torch.Generator,
                context: MaskContext | None = None) -> tuple[np.ndarray, ...]:
        """``rows, cols`` ``[B]``, corner ``top, left`` ``[B, t]``, plus ``mag`` ``[B, t, h, w]`` or None.

        Samples without motion keep the SMM walk and are counted in ``fallbacks``.
        """
        # The SMM walk is always drawn, so the generator advances the same way with or without motion.
        rows, cols, top, left = self.geometry(grid, batch, generator)
        motion = None if context is None else context.motion
        mag = None
        has = np.zeros(batch, dtype=bool)
        if motion is not None:
            mag = self.magnitude(motion, grid, batch)  # [B, t, h, w]
            moving = mag.max((2, 3)) >= self.min_motion  # [B, t]
            has = moving.any(1)
            if has.any():
                m_top, m_left = self._follow(mag, moving, rows, cols)
                top = np.where(has[:, None], m_top, top)
                left = np.where(has[:, None], m_left, left)
        n_fallback = int((~has).sum())
        if n_fallback:
            self.fallbacks += n_fallback
            log.debug("mgm: %d of %d samples have no motion; SMM fallback (%d so far)",
                      n_fallback, batch, self.fallbacks)
        return rows, cols, top, left, mag

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        rows, cols, top, left, mag = self.regions(grid, batch, generator, context)
        inner = None
        if mag is not None:  # order inside the rectangle by motion, used when it exceeds the budget
            peak = np.maximum(mag.max((2, 3), keepdims=True), 1e-6)
            inner = torch.from_numpy((mag / peak).reshape(batch, grid.t, grid.spatial))
        return self.compose(grid, top, left, rows, cols, generator, inner)

    def magnitude(self, motion: torch.Tensor, grid: TokenGrid, batch: int) -> np.ndarray:
        """``[B, t, h, w]`` float32 motion magnitude in pixels, camera-compensated if asked."""
        if tuple(motion.shape) != (batch, *grid.shape, 2):
            raise ValueError(f"mgm needs motion [B, t, h, w, 2] = {[batch, *grid.shape, 2]}, "
                             f"got {list(motion.shape)}")
        m = motion.detach().cpu().float().numpy()
        dx, dy = m[..., 0], m[..., 1]  # separate planes: numpy reduces a trailing axis of 2 slowly
        if not (np.isfinite(dx).all() and np.isfinite(dy).all()):
            dx, dy = np.nan_to_num(dx, posinf=0.0, neginf=0.0), np.nan_to_num(dy, posinf=0.0, neginf=0.0)
        if self.compensate_camera:
            mid = (grid.spatial - 1) // 2  # (lower) median vector of each token-frame
            for_median = np.stack([dx, dy], 2).reshape(batch, grid.t, 2, grid.spatial)
            median = np.partition(for_median, mid, axis=3)[..., mid]  # [B, t, 2]
            dx, dy = dx - median[:, :, 0, None, None], dy - median[:, :, 1, None, None]
        return np.sqrt(dx * dx + dy * dy)

    def _follow(self, m: np.ndarray, mov: np.ndarray, r: np.ndarray,
                c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectangle corners ``[B, t]`` following the motion peak with a bounded speed.

        Args:
            m: ``[B, t, h, w]`` magnitude; mov: ``[B, t]`` token-frames with motion;
            r, c: ``[B]`` rectangle rows and cols.
        """
        b, t, h, w = m.shape
        sat = torch.zeros(b, t, h + 1, w + 1)  # summed-area table (torch's cumsum is 3x numpy's here)
        sat[:, :, 1:, 1:] = torch.from_numpy(m).cumsum(2).cumsum(3)
        sat = sat.numpy()
        ri, ci = (r + 1) // 2, (c + 1) // 2
        # Score of each placement: motion inside the rectangle plus motion inside its central
        # half, a pyramid-shaped box filter that prefers centring the rectangle on the motion.
        zero = np.zeros_like(r)
        score = _box_sums(sat.reshape(b, t, -1), h, w, np.stack([r, ri], 1), np.stack([c, ci], 1),
                          np.stack([zero, (r - ri) // 2], 1), np.stack([zero, (c - ci) // 2], 1))
        # Temporal [1, 2, 1] smoothing: steadier targets under noisy codec vectors, no lag.
        pad = np.concatenate([score[:, :1], score, score[:, -1:]], 1)
        score = 0.25 * pad[:, :-2] + 0.5 * pad[:, 1:-1] + 0.25 * pad[:, 2:]
        valid = (np.arange(h)[:, None] <= (h - r)[:, None, None]) & (np.arange(w) <= (w - c)[:, None, None])
        score[~np.broadcast_to(valid.reshape(b, 1, h * w), score.shape)] = -np.inf
        best = score.argmax(-1)  # [B, t]
        target = np.stack([best // w, best % w], -1)  # [B, t, 2]
        pos = target[np.arange(b), mov.argmax(1)]  # start where the motion first shows
        out = np.empty_like(target)
        s = self.max_step
        for i in range(t):  # bounded-speed follower: continuous by construction
            step = np.minimum(np.maximum(target[:, i] - pos, -s), s)  # np.clip costs 5x more here
            pos = np.where(mov[:, i, None], pos + step, pos)
            out[:, i] = pos
        return out[..., 0], out[..., 1]


def _box_sums(sat: np.ndarray, h: int, w: int, rows: np.ndarray, cols: np.ndarray,
              dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Motion inside boxes placed at every corner ``(y, x)``, summed over the boxes.

    Args:
        sat: ``[B, t, (h+1)*(w+1)]`` summed-area table.
        rows, cols, dy, dx: ``[B, nb]`` ints: box ``j`` of sample ``b`` is ``rows x cols`` at
            ``(y + dy, x + dx)``, clipped to the grid.

    Returns:
        ``[B, t, h*w]``.
    """
    b, t = sat.shape[:2]
    y0 = np.minimum(np.arange(h) + dy[..., None], h)  # [B, nb, h]
    x0 = np.minimum(np.arange(w) + dx[..., None], w)  # [B, nb, w]
    y1 = np.minimum(y0 + rows[..., None], h)
    x1 = np.minimum(x0 + cols[..., None], w)
    ys = np.stack([y1, y0, y1, y0], 2)  # [B, nb, 4, h]
    xs = np.stack([x1, x1, x0, x0], 2)  # [B, nb, 4, w]
    idx = (ys[..., :, None] * (w + 1) + xs[..., None, :]).reshape(b, -1)  # 4 corners per box
    vals = np.empty((b, t, idx.shape[1]), dtype=sat.dtype)
    for i in range(b):  # a 1-D take per sample is 4x faster than take_along_axis
        vals[i] = sat[i][:, idx[i]]
    vals = vals.reshape(b, t, -1, 4, h * w)
    sums = vals[:, :, :, 0] - vals[:, :, :, 1] - vals[:, :, :, 2] + vals[:, :, :, 3]  # [B, t, nb, h*w]
    out = sums[:, :, 0]
    for j in range(1, sums.shape[2]):  # explicit adds: a reduction over a short middle axis is slow
        out = out + sums[:, :, j]
    return out


ENCODER_MASKS.register("smm")(SimulatedMotionMask)
ENCODER_MASKS.register("mgm")(MotionGuidedMask)
