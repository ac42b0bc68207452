"""Fine-tuning a video classifier: VideoMAE's recipe as a task of the shared loop.

The encoder comes from any checkpoint mvm loads (:func:`resolve_init`) or is built from scratch;
on top go mean pooling, ``fc_norm`` and a linear head (:class:`mvm.models.VideoClassifier`). The
recipe: layer-wise lr decay, drop path, RandAugment applied alike to every frame, mixup / cutmix
with label-smoothed soft targets, optional EMA of the weights; the loop does warmup + cosine,
accumulation, checkpoints and resume. Validation (``train.eval_every``) reports ``val_top1``, and
the loop keeps ``best/`` by it.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mvm.config import Config
from mvm.data.augment import Mixup, VideoRandAugment, soft_cross_entropy
from mvm.grid import TokenGrid
from mvm.models.classifier import VideoClassifier
from mvm.models.encoder import VideoEncoder
from mvm.models.layers import DropPath
from mvm.train import checkpoint as ckpt_io
from mvm.train import distributed as dist
from mvm.train.ema import ModelEma
from mvm.train.loop import LossHook, Progress, Task, run_task
from mvm.train.optim import param_groups

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Where an encoder comes from


def resolve_init(path: str | Path) -> Path:
    """The file or folder :func:`mvm.interop.load_model` reads for ``path``: a run folder gives its
    ``best/`` (fine-tuning runs) or else its newest checkpoint; anything else is returned as is.

    Raises:
        CheckpointError: the path does not exist, or is a run folder without a checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise ckpt_io.CheckpointError(f"{p}: no such checkpoint file or folder")
    if p.is_dir() and not (p / "model.safetensors").is_file() and not (p / "config.json").is_file():
        if (p / "best" / "model.safetensors").is_file():
            return p / "best"
        newest = ckpt_io.latest_checkpoint(p)
        if newest is None:
            raise ckpt_io.CheckpointError(f"{p}: a folder with no checkpoint (no ckpt-*/, best/, model.safetensors "
                                          "or config.json)")
        return newest
    return p


def checkpoint_geometry(path: str | Path) -> dict[str, Any]:
    """What a checkpoint says about its model and clips, as config values (``model.name``,
    ``model.tubelet``, ``model.patch``, ``data.frames``, ``data.size``; mvm checkpoints also
    ``data.stride``, ``data.mean``, ``data.std``); keys it does not record are left out."""
    p = resolve_init(path)
    out: dict[str, Any] = {}
    if p.is_dir() and (p / "meta.json").is_file():  # an mvm checkpoint: its whole config
        cfg = json.loads((p / "meta.json").read_text()).get("config", {})
        for sec, key in (("model", "name"), ("model", "tubelet"), ("model", "patch"), ("data", "frames"),
                         ("data", "size"), ("data", "stride"), ("data", "mean"), ("data", "std")):
            if key in cfg.get(sec, {}):
                out[f"{sec}.{key}"] = cfg[sec][key]
    elif p.is_dir() and (p / "config.json").is_file():  # transformers
        hf = json.loads((p / "config.json").read_text())
        for src, dst in (("tubelet_size", "model.tubelet"), ("patch_size", "model.patch"),
                         ("num_frames", "data.frames"), ("image_size", "data.size")):
            if isinstance(hf.get(src), int):
                out[dst] = hf[src]
    elif p.suffix == ".pth":  # original VideoMAE keeps its argparse namespace under "args"
        from mvm.interop.load import read_pth

        args = read_pth(p).get("args") if p.is_file() else None
        for src, dst in (("tubelet_size", "model.tubelet"), ("num_frames", "data.frames"),
                         ("input_size", "data.size")):
            if isinstance(getattr(args, src, None), int):
                out[dst] = getattr(args, src)
    return out


SPEC_FILE = "model_spec.json"


def load_any(path: str | Path, frames: int | None = None, size: int | None = None) -> nn.Module:
    """:func:`mvm.interop.load_model` of :func:`resolve_init`'s choice. In a fine-tuning run folder the
    head count comes from the run's ``model_spec.json`` (shapes do not tell it, and an encoder
    imported from elsewhere may match no named size)."""
    from mvm.interop import load_model

    p = resolve_init(path)
    heads = None
    for folder in (p.parent, p.parent.parent):
        if (folder / SPEC_FILE).is_file():
            heads = int(json.loads((folder / SPEC_FILE).read_text())["heads"])
            break
    return load_model(p, heads=heads, frames=frames, size=size)


