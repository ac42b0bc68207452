"""The one token grid every component derives its geometry from.

A clip of ``frames x height x width`` pixels cut into tubelets of ``tubelet x patch x patch``
gives ``t x h x w`` tokens, flattened in (t, h, w) order: token ``i`` sits at
``(i // (h*w), (i // w) % h, i % w)``. This is the order of the tubelet convolution's output and
of transformers' VideoMAE, so masks and targets move between the two unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenGrid:
    """Token geometry of a clip.

    Attributes:
        t: token-frames (``frames // tubelet``).
        h: token rows (``height // patch``).
        w: token columns (``width // patch``).
        tubelet: frames per token.
        patch: pixels per token side.
    """

    t: int
    h: int
    w: int
    tubelet: int = 2
    patch: int = 16

    @classmethod
    def from_clip(cls, frames: int, size: int | tuple[int, int], tubelet: int, patch: int) -> TokenGrid:
        """Grid of a ``frames x size x size`` clip (or ``size=(height, width)``).

        Raises:
            ValueError: when the clip does not divide into whole tubelets.
        """
        height, width = (size, size) if isinstance(size, int) else size
        if frames % tubelet:
            raise ValueError(f"frames={frames} is not divisible by tubelet={tubelet}")
        if height % patch or width % patch:
            raise ValueError(f"size={height}x{width} is not divisible by patch={patch}")
        return cls(frames // tubelet, height // patch, width // patch, tubelet, patch)

    @property
    def spatial(self) -> int:
        """Tokens per token-frame (``h * w``)."""
        return self.h * self.w

    @property
    def num_tokens(self) -> int:
        """All tokens of the clip (``t * h * w``)."""
        return self.t * self.h * self.w

    @property
    def frames(self) -> int:
        """Pixel frames covered by the grid."""
        return self.t * self.tubelet

    @property
    def size(self) -> tuple[int, int]:
        """Pixel (height, width) covered by the grid."""
        return self.h * self.patch, self.w * self.patch

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(t, h, w)``."""
        return self.t, self.h, self.w
