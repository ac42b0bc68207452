"""Video classifier in VideoMAE's fine-tuning layout.

Encoder over all tokens (no final norm), mean pooling over tokens, ``fc_norm`` LayerNorm, dropout,
linear ``head``: the layout of VideoMAE's ``modeling_finetune.py`` with ``use_mean_pooling=True`` and
of transformers' ``VideoMAEForVideoClassification``.
"""

from __future__ import annotations

import torch
from torch import nn

from mvm.models.encoder import VideoEncoder


class VideoClassifier(nn.Module):
    """Mean-pooled linear classifier on a :class:`VideoEncoder`.

    Args:
        encoder: the encoder; its final norm is replaced by identity (``fc_norm`` takes its place).
        num_classes: number of classes.
        head_dropout: dropout before the head.
        fc_norm_eps: epsilon of ``fc_norm`` (VideoMAE 1e-6; transformers' is fixed at 1e-5).
    """

    def __init__(self, encoder: VideoEncoder, num_classes: int, head_dropout: float = 0.0,
                 fc_norm_eps: float = 1e-6) -> None:
        super().__init__()
        encoder.norm = nn.Identity()
        self.encoder = encoder
        self.num_classes = num_classes
        self.fc_norm = nn.LayerNorm(encoder.dim, eps=fc_norm_eps)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> pooled, normalised features ``[B, dim]``."""
        return self.fc_norm(self.encoder(video).mean(1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> logits ``[B, num_classes]``."""
        return self.head(self.dropout(self.forward_features(video)))