def load_encoder(path: str | Path, frames: int | None = None, size: int | None = None) -> VideoEncoder:
    """The encoder of any checkpoint mvm loads (autoencoder, classifier or bare encoder), CPU."""
    model = load_any(path, frames, size)
    enc = model if isinstance(model, VideoEncoder) else getattr(model, "encoder", None)
    if not isinstance(enc, VideoEncoder):
        raise ckpt_io.CheckpointError(f"{path}: holds no mvm video encoder ({type(model).__name__})")
    return enc


def set_drop_path(encoder: VideoEncoder, rate: float) -> None:
    """Stochastic depth rising linearly from 0 in the first block to ``rate`` in the last (VideoMAE)."""
    depth = len(encoder.blocks)
    for i, blk in enumerate(encoder.blocks):
        r = rate * i / (depth - 1) if depth > 1 else 0.0
        blk.drop_path = DropPath(r) if r > 0 else nn.Identity()
    encoder.drop_path = rate


def fit_positions(encoder: VideoEncoder, grid: TokenGrid) -> None:
    """Resample a learned position table to ``grid`` once, so it is trained at the new size
    (a fixed sinusoid table is made for any grid and needs nothing)."""
    from mvm.models.pos_embed import interpolate_pos_embed

    if encoder.pos_embed is not None and tuple(encoder.pos_grid) != tuple(grid.shape):
        log.info("position table resampled from grid %s to %s", encoder.pos_grid, grid.shape)
        table = interpolate_pos_embed(encoder.pos_embed.detach(), encoder.pos_grid, grid.shape)
        encoder.use_learned_pos_embed(table, grid.shape)


def count_classes(source: str, fmt: str = "", root: str = "") -> int:
    """Classes of a labelled source: ``max(label) + 1`` (at least its class-name count)."""
    from mvm.data.formats import open_source

    src = open_source(source, fmt, root)
    labels = [e.label for e in src.entries if e.label >= 0]
    if len(labels) < len(src.entries):
        from mvm.data.formats import DataSourceError

        raise DataSourceError(f"{source}: {len(src.entries) - len(labels)} of {len(src.entries)} entries have no "
                              "label; fine-tuning needs a label on every line")
    return max(max(labels, default=-1) + 1, len(src.classes))


# ---------------------------------------------------------------------------------------------
# Data


class RandAugmented(Dataset):
    """A training dataset whose clips get :class:`VideoRandAugment`, seeded by ``(seed, index)``
    so a resumed run augments exactly as the uninterrupted one."""

    def __init__(self, base: Dataset, policy: VideoRandAugment, mean: list[float], std: list[float],
                 seed: int) -> None:
        self.base, self.policy, self.mean, self.std, self.seed = base, policy, mean, std, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:  # malformed_lines, entries... of the wrapped dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        rng = np.random.default_rng([self.seed, int(i), 0x5A])
        video = item["video"]
        if video.ndim == 5:  # repeated sampling: [R, 3, T, S, S], each clip its own draw
            item["video"] = torch.stack([self.policy.normalised(v, self.mean, self.std, rng) for v in video])
        else:
            item["video"] = self.policy.normalised(video, self.mean, self.std, rng)
        return item


# ---------------------------------------------------------------------------------------------
# The task


