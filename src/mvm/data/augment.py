"""Fine-tuning augmentation: a video RandAugment policy, mixup / cutmix and smoothed soft targets.

``VideoRandAugment`` follows timm's ``rand-m7-n4-mstd0.5-inc1`` (VideoMAE's fine-tuning policy):
``num_ops`` operations drawn with replacement from a fixed list, each applied with probability
``prob`` at magnitude ``M`` (0-10, jittered by a normal of std ``magnitude_std``). Unlike timm on
images, one draw of every parameter (which ops, magnitudes, signs) is applied to all frames of the
clip, and statistics-based ops (auto-contrast, equalize, contrast) use the whole clip's statistics,
so frames stay consistent with each other and motion is not faked. It runs on torch tensors after
the crop (VideoMAE runs it on PIL frames before the crop; the op set and magnitudes are the same).

``Mixup`` is timm's batch-mode ``Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
switch_prob=0.5, label_smoothing=0.1)``: one mixing coefficient per batch, each clip mixed with the
clip at the mirrored batch position, cutmix boxes shared by all frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Grey fill for pixels that geometric ops move in from outside the frame (timm: 128).
FILL = 128 / 255


def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL ``ImageEnhance``: ``b + factor * (a - b)``, clamped to [0, 1]."""
    return (b + factor * (a - b)).clamp(0, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """``[T, 3, H, W]`` -> luma ``[T, 1, H, W]`` (ITU-R 601, as PIL's ``L`` mode)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _affine(x: torch.Tensor, theta: list[list[float]]) -> torch.Tensor:
    """Warp ``[T, 3, H, W]`` by a 2x3 matrix in normalised coordinates; outside pixels become FILL."""
    t = x.shape[0]
    mat = torch.tensor(theta, dtype=x.dtype).expand(t, 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    ones = torch.ones_like(x[:, :1])
    out = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = out[:, 3:]
    return out[:, :3] + (1 - inside) * FILL


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel, one lookup table from the whole clip (PIL's algorithm)."""
    q = (x * 255).round().long().clamp(0, 255)
    out = torch.empty_like(x)
    for c in range(3):
        hist = torch.bincount(q[:, c].flatten(), minlength=256)
        nonzero = hist[hist > 0]
        step = (int(hist.sum()) - int(nonzero[-1])) // 255 if len(nonzero) else 0
        if step == 0:
            out[:, c] = x[:, c]
            continue
        lut = ((torch.cumsum(hist, 0) - hist + step // 2) // step).clamp(0, 255)
        out[:, c] = lut[q[:, c]].to(x.dtype) / 255
    return out


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(0, 2, 3), keepdim=True)
    hi = x.amax(dim=(0, 2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x).clamp(0, 1)


def _sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype) / 13
    smooth = F.conv2d(x.reshape(-1, 1, *x.shape[2:]), k[None, None], padding=1).reshape(x.shape)
    smooth[..., 0, :], smooth[..., -1, :] = x[..., 0, :], x[..., -1, :]  # PIL leaves the border
    smooth[..., :, 0], smooth[..., :, -1] = x[..., :, 0], x[..., :, -1]
    return _blend(x, smooth, factor)


# Each op: (clip [T, 3, H, W] in [0, 1], level in [0, 1], sign +-1) -> clip. Magnitude ranges are
# timm's "increasing" set, so a larger M is always a stronger change.
Op = Callable[[torch.Tensor, float, float], torch.Tensor]
OPS: dict[str, Op] = {
    "AutoContrast": lambda x, lv, s: _autocontrast(x),
    "Equalize": lambda x, lv, s: _equalize(x),
    "Invert": lambda x, lv, s: 1 - x,
    "Rotate": lambda x, lv, s: _affine(x, [[math.cos(a := math.radians(30 * lv * s)), -math.sin(a), 0],
                                           [math.sin(a), math.cos(a), 0]]),
    "PosterizeIncreasing": lambda x, lv, s: (
        ((x * 255).round().long() & (0xFF << (8 - max(1, 4 - int(lv * 4))) & 0xFF)).to(x.dtype) / 255),
    "SolarizeIncreasing": lambda x, lv, s: torch.where(x >= 1 - lv, 1 - x, x),
    "SolarizeAdd": lambda x, lv, s: torch.where(x < 128 / 255, (x + 110 * lv / 255).clamp(max=1), x),
    "ColorIncreasing": lambda x, lv, s: _blend(x, _grey(x).expand_as(x), 1 + 0.9 * lv * s),
    "ContrastIncreasing": lambda x, lv, s: _blend(x, _grey(x).mean().expand_as(x), 1 + 0.9 * lv * s),
    "BrightnessIncreasing": lambda x, lv, s: _blend(x, torch.zeros_like(x), 1 + 0.9 * lv * s),
    "SharpnessIncreasing": lambda x, lv, s: _sharpness(x, 1 + 0.9 * lv * s),
    "ShearX": lambda x, lv, s: _affine(x, [[1, 0.3 * lv * s, 0], [0, 1, 0]]),
    "ShearY": lambda x, lv, s: _affine(x, [[1, 0, 0], [0.3 * lv * s, 1, 0]]),
    "TranslateXRel": lambda x, lv, s: _affine(x, [[1, 0, 2 * 0.45 * lv * s], [0, 1, 0]]),
    "TranslateYRel": lambda x, lv, s: _affine(x, [[1, 0, 0], [0, 1, 2 * 0.45 * lv * s]]),
}


class VideoRandAugment:
    """RandAugment with one parameter draw per clip.

    Args:
        num_ops: operations per clip (N; VideoMAE 4).
        magnitude: strength M in [0, 10] (VideoMAE 7).
        magnitude_std: std of the normal jitter added to M per op (VideoMAE 0.5).
        prob: probability that each drawn op is applied (timm 0.5).
        ops: op names (default: all of :data:`OPS`).
    """

    def __init__(self, num_ops: int = 4, magnitude: float = 7.0, magnitude_std: float = 0.5, prob: float = 0.5,
                 ops: Sequence[str] | None = None) -> None:
        self.num_ops, self.magnitude, self.magnitude_std, self.prob = num_ops, magnitude, magnitude_std, prob
        self.ops = list(ops or OPS)
        unknown = [o for o in self.ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment ops {unknown}; known: {', '.join(OPS)}")

    def draw(self, rng: np.random.Generator) -> list[tuple[str, float, float]]:
        """The ``(op, level in [0, 1], sign)`` applied to one clip."""
        plan = []
        for name in rng.choice(self.ops, self.num_ops, replace=True):
            applied = rng.random() < self.prob
            m = self.magnitude + (rng.normal(0, self.magnitude_std) if self.magnitude_std > 0 else 0.0)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            if applied:
                plan.append((str(name), float(np.clip(m, 0, 10)) / 10, sign))
        return plan

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``[T, 3, H, W]`` float in [0, 1] -> the same, every frame changed the same way."""
        for name, level, sign in self.draw(rng):
            clip = OPS[name](clip, level, sign)
        return clip

    def normalised(self, video: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   rng: np.random.Generator) -> torch.Tensor:
        """Apply to a normalised dataset clip ``[3, T, H, W]`` (undo the normalisation, augment, redo)."""
        m = torch.tensor(mean, dtype=video.dtype).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=video.dtype).view(1, 3, 1, 1)
        x = (video.transpose(0, 1) * s + m).clamp(0, 1)  # [T, 3, H, W]
        return ((self(x, rng) - m) / s).transpose(0, 1).contiguous()


# ---------------------------------------------------------------------------------------------
# Mixup / cutmix with soft targets


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``[B]`` -> ``[B, K]`` targets: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K``
    elsewhere (timm's convention), so every row sums to one."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels[:, None], 1 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a box covering about ``1 - lam`` of the frame, centred at a uniform
    point and clipped to the frame (timm's ``rand_bbox``)."""
    ratio = math.sqrt(1 - lam)
    ch, cw = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = int(np.clip(cy - ch // 2, 0, height)), int(np.clip(cy + ch // 2, 0, height))
    x0, x1 = int(np.clip(cx - cw // 2, 0, width)), int(np.clip(cx + cw // 2, 0, width))
    return y0, y1, x0, x1


class Mixup:
    """Batch-mode mixup / cutmix returning soft targets ``[B, K]`` (rows sum to one).

    Args:
        num_classes: K.
        mixup_alpha: Beta(alpha, alpha) for mixup's coefficient (0: no mixup).
        cutmix_alpha: Beta(alpha, alpha) for cutmix's area (0: no cutmix).
        prob: probability of mixing a batch at all.
        switch_prob: with both on, probability of cutmix instead of mixup.
        label_smoothing: smoothing of the one-hot targets before mixing.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1) -> None:
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, video: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``video [B, C, T, H, W]`` with its batch reversed; returns the mixed clips and ``[B, K]`` targets."""
        lam, box = 1.0, None
        if self.active and rng.random() < self.prob:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
            if use_cutmix:
                lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
                h, w = video.shape[-2:]
                box = cutmix_box(h, w, lam, rng)
                y0, y1, x0, x1 = box
                lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
            else:
                lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
        y1h = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        if lam == 1.0:
            return video, y1h
        if box is not None:
            y0, y1, x0, x1 = box
            video = video.clone()
            video[..., y0:y1, x0:x1] = video.flip(0)[..., y0:y1, x0:x1]
        else:
            video = video * lam + video.flip(0) * (1 - lam)
        return video, y1h * lam + y1h.flip(0) * (1 - lam)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k log softmax(logits)_k``; ``[B, K]`` each."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
