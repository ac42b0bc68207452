"""Named model sizes (VideoMAE / VideoMAE V2) and the builders that use them.

| name  | dim  | depth | heads | mlp ratio | decoder dim/heads/depth | params (encoder) |
|-------|------|-------|-------|-----------|-------------------------|------------------|
| tiny  | 192  | 6     | 3     | 4         | 96 / 2 / 2              | ~3.0M (ours, CPU) |
| small | 384  | 12    | 6     | 4         | 192 / 3 / 4             | ~22M             |
| base  | 768  | 12    | 12    | 4         | 384 / 6 / 4             | ~87M             |
| large | 1024 | 24    | 16    | 4         | 512 / 8 / 4             | ~305M            |
| huge  | 1280 | 32    | 16    | 4         | 640 / 8 / 4             | ~633M            |
| giant | 1408 | 40    | 16    | 48/11     | 512 / 8 / 4             | ~1011M (V2)      |

``tiny`` is not a published VideoMAE size: it is ours, small enough to pretrain on a 2-core CPU.
Short aliases: s, b, l, h, g (and vit-s, vit-b, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mvm.models.classifier import VideoClassifier
from mvm.models.encoder import VideoEncoder
from mvm.models.mae import MaskedVideoAutoencoder


@dataclass(frozen=True)
class Variant:
    """One named size. Every field can be overridden by keyword in :func:`build_mae`."""

    dim: int
    depth: int
    heads: int
    decoder_dim: int
    decoder_heads: int
    decoder_depth: int = 4
    mlp_ratio: float = 4.0
    init_values: float | None = None
    norm_eps: float = 1e-6


VARIANTS: dict[str, Variant] = {
    "tiny": Variant(192, 6, 3, decoder_dim=96, decoder_heads=2, decoder_depth=2),
    "small": Variant(384, 12, 6, decoder_dim=192, decoder_heads=3),
    "base": Variant(768, 12, 12, decoder_dim=384, decoder_heads=6),
    "large": Variant(1024, 24, 16, decoder_dim=512, decoder_heads=8),
    "huge": Variant(1280, 32, 16, decoder_dim=640, decoder_heads=8),
    "giant": Variant(1408, 40, 16, decoder_dim=512, decoder_heads=8, mlp_ratio=48 / 11),
}

ALIASES: dict[str, str] = {
    **{k[0]: k for k in ("small", "base", "large", "huge", "giant")},
    **{f"vit-{k[0]}": k for k in ("small", "base", "large", "huge", "giant")},
    "vit-t": "tiny",
}


def get_variant(name: str) -> Variant:
    """The :class:`Variant` called ``name`` (or an alias)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in VARIANTS:
        raise KeyError(f"unknown model size '{name}'; known: {', '.join(VARIANTS)} (aliases {', '.join(ALIASES)})")
    return VARIANTS[key]


def _resolve(name: str, overrides: dict[str, Any]) -> Variant:
    fields = {f.name for f in dataclasses.fields(Variant)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise TypeError(f"unknown model override(s) {', '.join(bad)}; known: {', '.join(sorted(fields))}")
    return dataclasses.replace(get_variant(name), **overrides)


def build_encoder(name: str, tubelet: int = 2, patch: int = 16, drop_path: float = 0.0, in_chans: int = 3,
                  final_norm: bool = True, checkpointing: bool = False, **overrides: Any) -> VideoEncoder:
    """A :class:`VideoEncoder` of the named size; ``overrides`` replace :class:`Variant` fields.

    ``checkpointing``: activation checkpointing per block (config key ``model.checkpointing``).
    """
    v = _resolve(name, overrides)
    return VideoEncoder(v.dim, v.depth, v.heads, tubelet, patch, in_chans=in_chans, mlp_ratio=v.mlp_ratio,
                        drop_path=drop_path, norm_eps=v.norm_eps, final_norm=final_norm,
                        init_values=v.init_values, checkpointing=checkpointing)


def build_mae(name: str, tubelet: int = 2, patch: int = 16, drop_path: float = 0.0, out_dim: int | None = None,
              in_chans: int = 3, motion_dim: int = 0, checkpointing: bool = False,
              **overrides: Any) -> MaskedVideoAutoencoder:
    """A :class:`MaskedVideoAutoencoder` of the named size.

    ``out_dim`` defaults to ``tubelet*patch*patch*in_chans`` (pixels of one tubelet); ``motion_dim``
    > 0 adds the motion head on the encoder (2 for the codec-motion target); ``checkpointing``
    recomputes each encoder and decoder block in the backward pass (``model.checkpointing``).
    """
    v = _resolve(name, overrides)
    encoder = build_encoder(name, tubelet, patch, drop_path, in_chans, final_norm=True, **overrides)
    return MaskedVideoAutoencoder(encoder, v.decoder_dim, v.decoder_depth, v.decoder_heads, out_dim=out_dim,
                                  decoder_mlp_hidden=int(v.decoder_dim * v.mlp_ratio), motion_dim=motion_dim,
                                  checkpointing=checkpointing)


def build_classifier(name: str, num_classes: int, tubelet: int = 2, patch: int = 16, drop_path: float = 0.1,
                     head_dropout: float = 0.0, in_chans: int = 3, checkpointing: bool = False,
                     **overrides: Any) -> VideoClassifier:
    """A :class:`VideoClassifier` of the named size (mean pooling, ``fc_norm``, linear head)."""
    encoder = build_encoder(name, tubelet, patch, drop_path, in_chans, final_norm=False,
                            checkpointing=checkpointing, **overrides)
    return VideoClassifier(encoder, num_classes, head_dropout=head_dropout)