class FinetuneTask(Task):
    """Supervised fine-tuning of a :class:`VideoClassifier` on the shared loop."""

    kind = "finetune"
    best_metric = "val_top1"
    must_match = Task.must_match + ("finetune.init",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
        self.ema: ModelEma | None = None
        self._ema_state: dict | None = None
        self.mixup: Mixup | None = None
        self.last_predictions: dict[str, Any] | None = None

    def describe(self) -> str:
        init = self.cfg.finetune.init or "scratch"
        return f"finetune from {init} on grid {self.grid.shape}, {self.cfg.data.num_classes} classes"

    def check(self) -> None:
        from mvm.data.formats import check_source

        for source in (self.cfg.data.train, self.cfg.data.val):
            if source:
                check_source(source, self.cfg.data.format, self.cfg.data.root)
        if self.cfg.finetune.init:
            resolve_init(self.cfg.finetune.init)

    def prepare(self) -> None:
        from mvm.train.pretrain import prepare_data_paths

        prepare_data_paths(self.cfg)
        if not self.cfg.data.num_classes:
            self.cfg.data.num_classes = count_classes(self.cfg.data.train, self.cfg.data.format, self.cfg.data.root)
        if self.cfg.data.num_classes < 2:
            from mvm.data.formats import DataSourceError

            raise DataSourceError(f"{self.cfg.data.train}: fine-tuning needs labels of at least 2 classes "
                                  f"(found {self.cfg.data.num_classes})")

    def build_model(self) -> nn.Module:
        cfg, ft = self.cfg, self.cfg.finetune
        if ft.init:
            geo = checkpoint_geometry(ft.init)
            encoder = load_encoder(ft.init, geo.get("data.frames", cfg.data.frames), geo.get("data.size", cfg.data.size))
            if (encoder.tubelet, encoder.patch) != (cfg.model.tubelet, cfg.model.patch):
                raise ckpt_io.CheckpointError(
                    f"{ft.init}: its encoder has tubelet {encoder.tubelet} and patch {encoder.patch}; the config asks "
                    f"for model.tubelet={cfg.model.tubelet}, model.patch={cfg.model.patch}")
            set_drop_path(encoder, cfg.model.drop_path)
            fit_positions(encoder, self.grid)
        else:
            from mvm.models.variants import build_encoder

            encoder = build_encoder(cfg.model.name, tubelet=cfg.model.tubelet, patch=cfg.model.patch,
                                    drop_path=cfg.model.drop_path, final_norm=False)
        model = VideoClassifier(encoder, cfg.data.num_classes, head_dropout=ft.head_dropout)
        with torch.no_grad():
            model.head.weight.mul_(ft.head_init_scale)
        self.mixup = Mixup(cfg.data.num_classes, ft.mixup, ft.cutmix, ft.mixup_prob, ft.mixup_switch_prob,
                           ft.label_smoothing)
        # Once: under FSDP the loop builds the model again on rank 0 for validation (plain_model),
        # which must not replace the average (sharded, and shared with the other ranks' gathers).
        if ft.ema and self.ema is None:
            self.ema = ModelEma(model, ft.ema_decay)
            if self._ema_state is not None:
                self.ema.load_state_dict(self._ema_state)
        return model

    def param_groups(self, model: nn.Module) -> list[dict]:
        depth = len(model.encoder.blocks)
        decay = self.cfg.finetune.layer_decay
        return param_groups(model, self.cfg.optim.weight_decay, layer_decay=decay if decay < 1 else None,
                            num_layers=depth)

    def build_loader(self, start_sample: int, info: dist.DistInfo) -> tuple[Dataset, Any]:
        from mvm.data.datasets import EpochSampler, VideoDataset, collate_items
        from mvm.data.loader import worker_init

        cfg = self.cfg
        data = copy.deepcopy(cfg.data)
        data.motion = "none"
        dataset: Dataset = VideoDataset(cfg.data.train, self.grid, data, train=True, seed=cfg.train.seed,
                                        with_motion=False)
        ft = cfg.finetune
        if ft.randaug_ops > 0:
            policy = VideoRandAugment(ft.randaug_ops, ft.randaug_magnitude, ft.randaug_std)
            dataset = RandAugmented(dataset, policy, cfg.data.mean, cfg.data.std, cfg.train.seed)
        sampler = EpochSampler(len(dataset), seed=cfg.train.seed, shuffle=True, start=start_sample,
                               num_replicas=info.world, rank=info.rank)
        # Its own generator: starting the loader must not draw from the global RNG, which drop path
        # uses, or a resumed run would drop other paths than the uninterrupted one.
        loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler, num_workers=cfg.data.workers,
                            collate_fn=collate_items, persistent_workers=cfg.data.workers > 0,
                            prefetch_factor=4 if cfg.data.workers else None,
                            pin_memory=torch.cuda.is_available(),  # the non_blocking copy then does not wait
                            worker_init_fn=worker_init if cfg.data.workers else None,
                            generator=torch.Generator().manual_seed(cfg.train.seed))
        return dataset, loader

    def loss(self, model: nn.Module, batch: dict, device: torch.device,
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        video = batch["video"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        if video.ndim == 6:  # repeated sampling: [B, R, 3, T, S, S] -> R clips per video
            labels = labels.repeat_interleave(video.shape[1])
            video = video.flatten(0, 1)
        # The mixing draw is a function of the seed, the step and the batch's first sample: exact on resume.
        first = int(batch["index"][0]) if "index" in batch else 0
        rng = np.random.default_rng([self.cfg.train.seed, step, first])
        video, targets = self.mixup(video, labels, rng)
        logits = model(video)
        return soft_cross_entropy(logits, targets), {}

    def after_step(self, model: nn.Module, step: int, taken: torch.Tensor) -> None:
        if self.ema is not None:
            self.ema.update(model, taken)  # follows the model's device; under FSDP2 its shards, no collective

    def gather_state(self, keep: bool) -> None:
        if self.ema is not None:
            self.ema.gather(keep)  # FSDP2: the sharded EMA made whole for evaluate / state_dict / extra_weights

    def evaluate(self, model: nn.Module, device: torch.device, step: int) -> dict[str, float]:
        if not self.cfg.data.val:
            return {}
        from mvm.evaluate.multiview import classification_metrics, parse_views

        clips, crops = parse_views(self.cfg.finetune.val_views)
        pred = predict_source(model, self.cfg, self.cfg.data.val, clips, crops, device)
        m = classification_metrics(pred["probs"], pred["labels"])
        self.last_predictions = pred
        out = {"val_top1": m["top1"], "val_top5": m["top5"], "val_mean_class_acc": m["mean_class_acc"]}
        if self.ema is not None:
            ema_pred = predict_source(self.ema.module_on(device), self.cfg, self.cfg.data.val, clips, crops, device)
            out["val_top1_ema"] = classification_metrics(ema_pred["probs"], ema_pred["labels"])["top1"]
        return out

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "ema" in state:
            self._ema_state = state["ema"]
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"ema": self.ema.weights()} if self.ema is not None else {}

    def finish(self, model: nn.Module, run_dir: Path, device: torch.device) -> dict[str, Any]:
        """The validation confusion matrix and the loss / accuracy curves as pictures."""
        from mvm.interop.load import spec_from_model
        from mvm.viz.curves import plot_loss_curve

        out: dict[str, Any] = {}
        (run_dir / SPEC_FILE).write_text(json.dumps(spec_from_model(model).to_dict(), indent=1))

        out["loss_curve"] = str(plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png"))
        if self.last_predictions is not None:
            from mvm.evaluate.multiview import confusion_matrix
            from mvm.viz.confusion import class_names, plot_confusions

            k = self.cfg.data.num_classes
            pred = self.last_predictions
            cm = confusion_matrix(pred["probs"].argmax(1), pred["labels"], k)
            out["val_confusion"] = str(plot_confusions({"fine-tuned": cm.tolist()}, class_names(self.cfg.data.val, k),
                                                       run_dir / "val_confusion.png",
                                                       title=f"validation, {self.cfg.finetune.val_views} views"))
        return out


def predict_source(model: nn.Module, cfg: Config, source: str, clips: int, crops: int, device: torch.device,
                   progress: Any = None, batch_size: int = 4) -> dict[str, Any]:
    """View-averaged class probabilities of ``model`` for every video of ``source`` (see
    :func:`mvm.evaluate.multiview.predict_views`)."""
    from mvm.data.formats import open_source
    from mvm.evaluate.multiview import MultiViewDataset, collate_views, predict_views

    d = cfg.data
    entries = open_source(source, d.format, d.root).entries
    ds = MultiViewDataset(entries, d.frames, d.stride, d.size, clips, crops, d.mean, d.std)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=d.workers, collate_fn=collate_views,
                        generator=torch.Generator())  # validation leaves the training RNG alone
    return predict_views(model, loader, device, progress=progress, bf16=cfg.train.bf16)


def run_finetune(cfg: Config, resume: bool = False, progress: Progress | None = None,
                 loss_hook: LossHook | None = None) -> dict[str, Any]:
    """Fine-tune per ``cfg`` on the shared loop; returns the summary (also in ``summary.json``)
    with ``val_top1`` (final) and ``best_val_top1``."""
    return run_task(FinetuneTask(cfg), resume=resume, progress=progress, loss_hook=loss_hook)
