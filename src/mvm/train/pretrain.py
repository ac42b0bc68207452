"""Masked video pretraining: build data, masks, model and optimiser from a config, then train.

The loop reads like nanoGPT's: fetch a batch (masks already drawn in the collate step), forward
under optional bf16 autocast, masked MSE, backward with gradient accumulation, clip, step, log,
checkpoint. Everything that decides a run's numbers (data order, augmentation, masks, dropout
RNG) is a function of the seed and the step, so ``--resume`` reproduces an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mvm.config import Config, to_toml
from mvm.grid import TokenGrid
from mvm.masking.base import mask_to_indices
from mvm.targets import masked_mse, motion_target, norm_pix_target, pixel_target
from mvm.train import checkpoint as ckpt_io
from mvm.train import distributed as dist
from mvm.train.guard import BadDataTracker, NonFiniteGuard, StopSignal
from mvm.train.metrics import MetricLogger
from mvm.train.optim import lr_at, param_groups, set_lr

log = logging.getLogger(__name__)

#: progress(step, total, {"loss":..., "lr":..., "clips_per_s":...}) — the CLI draws the bar.
Progress = Callable[[int, int, dict[str, float]], None]
#: loss_hook(step, loss) -> loss, for fault-injection tests.
LossHook = Callable[[int, torch.Tensor], torch.Tensor]

# Config fields that must agree between a checkpoint and the run resuming it.
_MUST_MATCH = ("model.name", "model.tubelet", "model.patch", "data.frames", "data.size", "train.target")


def uses_motion_target(cfg: Config) -> bool:
    """Whether the run trains the codec-motion head (and so needs motion in every batch)."""
    return cfg.train.motion_weight > 0


def prepare_data_paths(cfg: Config) -> None:
    """With no ``data.train``, point the run at the built-in synthetic set, generating it if absent."""
    if cfg.data.train:
        return
    from mvm.data.synth import make_synthetic

    root = Path(cfg.data.synth_dir)
    wanted = dataclasses.asdict(cfg.synth)  # exactly make_synthetic's arguments, as synth.json records them
    complete = (root / "train.csv").is_file() and (root / "val.csv").is_file()
    made_with = _synth_args(root)
    if complete and made_with not in (None, wanted):
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

    return build_mae(cfg.model.name, tubelet=cfg.model.tubelet, patch=cfg.model.patch,
                     drop_path=cfg.model.drop_path, motion_dim=2 if uses_motion_target(cfg) else 0)


def build_loader(cfg: Config, grid: TokenGrid, start_sample: int,
                 info: dist.DistInfo | None = None) -> tuple[Any, DataLoader]:
    from mvm.data.datasets import EpochSampler, VideoDataset
    from mvm.masking import build_masks
    from mvm.masking.collate import MaskCollator

    encoder_mask, decoder_mask = build_masks(cfg.mask)
    # Motion costs decode time; read it only for strategies or targets that look at it.
    with_motion = cfg.data.motion != "none" and (encoder_mask.needs_motion or decoder_mask.needs_motion
                                                 or uses_motion_target(cfg))
    dataset = VideoDataset(cfg.data.train, grid, cfg.data, train=True, seed=cfg.train.seed,
                           with_motion=with_motion)
    collate = MaskCollator(grid, encoder_mask, decoder_mask, seed=cfg.train.seed)
    info = info or dist.DistInfo()
    # One global order; each rank takes every world-th position, so a global batch is the same
    # clips whatever the number of processes.
    sampler = EpochSampler(len(dataset), seed=cfg.train.seed, shuffle=True, start=start_sample,
                           num_replicas=info.world, rank=info.rank)
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler,
                        num_workers=cfg.data.workers, collate_fn=collate,
                        persistent_workers=cfg.data.workers > 0, prefetch_factor=4 if cfg.data.workers else None)
    return dataset, loader


def _check_resume(cfg: Config, meta: dict, ckpt: Path) -> None:
    saved = meta.get("config", {})
    for key in _MUST_MATCH:
        sec, name = key.split(".")
        mine = getattr(getattr(cfg, sec), name)
        theirs = saved.get(sec, {}).get(name, mine)
        if theirs != mine:
            raise ckpt_io.CheckpointError(
                f"{ckpt} was made with {key}={theirs!r}, this run has {key}={mine!r}; "
                "resume with the checkpoint's config or start a new --out folder")


def run_pretrain(cfg: Config, resume: bool = False, progress: Progress | None = None,
                 loss_hook: LossHook | None = None) -> dict[str, Any]:
    """Pretrain per ``cfg``; returns the run summary (also written to ``summary.json``).

    Under torchrun every rank calls this; rank 0 writes checkpoints, metrics, pictures and the summary.
    """
    run_dir = Path(cfg.train.out)
    existing = ckpt_io.latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise ckpt_io.CheckpointError(
            f"{run_dir} already holds checkpoints ({existing.name}); pass --resume to continue it "
            "or choose another --out folder")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info, device = dist.init_distributed(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    if info.is_main:
        prepare_data_paths(cfg)
    dist.barrier(info)
    prepare_data_paths(cfg)  # the other ranks only read the paths rank 0 made sure of
    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    model = build_model(cfg).to(device)
    accum, bs = cfg.optim.accum_steps, cfg.optim.batch_size
    clips_per_step = bs * accum * info.world
    peak_lr = cfg.optim.base_lr * clips_per_step / 256
    bad = BadDataTracker(cfg.data.max_bad_fraction)
    guard = NonFiniteGuard(cfg.train.max_nonfinite)
    start_step, resumed = 0, None
    if resume and existing is not None:
        state, meta = ckpt_io.load_state(existing)
        _check_resume(cfg, meta, existing)
        weights = ckpt_io.read_weights(existing)
        ckpt_io.check_weights(model, weights, existing)
        torch.set_rng_state(state["torch_rng"])
        bad.load_state_dict(state.get("bad_data", {}))
        guard.skipped = int(state.get("skipped_steps", 0))
        start_step, resumed = int(meta["step"]), (weights, state["optimizer"])
        log.info("resuming %s from step %d", existing, start_step)
    model = dist.wrap_model(model, info, cfg.train.parallel, device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=peak_lr,
                                  betas=tuple(cfg.optim.betas))
    if resumed is not None:
        dist.load_full_state(model, optimizer, *resumed)
    metrics = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))
        metrics = MetricLogger(run_dir)
        metrics.truncate_after(start_step)
    dataset, loader = build_loader(cfg, grid, start_sample=start_step * clips_per_step, info=info)
    mean = torch.tensor(cfg.data.mean, device=device)
    std = torch.tensor(cfg.data.std, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.1fM parameters, grid %s, %d tokens; peak lr %.2e; %d process(es) on %s",
             cfg.model.name, n_params / 1e6, grid.shape, grid.num_tokens, peak_lr, info.world, device)

    def checkpoint(step: int) -> tuple[Path | None, dict[str, torch.Tensor]]:
        model_sd, optim_sd = dist.full_state(model, optimizer)  # collective under FSDP
        path = None
        if info.is_main:
            state = {"optimizer": optim_sd, "torch_rng": torch.get_rng_state(),
                     "bad_data": bad.state_dict(), "skipped_steps": guard.skipped}
            path = ckpt_io.save_checkpoint(run_dir, step, model_sd, state, {"config": cfg.to_dict()},
                                           keep=cfg.train.keep_ckpts)
        dist.barrier(info)
        return path, model_sd

    batches = iter(loader)
    step = start_step
    stopped_by: str | None = None
    last_loss = float("nan")
    with_motion = uses_motion_target(cfg)
    parts: dict[str, float] = {}
    t_log, clips_since = time.perf_counter(), 0
    model.train()
    with StopSignal() as stop:
        while step < cfg.train.steps:
            lr = lr_at(step, cfg.train.steps, peak_lr, cfg.optim.warmup_steps, cfg.optim.min_lr)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            part_sums = torch.zeros(2, device=device)  # reconstruction, motion
            for _ in range(accum):
                raw = next(batches)
                bad.update(raw["video"].shape[0], raw.get("failed", []))
                video = raw["video"].to(device, non_blocking=True)
                visible_idx = mask_to_indices(~raw["encoder_mask"]).to(device)
                decode_idx = mask_to_indices(raw["decoder_mask"]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16):
                    out = model(video, visible_idx, decode_idx, with_motion=with_motion)
                pred, motion_pred = out if with_motion else (out, None)
                if cfg.train.target == "norm_pix":
                    target = norm_pix_target(video, cfg.model.tubelet, cfg.model.patch, mean, std)
                else:
                    target = pixel_target(video, cfg.model.tubelet, cfg.model.patch, mean, std)
                loss = masked_mse(pred.float(), target, decode_idx)
                part_sums[0] += loss.detach() / accum
                if motion_pred is not None:
                    # Each visible token predicts its own codec motion: the encoder must see motion.
                    motion = motion_target(raw["motion"].to(device), cfg.train.motion_scale)
                    motion_loss = masked_mse(motion_pred.float(), motion, visible_idx)
                    part_sums[1] += motion_loss.detach() / accum
                    loss = loss + cfg.train.motion_weight * motion_loss
                if loss_hook is not None:
                    loss = loss_hook(step, loss)
                (loss / accum).backward()
                total += loss.detach() / accum
                clips_since += video.shape[0] * info.world
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.optim.clip_grad if cfg.optim.clip_grad > 0 else float("inf"))
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            total, *part_sums = dist.all_mean(torch.stack([total, *part_sums]), info)  # one collective
            finite = bool(torch.isfinite(total)) and bool(torch.isfinite(grad_norm))
            if guard.ok(step, finite):
                optimizer.step()
                last_loss = float(total)
                parts = {"recon_loss": float(part_sums[0])}
                if with_motion:
                    parts["motion_loss"] = float(part_sums[1])
            step += 1
            if metrics is not None and (step % cfg.train.log_every == 0 or step == cfg.train.steps):
                dt = time.perf_counter() - t_log
                row = {"loss": last_loss, **parts, "lr": lr, "grad_norm": float(grad_norm),
                       "clips_per_s": clips_since / max(dt, 1e-9), "skipped_steps": guard.skipped,
                       "bad_samples": sum(bad.by_reason.values())}
                metrics.log(step, **row)
                if progress is not None:
                    progress(step, cfg.train.steps, row)
                t_log, clips_since = time.perf_counter(), 0
            if dist.any_flag(stop.received is not None, info, device):
                stopped_by = {None: "peer", 15: "SIGTERM"}.get(stop.received, "SIGINT")
                checkpoint(step)
                break
            if step % cfg.train.ckpt_every == 0 and step < cfg.train.steps:
                checkpoint(step)
    del batches, loader  # stop workers before the probe starts its own
    final, model_sd = checkpoint(step)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": step, "final_loss": last_loss, **parts,
                               "stopped_by": stopped_by, "checkpoint": str(final), "processes": info.world,
                               "skipped_steps": guard.skipped, **bad.summary(),
                               "malformed_lines": len(dataset.malformed_lines)}
    if info.is_main:
        metrics.close()
        if stopped_by is None:
            # A plain (unwrapped, unsharded) copy for pictures and probes, whatever the parallelism.
            plain = build_model(cfg).to(device)
            plain.load_state_dict(model_sd)
            summary.update(_finish(cfg, plain, grid, run_dir, device))
        _write_summary(run_dir, summary)
    dist.barrier(info)
    dist.shutdown(info)
    return summary


def _finish(cfg: Config, model: torch.nn.Module, grid: TokenGrid, run_dir: Path,
            device: torch.device) -> dict[str, Any]:
    """Pictures and the kNN probe, pretrained vs random init, once training completed."""
    from mvm.viz.curves import plot_loss_curve
    from mvm.viz.recon import plot_reconstructions

    out: dict[str, Any] = {}
    model.eval()
    out["loss_curve"] = str(plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png"))
    out["reconstructions"] = str(plot_reconstructions(cfg, model, grid, run_dir / "reconstructions.png", device))
    if uses_motion_target(cfg):
        from mvm.viz.motion_head import plot_motion_predictions

        out["motion_predictions"] = str(plot_motion_predictions(cfg, model, grid, run_dir / "motion_head.png", device))
    if cfg.train.probe and cfg.data.val:
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


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    import json

    tmp = run_dir / f".summary.{os.getpid()}.json"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, run_dir / "summary.json")
