"""Masked video pretraining: the data, masks, model and loss of the pretraining job.

The training itself (resume, schedule, accumulation, autocast, guards, checkpoints, logging) is the
shared loop's, :mod:`mvm.train.loop`; this file is only what makes pretraining pretraining.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mvm.config import Config
from mvm.data.transforms import normalise_pixels
from mvm.grid import TokenGrid
from mvm.masking.base import mask_to_indices
from mvm.targets import masked_mse, motion_target, mse, norm_pix_target, pixel_target
from mvm.train import distributed as dist
from mvm.train.loop import LossHook, Progress, Task, run_task

log = logging.getLogger(__name__)


def uses_motion_target(cfg: Config) -> bool:
    """Whether the run trains the codec-motion head (and so needs motion in every batch)."""
    return cfg.train.motion_weight > 0


def prepare_data_paths(cfg: Config) -> None:
    """With no ``data.train``, point the run at the built-in synthetic set, generating it if absent."""
    if cfg.data.train:
        return
    from mvm.data.synth import make_synthetic, recorded_args

    root = Path(cfg.data.synth_dir)
    wanted = dataclasses.asdict(cfg.synth)  # exactly make_synthetic's arguments
    complete = (root / "train.csv").is_file() and (root / "val.csv").is_file()
    made_with = _synth_args(root)
    if complete and made_with not in (None, recorded_args(wanted)):
        log.warning("the synthetic set in %s was made with %s; the config asks for %s: generating it again",
                    root, made_with, wanted)
        for name in ("train.csv", "val.csv"):  # the lists mark a complete set: gone until it is one
            (root / name).unlink()
        complete = False
    if not complete:
        log.info("generating the synthetic motion set in %s", root)
        make_synthetic(root, **wanted, workers=max(1, cfg.data.workers))
    cfg.data.train = str(root / "train.csv")
    cfg.data.val = cfg.data.val or str(root / "val.csv")


def _synth_args(root: Path) -> dict[str, Any] | None:
    """The arguments a synthetic set was made with (its ``synth.json``), or None if unreadable."""
    import json

    try:
        return json.loads((root / "synth.json").read_text())["args"]
    except (OSError, ValueError, KeyError):
        return None


def build_model(cfg: Config) -> torch.nn.Module:
    from mvm.models import build_mae
    from mvm.models.layers import set_recompute_chunks
    from mvm.tokenizer.lvmae import token_out_dim

    model = build_mae(cfg.model.name, tubelet=cfg.model.tubelet, patch=cfg.model.patch,
                      drop_path=cfg.model.drop_path, motion_dim=2 if uses_motion_target(cfg) else 0,
                      out_dim=token_out_dim(cfg),  # LVMAE token targets: sum(levels) logits per token
                      checkpointing=cfg.model.checkpointing)
    set_recompute_chunks(model, cfg.model.recompute_chunks)
    return model


def build_loader(cfg: Config, grid: TokenGrid, start_sample: int,
                 info: dist.DistInfo | None = None) -> tuple[Any, DataLoader]:
    from mvm.data.datasets import VideoDataset
    from mvm.data.loader import video_loader
    from mvm.masking import build_masks
    from mvm.masking.collate import MaskCollator
    from mvm.tokenizer.lvmae import loader_decoder_mask

    encoder_mask, decoder_mask = build_masks(cfg.mask)
    decoder_mask = loader_decoder_mask(cfg, decoder_mask)  # adaptive: drawn on the device from scores
    # Motion costs decode time; read it only for strategies or targets that look at it.
    with_motion = cfg.data.motion != "none" and (encoder_mask.needs_motion or decoder_mask.needs_motion
                                                 or uses_motion_target(cfg))
    # uint8 pixels, normalised by the step on its device: a quarter of the bytes through the
    # workers' shared memory, pinning and the copy to the GPU (docs/benchmarks.md, "uint8 clips")
    dataset = VideoDataset(cfg.data.train, grid, cfg.data, train=True, seed=cfg.train.seed,
                           with_motion=with_motion, pixels="uint8")
    collate = MaskCollator(grid, encoder_mask, decoder_mask, seed=cfg.train.seed)
    info = info or dist.DistInfo()
    # One global order; each rank takes every world-th video, so a global batch is the same clips
    # whatever the number of processes.
    loader = video_loader(dataset, cfg.optim.batch_size, collate, cfg.data.workers, cfg.train.seed,
                          start_sample=start_sample, num_replicas=info.world, rank=info.rank)
    return dataset, loader


class PretrainTask(Task):
    """Masked video pretraining on the shared loop: masks come drawn from the collate step, the
    model reconstructs the decoded tokens (norm-pix or pixel), plus the codec-motion term."""

    kind = "pretrain"
    must_match = Task.must_match + ("train.target",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
        self.with_motion = uses_motion_target(cfg)
        self._mean_std: tuple[torch.Tensor, torch.Tensor] | None = None
        from mvm.tokenizer.lvmae import LvmaeTargets

        self.lvmae = LvmaeTargets(cfg) if cfg.train.tokenizer else None  # frozen tokenizer, loaded lazily

    def describe(self) -> str:
        return f"pretrain on grid {self.grid.shape} ({self.grid.num_tokens} tokens), {self.cfg.mask.encoder} masking"

    def check(self) -> None:
        from mvm.data.formats import check_source

        for source in (self.cfg.data.train, self.cfg.data.val):
            if source:
                check_source(source, self.cfg.data.format, self.cfg.data.root)
        from mvm.tokenizer.lvmae import check_tokenizer

        check_tokenizer(self.cfg)  # its grid must be the MAE's

    def prepare(self) -> None:
        prepare_data_paths(self.cfg)

    def build_model(self) -> torch.nn.Module:
        return build_model(self.cfg)

    def build_loader(self, start_sample: int, info: dist.DistInfo) -> tuple[Any, Any]:
        return build_loader(self.cfg, self.grid, start_sample, info)

    def loss(self, model: torch.nn.Module, batch: dict, device: torch.device,
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        if self._mean_std is None:
            self._mean_std = tuple(torch.tensor(v).to(device, non_blocking=True)  # once; no wait either
                                   for v in (cfg.data.mean, cfg.data.std))
        mean, std = self._mean_std
        # uint8 from the loader (normalised here, on the device; the same values as a float loader's)
        video = normalise_pixels(batch["video"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
        visible_idx = mask_to_indices(~batch["encoder_mask"]).to(device, non_blocking=True)
        decode_idx = mask_to_indices(batch["decoder_mask"]).to(device, non_blocking=True)
        tokens = None
        if self.lvmae is not None:  # LVMAE: one tokenizer pass per batch gives codes and scores
            tokens = self.lvmae(video, batch["encoder_mask"], batch["decoder_mask"])
            decode_idx = tokens.decode_idx
        out = model(video, visible_idx, decode_idx, with_motion=self.with_motion)
        pred, motion_pred = out if self.with_motion else (out, None)
        if cfg.train.target == "tokens":
            from mvm.targets import token_loss

            loss = token_loss(pred, tokens.digits, decode_idx, self.lvmae.levels)
        else:
            target_fn = norm_pix_target if cfg.train.target == "norm_pix" else pixel_target
            # Targets of the decoded tokens only, from their pixels alone (not the whole clip).
            target = target_fn(video, cfg.model.tubelet, cfg.model.patch, mean, std, idx=decode_idx)
            loss = mse(pred, target)  # fused: no pred-sized temporaries at the peak
        parts = {"recon_loss": loss.detach()}
        if motion_pred is not None:
            # Each visible token predicts its own codec motion: the encoder must see motion.
            motion = motion_target(batch["motion"].to(device, non_blocking=True), cfg.train.motion_scale)
            motion_loss = masked_mse(motion_pred.float(), motion, visible_idx)
            parts["motion_loss"] = motion_loss.detach()
            loss = loss + cfg.train.motion_weight * motion_loss
        return loss, parts

    def finish(self, model: torch.nn.Module, run_dir: Path, device: torch.device) -> dict[str, Any]:
        return _finish(self.cfg, model, self.grid, run_dir, device)


def run_pretrain(cfg: Config, resume: bool = False, progress: Progress | None = None,
                 loss_hook: LossHook | None = None) -> dict[str, Any]:
    """Pretrain per ``cfg`` on the shared loop; returns the run summary (also in ``summary.json``).

    Under torchrun every rank calls this; rank 0 writes checkpoints, metrics, pictures and the summary.
    A script that calls it with ``data.workers > 0`` must do so under ``if __name__ == "__main__":``
    where processes start by spawning (macOS, Windows).
    """
    return run_task(PretrainTask(cfg), resume=resume, progress=progress, loss_hook=loss_hook)


def _finish(cfg: Config, model: torch.nn.Module, grid: TokenGrid, run_dir: Path,
            device: torch.device) -> dict[str, Any]:
    """Pictures and the kNN probe, pretrained vs random init, once training completed."""
    from mvm.viz.curves import plot_loss_curve
    from mvm.viz.recon import plot_reconstructions

    out: dict[str, Any] = {}
    model.eval()
    out["loss_curve"] = str(plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png"))
    if cfg.train.target != "tokens":  # token targets predict codes, not pixels
        out["reconstructions"] = str(plot_reconstructions(cfg, model, grid, run_dir / "reconstructions.png", device))
    if uses_motion_target(cfg):
        from mvm.viz.motion_head import plot_motion_predictions

        out["motion_predictions"] = str(plot_motion_predictions(cfg, model, grid, run_dir / "motion_head.png", device))
    skip = _probe_problem(cfg) if cfg.train.probe and cfg.data.val else None
    if skip:
        log.warning("probe skipped: %s", skip)
        out["probe_skipped"] = skip
    elif cfg.train.probe and cfg.data.val:
        from mvm.evaluate.probe import probe_encoder

        torch.manual_seed(cfg.train.seed + 1)
        random_model = build_model(cfg).to(device)
        trained = probe_encoder(cfg, model.encoder, device, linear=True)
        untrained = probe_encoder(cfg, random_model.encoder, device, linear=True)
        from mvm.viz.confusion import class_names, plot_confusions

        matrices = {"pretrained": trained.pop("confusion"), "random init": untrained.pop("confusion")}
        out["probe_confusion"] = str(plot_confusions(
            matrices, class_names(cfg.data.val, len(matrices["pretrained"])), run_dir / "probe_confusion.png",
            title="linear probe on the validation split (frozen encoder, mean-pooled tokens)"))
        out.update(trained)
        out.update({f"{k}_random": v for k, v in untrained.items()})
    return out


def _probe_problem(cfg: Config) -> str | None:
    """Why the probes cannot run on the config's data (None if they can): they need labels on
    both splits and at least two classes."""
    from mvm.data.formats import DataSourceError, open_source

    labels = {}
    for split, source in (("training", cfg.data.train), ("validation", cfg.data.val)):
        try:
            entries = open_source(source, cfg.data.format, cfg.data.root).entries
        except DataSourceError as e:
            return f"{split} data: {e}"
        unlabelled = sum(e.label < 0 for e in entries)
        if unlabelled:
            return (f"{unlabelled} of the {len(entries)} {split} videos in {source} have no label "
                    "(a folder needs one sub-folder per class; a list needs 'path label' lines)")
        labels[split] = {e.label for e in entries}
    if len(labels["training"]) < 2:
        return f"the training data {cfg.data.train} has a single class; a probe needs two or more"
    return None
