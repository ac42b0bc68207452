"""Tokenizer training on the shared loop: ``mvm tokenizer train``.

Loss (pixels in [0, 1]): ``L(recon from the top-k) + all_weight * L(recon from all tokens)`` plus
the LFQ entropy term when LFQ is chosen, where ``L`` is the pixel MSE plus ``motion_weight`` x the
MSE of the frame-to-frame differences (0 by default). The top-k term is what teaches the scorer (its only
gradient comes through the differentiable top-k); the all-token term keeps the codes a faithful
description of every token, since the MAE later predicts them all. No perceptual or GAN term
(ours: they need a pretrained network or a second optimiser, and the codes, not pretty pixels,
are what the MAE consumes; docs/lvmae.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mvm.config import Config, ConfigError
from mvm.data.transforms import normalise_pixels
from mvm.grid import TokenGrid
from mvm.tokenizer.evaluate import EvalClip, evaluate_tokenizer, mean_std, read_clip, to_pixels
from mvm.tokenizer.model import VideoTokenizer, build_tokenizer
from mvm.train import distributed as dist
from mvm.train.loop import Task

log = logging.getLogger(__name__)


def build_from_config(cfg: Config) -> VideoTokenizer:
    """The tokenizer a config describes (``[tokenizer]`` plus ``model.tubelet``/``model.patch``)."""
    t = cfg.tokenizer
    return build_tokenizer(t.size, cfg.model.tubelet, cfg.model.patch, t.quantizer, t.levels, t.temperature,
                           t.attention_blocks, t.scorer_attention, t.noise)


def prepare_synthetic_with_masks(cfg: Config) -> None:
    """With no ``data.train``, the built-in synthetic set with object masks (made if absent)."""
    if cfg.data.train:
        return
    from mvm.data.synth import make_synthetic, recorded_args

    root = Path(cfg.data.synth_dir)
    wanted = {**dataclasses.asdict(cfg.synth), "object_masks": True}
    try:
        made_with = json.loads((root / "synth.json").read_text())["args"]
    except (OSError, ValueError, KeyError):
        made_with = None
    if made_with != recorded_args(wanted) or not (root / "train.csv").is_file() or not (root / "val.csv").is_file():
        log.info("generating the synthetic set with object masks in %s", root)
        for name in ("train.csv", "val.csv"):  # the lists mark a complete set
            (root / name).unlink(missing_ok=True)
        make_synthetic(root, **wanted, workers=max(1, cfg.data.workers))
    cfg.data.train = str(root / "train.csv")
    cfg.data.val = cfg.data.val or str(root / "val.csv")


class TokenizerTask(Task):
    """Train the LVMAE tokenizer (autoencoder, quantiser, scorer) on reconstruction."""

    kind = "tokenizer"
    best_metric = None
    must_match = Task.must_match + ("tokenizer.size", "tokenizer.quantizer", "tokenizer.levels",
                                    "tokenizer.attention_blocks", "tokenizer.scorer_attention")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
        self.k = max(1, int(round(cfg.tokenizer.budget * self.grid.num_tokens)))
        self._clips: list[EvalClip] | None = None

    def describe(self) -> str:
        t = self.cfg.tokenizer
        return (f"tokenizer {t.size} ({t.quantizer} {t.levels}) on grid {self.grid.shape}, "
                f"top-k keeps {self.k} of {self.grid.num_tokens} tokens")

    def check(self) -> None:
        from mvm.data.formats import check_source

        for source in (self.cfg.data.train, self.cfg.data.val):
            if source:
                check_source(source, self.cfg.data.format, self.cfg.data.root)
        try:  # a power-of-two tubelet and patch that fit the size's stem: fail before writing
            build_from_config(self.cfg)
        except ValueError as e:
            raise ConfigError(f"model.tubelet / model.patch / tokenizer.size: {e}") from None

    def prepare(self) -> None:
        prepare_synthetic_with_masks(self.cfg)

    def build_model(self) -> torch.nn.Module:
        return build_from_config(self.cfg)

    def build_loader(self, start_sample: int, info: dist.DistInfo) -> tuple[Any, Any]:
        from mvm.data.datasets import EpochSampler, VideoDataset, collate_items
        from mvm.data.loader import worker_init

        cfg = self.cfg
        # uint8 clips, normalised by the step on its device, as pretraining's loader sends them
        dataset = VideoDataset(cfg.data.train, self.grid, cfg.data, train=True, seed=cfg.train.seed,
                               with_motion=False, pixels="uint8")
        sampler = EpochSampler(len(dataset), seed=cfg.train.seed, shuffle=True, start=start_sample,
                               num_replicas=info.world, rank=info.rank)
        loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler,
                            num_workers=cfg.data.workers, collate_fn=collate_items,
                            persistent_workers=cfg.data.workers > 0,
                            prefetch_factor=4 if cfg.data.workers else None,
                            pin_memory=torch.cuda.is_available(),  # the non_blocking copy then does not wait
                            worker_init_fn=worker_init if cfg.data.workers else None)
        return dataset, loader

    def _recon_loss(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pixel MSE of a normalised ``[B, 3, T, H, W]`` reconstruction against the ``target`` pixels
        (unclamped, so the gradient does not vanish outside [0, 1]), plus ``motion_weight`` x the
        MSE of its frame-to-frame differences against the clip's."""
        cfg = self.cfg
        mean, std = mean_std(cfg, target.device)
        pix = recon.float() * std + mean
        loss = (pix - target).pow(2).mean()
        w = cfg.tokenizer.motion_weight
        if w > 0 and target.shape[2] > 1:
            loss = loss + w * (pix.diff(dim=2) - target.diff(dim=2)).pow(2).mean()
        return loss

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device,
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        video = normalise_pixels(batch["video"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
        target = to_pixels(video, cfg)
        if step < cfg.tokenizer.topk_after:  # the autoencoder alone first: no top-k decode
            out = model(video, self.k, topk=False)
            full = self._recon_loss(out.recon_all, target)
            # the scores join with weight 0: every parameter in the graph, as DDP needs
            return cfg.tokenizer.all_weight * full + out.aux + 0.0 * out.scores.sum(), {"all_mse": full.detach()}
        out = model(video, self.k, all_tokens=cfg.tokenizer.all_weight > 0)
        topk = self._recon_loss(out.recon_topk, target)
        loss = topk + out.aux
        parts = {"topk_mse": topk.detach()}
        if out.recon_all is not None:
            full = self._recon_loss(out.recon_all, target)
            loss = loss + cfg.tokenizer.all_weight * full
            parts["all_mse"] = full.detach()
        return loss, parts

    def _eval_clips(self) -> list[EvalClip]:
        if self._clips is None:
            from mvm.data.formats import open_source
            from mvm.data.video_io import VideoDecodeError

            src = open_source(self.cfg.data.val, self.cfg.data.format, self.cfg.data.root)
            self._clips, bad = [], []
            # a broken validation video is skipped (one line each), as training skips its own:
            # it must not stop the run after training, with no summary written
            for e in src.entries:
                if len(self._clips) >= self.cfg.tokenizer.eval_clips:
                    break
                try:
                    self._clips.append(read_clip(e.path, self.cfg))
                except VideoDecodeError as err:
                    log.warning("validation: skipping %s", err)
                    bad.append(e.path)
            if not self._clips:
                log.warning("validation skipped: none of the %d video(s) of %s can be read", len(bad),
                            self.cfg.data.val)
        return self._clips

    def evaluate(self, model: torch.nn.Module, device: torch.device, step: int) -> dict[str, float]:
        if not self.cfg.data.val or not self._eval_clips():
            return {}
        return evaluate_tokenizer(model, self._eval_clips(), self.cfg, device)

    def finish(self, model: torch.nn.Module, run_dir: Path, device: torch.device) -> dict[str, Any]:
        from mvm.viz.curves import plot_loss_curve

        out: dict[str, Any] = {"loss_curve": str(plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png"))}
        if self.cfg.data.val:
            from mvm.viz.tokenizer import plot_tokenizer_clip

            paths = []
            for i, clip in enumerate(self._eval_clips()[:4]):
                paths.append(str(plot_tokenizer_clip(model, clip, self.cfg, run_dir / "clips" / f"{i:02d}.png", device)))
            out["clip_pictures"] = paths
        return out


def run_tokenizer(cfg: Config, resume: bool = False, progress: Any = None, loss_hook: Any = None) -> dict[str, Any]:
    """Train a tokenizer per ``cfg`` on the shared loop; returns the summary (also ``summary.json``)."""
    from mvm.train.loop import run_task

    return run_task(TokenizerTask(cfg), resume=resume, progress=progress, loss_hook=loss_hook)
