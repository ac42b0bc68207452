"""What LVMAE pretraining needs from a trained tokenizer, and nothing else.

- :func:`load_tokenizer`: a ``mvm tokenizer train`` run folder -> the frozen tokenizer and its config.
- :func:`check_tokenizer`: refuse, naming ``train.tokenizer``, a tokenizer whose token grid is not
  the MAE's (same tubelet and patch: the conv tokenizer then gives one latent per MAE token for any
  clip the MAE can take).
- :class:`LvmaeTargets`: per batch, on the training device, ONE tokenizer pass gives the codes
  (token targets) and the scores (adaptive decoder mask); the decoder mask is then drawn from the
  scores restricted to the encoder-masked tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from mvm.config import Config, ConfigError, apply_dict
from mvm.data.transforms import normalise_pixels
from mvm.grid import TokenGrid
from mvm.masking.base import DECODER_MASKS, mask_to_indices
from mvm.tokenizer.model import VideoTokenizer
from mvm.train import checkpoint as ckpt_io

log = logging.getLogger(__name__)


def _checkpoint_of(path: str | Path) -> Path:
    p = Path(path)
    if (p / "meta.json").is_file() and (p / "model.safetensors").is_file():
        return p
    ckpt = ckpt_io.latest_checkpoint(p) if p.is_dir() else None
    if ckpt is None:
        raise ckpt_io.CheckpointError(f"{p}: no tokenizer checkpoint (expected a `mvm tokenizer train` run folder)")
    return ckpt


def tokenizer_config(path: str | Path) -> Config:
    """The config a tokenizer run was trained with (from its newest checkpoint's meta.json)."""
    import json

    ckpt = _checkpoint_of(path)
    meta = json.loads((ckpt / "meta.json").read_text())
    if meta.get("kind") != "tokenizer":
        raise ckpt_io.CheckpointError(f"{ckpt} is a {meta.get('kind', 'pretrain')} checkpoint, not a tokenizer")
    return apply_dict(Config(), meta.get("config", {}), where=f"{ckpt / 'meta.json'}: ")


def load_tokenizer(path: str | Path, device: torch.device) -> tuple[VideoTokenizer, Config]:
    """The frozen tokenizer of a run folder (or checkpoint folder): eval mode, no gradients."""
    from mvm.tokenizer.task import build_from_config

    cfg = tokenizer_config(path)
    model = build_from_config(cfg)
    ckpt_io.load_weights(model, _checkpoint_of(path))
    model.requires_grad_(False)
    return model.to(device).eval(), cfg


def check_tokenizer(cfg: Config) -> Config | None:
    """Refuse, naming the key, a tokenizer that cannot serve this MAE; returns its config (None: not used)."""
    if not cfg.train.tokenizer:
        return None
    try:
        tok = tokenizer_config(cfg.train.tokenizer)
    except ckpt_io.CheckpointError as e:
        raise ConfigError(f"train.tokenizer: {e}") from None
    mine = (cfg.model.tubelet, cfg.model.patch)
    theirs = (tok.model.tubelet, tok.model.patch)
    if mine != theirs:
        g = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, *mine)
        raise ConfigError(
            f"train.tokenizer: {cfg.train.tokenizer} has tubelet x patch {theirs[0]} x {theirs[1]}, the MAE "
            f"{mine[0]} x {mine[1]}: its latent grid would not be the MAE's token grid {g.shape}")
    return tok


def token_out_dim(cfg: Config) -> int | None:
    """The MAE head's width for token targets (``sum(levels)``), None for pixel targets."""
    if cfg.train.target != "tokens":
        return None
    return sum(tokenizer_config(cfg.train.tokenizer).tokenizer.levels)


@dataclass
class TokenBatch:
    """One tokenizer pass over a batch: ``digits`` ``[B, N, m]`` long, ``scores`` ``[B, N]``,
    ``decode_idx`` ``[B, K]`` long (the adaptive mask's tokens, or the loader's)."""

    digits: torch.Tensor
    scores: torch.Tensor
    decode_idx: torch.Tensor


class LvmaeTargets:
    """The frozen tokenizer on the training device, called once per micro-batch.

    Args:
        cfg: the pretraining config (``train.tokenizer``, ``mask.decoder``, ``mask.decoder_ratio``).
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.adaptive = cfg.mask.decoder == "adaptive"
        self.grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
        self.mask = DECODER_MASKS.build("adaptive", ratio=cfg.mask.decoder_ratio) if self.adaptive else None
        self.model: VideoTokenizer | None = None
        self.levels: list[int] = []

    def _load(self, device: torch.device) -> VideoTokenizer:
        if self.model is None:
            self.model, tcfg = load_tokenizer(self.cfg.train.tokenizer, device)
            self.levels = list(tcfg.tokenizer.levels)
            log.info("frozen tokenizer %s (%s %s) on %s", self.cfg.train.tokenizer, tcfg.tokenizer.size,
                     self.levels, device)
        return self.model

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, encoder_mask: torch.Tensor, decoder_mask: torch.Tensor) -> TokenBatch:
        """``video`` ``[B, 3, T, H, W]`` on the device, normalised, or uint8 as the pretraining
        loader gives it (normalised here with ``data.mean`` / ``data.std``); masks ``[B, N]`` bool
        from the loader."""
        video = normalise_pixels(video, self.cfg.data.mean, self.cfg.data.std)
        model = self._load(video.device)
        with torch.autocast(video.device.type, enabled=False):  # FSQ rounds in fp32; scores rank in fp32
            codes, scores = model.tokenize(video.float())
        # Indices from the loader's host masks, or ranked on the device: no host read of device tensors.
        if self.adaptive:
            decode_idx = self.mask.decoded_indices(self.grid, scores, encoder_mask)
        else:
            decode_idx = mask_to_indices(decoder_mask).to(video.device, non_blocking=True)
        return TokenBatch(model.quantizer.digits(codes), scores, decode_idx)


def loader_decoder_mask(cfg: Config, decoder):
    """The decoder strategy the loader's collate step runs: the adaptive mask needs the tokenizer's
    scores, which the training device computes, so the loader passes every masked token on (``none``)."""
    if cfg.mask.decoder == "adaptive":
        return DECODER_MASKS.build("none", ratio=cfg.mask.decoder_ratio)
    return decoder
