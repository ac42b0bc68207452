"""The one training loop every job runs: pretraining, fine-tuning, tokenizer training.

A job is a :class:`Task`: it supplies its model, its batches and its loss (and optionally
validation, extra state and end-of-run pictures). Everything else lives here once: torchrun set-up,
resume, AdamW and the warmup + cosine schedule, gradient accumulation, bf16 autocast, clipping, the
non-finite guard, bad-data accounting, SIGTERM/SIGINT checkpoint-and-stop, atomic checkpoints,
metrics (JSON lines + TensorBoard), the progress callback, periodic validation with a ``best/``
checkpoint, and ``summary.json``. The loop reads like nanoGPT's: fetch, forward, backward, clip,
step, log, checkpoint. Everything that decides a run's numbers (data order, augmentation, masks,
dropout RNG) is a function of the seed and the step, so ``resume=True`` reproduces an uninterrupted
run exactly on CPU. A step never waits for the device: its figures and the guard's decision stay
there until a log line, a checkpoint or the end reads them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mvm.config import Config, to_toml
from mvm.data.loader import TRAIN_MAP_FROM, retain_heap
from mvm.train import checkpoint as ckpt_io
from mvm.train import distributed as dist
from mvm.train.guard import BadDataTracker, NonFiniteGuard, StopSignal
from mvm.train.metrics import MetricLogger
from mvm.train.optim import lr_at, param_groups, set_lr

log = logging.getLogger(__name__)

#: progress(step, total, {"loss":..., "lr":..., "clips_per_s":..., "data_wait":...}) — the CLI draws the bar.
Progress = Callable[[int, int, dict[str, float]], None]
#: loss_hook(step, loss) -> loss, for fault-injection tests.
LossHook = Callable[[int, torch.Tensor], torch.Tensor]


class Task:
    """What a job supplies to :func:`run_task`. Subclass it and override what the job needs."""

    #: written into every checkpoint's meta.json; a resume refuses a checkpoint of another kind.
    kind: str = "pretrain"
    #: a key of :meth:`evaluate`'s result; the loop keeps ``run_dir/best/`` for its highest value.
    best_metric: str | None = None
    #: config keys that must agree between a checkpoint and the run resuming it.
    must_match: tuple[str, ...] = ("model.name", "model.tubelet", "model.patch", "data.frames", "data.size")

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def check(self) -> None:
        """Validate inputs before anything is written (raise with a one-line message)."""

    def prepare(self) -> None:
        """Before the model is built: on rank 0 first, then (after a barrier) on the other ranks,
        so it must be idempotent: rank 0 makes what is missing (the synthetic set), the others find it."""

    def build_model(self) -> nn.Module:
        """A plain model on CPU; the loop moves, resumes and wraps it."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict]:
        """AdamW parameter groups; a group's ``lr_scale`` multiplies the scheduled lr."""
        return param_groups(model, self.cfg.optim.weight_decay)

    def build_loader(self, start_sample: int, info: dist.DistInfo) -> tuple[Dataset, Iterable[dict]]:
        """The dataset and endless batches from global clip position ``start_sample``."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict, device: torch.device,
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss of one micro-batch (inside autocast) and named detached parts to log."""
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int, taken: torch.Tensor) -> None:
        """After every optimiser step (e.g. an EMA update). ``taken``: 0-dim bool on the device,
        False where the non-finite guard skipped the step; use it on the device (``torch.where``,
        a weight) rather than reading it, which would make every step wait for the device."""

    def gather_state(self, keep: bool) -> None:
        """On every rank where the loop gathers the model's whole weights: before validation and
        before a checkpoint. A task that keeps state sharded under FSDP2 (the fine-tuning EMA)
        gathers it whole here, for :meth:`evaluate`, :meth:`state_dict` and :meth:`extra_weights`,
        which run on rank 0 only: a gather is a collective, so called there alone it would hang.
        ``keep``: True on rank 0; the other ranks take part and drop the result."""

    def evaluate(self, model: nn.Module, device: torch.device, step: int) -> dict[str, float]:
        """Validation on rank 0 with a plain model in eval mode; logged with the step."""
        return {}

    def state_dict(self) -> dict:
        """Extra state a resume needs (torch.save-able, loaded with weights_only=True)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """Further weight files for a checkpoint, ``{"ema": state_dict}`` -> ``ema.safetensors``."""
        return {}

    def finish(self, model: nn.Module, run_dir: Path, device: torch.device) -> dict[str, Any]:
        """Rank 0, after a completed run: pictures, probes, final figures (merged into the summary)."""
        return {}

    def describe(self) -> str:
        """One log line about the job (the loop adds model size, grid and lr)."""
        return self.kind


def check_resume(cfg: Config, task: Task, meta: dict, ckpt: Path) -> None:
    """Refuse a checkpoint made by another kind of job or with another geometry."""
    kind = meta.get("kind", "pretrain")
    if kind != task.kind:
        raise ckpt_io.CheckpointError(f"{ckpt} is a {kind} checkpoint; this is a {task.kind} run")
    saved = meta.get("config", {})
    for key in task.must_match:
        sec, name = key.split(".")
        mine = getattr(getattr(cfg, sec), name)
        theirs = saved.get(sec, {}).get(name, mine)
        if theirs != mine:
            raise ckpt_io.CheckpointError(
                f"{ckpt} was made with {key}={theirs!r}, this run has {key}={mine!r}; "
                "resume with the checkpoint's config or start a new run folder")


class _Run:
    """The state of one run of :func:`run_task`, so the loop's helpers share it without globals."""

    def __init__(self, task: Task, info: dist.DistInfo, device: torch.device) -> None:
        self.task, self.cfg, self.info, self.device = task, task.cfg, info, device
        self.run_dir = Path(self.cfg.train.out)
        self.guard = NonFiniteGuard(self.cfg.train.max_nonfinite)
        self.bad: BadDataTracker | None = None
        self.best: float | None = None
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.metadata: dict[str, str] | None = None

    def weights_metadata(self) -> dict[str, str] | None:
        """The model's spec and clip for the safetensors header, so that ``load_model`` rebuilds
        any run's weights exactly (head counts are not in the shapes); None for non-ViT models."""
        if self.metadata is None:
            from mvm.interop.clip import CLIP_KEY
            from mvm.interop.load import SPEC_KEY, InteropError, spec_from_model

            try:
                spec = spec_from_model(dist.unwrap(self.model))
            except InteropError:
                return None
            self.metadata = {SPEC_KEY: json.dumps(spec.to_dict()), "format": "pt",
                             CLIP_KEY: json.dumps({"frames": self.cfg.data.frames, "size": self.cfg.data.size})}
        return self.metadata

    def plain_model(self) -> nn.Module | None:
        """An unwrapped, full model on rank 0 (None on the others); collective under FSDP."""
        if self.info.enabled and self.cfg.train.parallel == "fsdp":
            model_sd, _ = dist.full_state(self.model, self.optimizer)
            if not self.info.is_main:
                return None
            # Building draws initial weights from the RNG, on rank 0 alone: without the fork its RNG
            # would leave the other ranks' (drop path), and a resume (rank 0's RNG state) would differ.
            with torch.random.fork_rng(devices=[]):
                plain = self.task.build_model().to(self.device)
            plain.load_state_dict(model_sd)
            return plain
        return dist.unwrap(self.model) if self.info.is_main else None

    def checkpoint(self, step: int) -> tuple[Path | None, dict[str, torch.Tensor]]:
        self.guard.settle()  # the skipped-step count is saved; a run over the limit stops here
        model_sd, optim_sd = dist.full_state(self.model, self.optimizer)  # collective under FSDP
        self.task.gather_state(keep=self.info.is_main)  # collective too: rank 0's state_dict / extra_weights read it
        path = None
        if self.info.is_main:
            state = {"optimizer": optim_sd, "torch_rng": torch.get_rng_state(),
                     "bad_data": self.bad.state_dict(), "skipped_steps": self.guard.skipped,
                     "best": self.best, "task": self.task.state_dict()}
            path = ckpt_io.save_checkpoint(self.run_dir, step, model_sd, state,
                                           {"kind": self.task.kind, "config": self.cfg.to_dict()},
                                           keep=self.cfg.train.keep_ckpts, extra=self.task.extra_weights(),
                                           metadata=self.weights_metadata())
        dist.barrier(self.info)
        return path, model_sd

    def evaluate(self, step: int, metrics: MetricLogger | None) -> dict[str, float]:
        """Validate, log, and keep ``best/`` when the task's best metric improved."""
        plain = self.plain_model()
        self.task.gather_state(keep=self.info.is_main)  # every rank: rank 0's evaluate and best/ use it
        result: dict[str, float] = {}
        if plain is not None:
            was_training = plain.training
            plain.eval()
            with torch.no_grad():
                result = dict(self.task.evaluate(plain, self.device, step))
            plain.train(was_training)
            key = self.task.best_metric
            if key is not None and key in result and (self.best is None or result[key] > self.best):
                self.best = float(result[key])
                self._save_best(step, plain)
            if result and metrics is not None:
                metrics.log(step, **result)
            if result:
                log.info("step %d validation: %s", step, {k: round(v, 4) for k, v in result.items()})
        dist.barrier(self.info)
        return result

    def _save_best(self, step: int, plain: nn.Module) -> None:
        best = self.run_dir / "best"
        tmp = self.run_dir / f".tmp-best-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        ckpt_io.save_weights_folder(tmp, plain.state_dict(), {
            "step": step, "kind": self.task.kind, self.task.best_metric: self.best,
            "config": self.cfg.to_dict()}, extra=self.task.extra_weights(), metadata=self.weights_metadata())
        shutil.rmtree(best, ignore_errors=True)
        os.replace(tmp, best)


def run_task(task: Task, resume: bool = False, progress: Progress | None = None,
             loss_hook: LossHook | None = None) -> dict[str, Any]:
    """Train ``task`` per its config; returns the run summary (also written to ``summary.json``).

    Under torchrun every rank calls this; rank 0 writes checkpoints, metrics, pictures and the summary.

    Raises:
        CheckpointError: the run folder holds checkpoints and ``resume`` is False, or ``resume`` is
            True and it holds none, or they do not fit this run.
    """
    cfg = task.cfg
    task.check()  # before anything is written
    run_dir = Path(cfg.train.out)
    existing = ckpt_io.latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise ckpt_io.CheckpointError(
            f"{run_dir} already holds checkpoints ({existing.name}); continue it with resume=True "
            "(mvm: --resume) or choose another output folder (train.out, mvm: --out)")
    if resume and existing is None:
        raise ckpt_io.CheckpointError(f"{run_dir} holds no checkpoint to resume from; start it without resume "
                                      "(mvm: drop --resume)")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info, device = dist.init_distributed(cfg.train.device)
    if device.type == "cpu":
        # The step's large buffers (a decoder's attention scores: 15-30 MB) would otherwise be
        # mapped afresh and page-faulted in every step: 60,000-100,000 faults, 0.1-0.6 s of system
        # time per ViT-S step (docs/benchmarks.md, the pretraining step).
        retain_heap(TRAIN_MAP_FROM)
    run = _Run(task, info, device)
    torch.manual_seed(cfg.train.seed)
    if info.is_main:
        task.prepare()
    dist.barrier(info)
    if not info.is_main:
        task.prepare()
    model = task.build_model().to(device)
    accum = cfg.optim.accum_steps
    clips_per_step = cfg.optim.batch_size * accum * info.world
    peak_lr = cfg.optim.base_lr * clips_per_step / 256
    start_step, resumed = 0, None
    state: dict[str, Any] = {}
    if existing is not None:
        state, meta = ckpt_io.load_state(existing)
        check_resume(cfg, task, meta, existing)
        weights = ckpt_io.read_weights(existing)
        ckpt_io.check_weights(model, weights, existing)
        torch.set_rng_state(state["torch_rng"])
        run.guard.skipped = int(state.get("skipped_steps", 0))
        run.best = state.get("best")
        task.load_state_dict(state.get("task", {}))
        start_step, resumed = int(meta["step"]), (weights, state["optimizer"])
        log.info("resuming %s from step %d", existing, start_step)
    model = dist.wrap_model(model, info, cfg.train.parallel, device)
    if cfg.train.compile:
        from mvm.train.compile import maybe_compile

        model = maybe_compile(model, True, device)
    # Fused AdamW: one kernel for all parameters (on CPU too: 0.74 -> 0.63 s per ViT-S step here),
    # FSDP2's sharded DTensor parameters included (torch dispatches it per shard), and it can skip a
    # non-finite step on the device (found_inf).
    fused_ok = device.type in ("cuda", "cpu")
    fused = {"fused": True} if fused_ok else {}
    optimizer = torch.optim.AdamW(task.param_groups(dist.unwrap(model)), lr=peak_lr,
                                  betas=tuple(cfg.optim.betas), **fused)
    if resumed is not None:
        dist.load_full_state(model, optimizer, *resumed)
    run.model, run.optimizer = model, optimizer
    metrics = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))
        metrics = MetricLogger(run_dir)
        metrics.truncate_after(start_step)
    dataset, loader = task.build_loader(start_step * clips_per_step, info)
    run.bad = BadDataTracker(cfg.data.max_bad_fraction, len(dataset))  # judged on distinct files
    run.bad.load_state_dict(state.get("bad_data", {}))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: model %s, %.1fM parameters; peak lr %.2e; %d process(es) on %s", task.describe(),
             cfg.model.name, n_params / 1e6, peak_lr, info.world, device)

    batches = iter(loader)
    step = start_step
    stopped_by: str | None = None
    last_loss = float("nan")
    parts: dict[str, float] = {}
    part_names: list[str] = []
    good: torch.Tensor | None = None  # [2 + parts] the last finite step's loss, grad norm, parts
    latest: torch.Tensor | None = None  # the same for the last step, finite or not
    t_log, clips_since, wait_since = time.perf_counter(), 0, 0.0
    eval_every = cfg.train.eval_every
    warned_wait = False
    stop_agreed = dist.LaggedRead()
    model.train()
    with StopSignal() as stop:
        while step < cfg.train.steps:
            lr = lr_at(step, cfg.train.steps, peak_lr, cfg.optim.warmup_steps, cfg.optim.min_lr)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            sums: dict[str, torch.Tensor] = {}
            for _ in range(accum):
                t0 = time.perf_counter()
                batch = next(batches)
                wait_since += time.perf_counter() - t0
                clips = int(batch["video"].shape[0])
                run.bad.update(clips, batch.get("failed", []))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16):
                    loss, named = task.loss(model, batch, device, step)
                for k, v in named.items():
                    sums[k] = sums.get(k, 0) + v.detach().float() / accum
                if loss_hook is not None:
                    loss = loss_hook(step, loss)
                (loss / accum).backward()
                total += loss.detach().float() / accum
                clips_since += clips * info.world
            clip = cfg.optim.clip_grad if cfg.optim.clip_grad > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            part_names = list(sums)
            # No host sync in a step: the figures stay on the device until a log line, a checkpoint
            # or the end reads them, and the guard decides a skip on the device. Under torchrun one
            # collective averages them and carries the stop flag.
            values = torch.stack([total, grad_norm.float().to(device), *(sums[k] for k in part_names)])
            if info.enabled:
                flag = torch.full((1,), float(stop.received is not None), device=device)
                values = dist.all_mean(torch.cat([values, flag]), info)
                values, anyone_stopped = values[:-1], values[-1]
            bad = run.guard.check(step, values[0], values[1])
            if fused_ok:
                optimizer.found_inf = bad.float()  # fused AdamW leaves weights, moments and step as they are
                optimizer.step()
            elif not bool(bad):  # a device without fused AdamW cannot skip on the device: one host read
                optimizer.step()
            task.after_step(dist.unwrap(model), step, ~bad)
            if good is not None and good.shape != values.shape:  # the parts changed (a tokenizer's phase)
                good = torch.cat([good[:2], values[2:]])
            good = values if good is None else torch.where(bad, good, values)
            latest = values
            step += 1
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                run.guard.settle()  # raises over train.max_nonfinite (every rank: the figures agree)
                last_loss, parts, grad_value = _figures(good, latest, part_names)
                if metrics is not None:
                    dt = time.perf_counter() - t_log
                    row = {"loss": last_loss, **parts, "lr": lr, "grad_norm": grad_value,
                           "clips_per_s": clips_since / max(dt, 1e-9),
                           "data_wait": min(1.0, wait_since / max(dt, 1e-9)),
                           "skipped_steps": run.guard.skipped, "bad_samples": sum(run.bad.by_reason.values())}
                    metrics.log(step, **row)
                    if row["data_wait"] > 0.25 and step >= 5 * cfg.train.log_every and not warned_wait:
                        warned_wait = True  # once: the figure stays in metrics.jsonl and on the bar
                        log.warning("the step waited for data %.0f%% of the time: the loader cannot keep up "
                                    "(more data.workers, data.repeat > 1, or data.cache_mb for small sets)",
                                    100 * row["data_wait"])
                    if progress is not None:
                        progress(step, cfg.train.steps, row)
                t_log, clips_since, wait_since = time.perf_counter(), 0, 0.0
            # Under torchrun every rank stops at the same step: the one after any rank's signal
            # reached the collective (read a step late, so that the read does not wait).
            stopping = stop.received is not None if not info.enabled else bool(stop_agreed.swap(anyone_stopped))
            if stopping:
                stopped_by = {None: "peer", 15: "SIGTERM"}.get(stop.received, "SIGINT")
                run.checkpoint(step)
                break
            if eval_every and step % eval_every == 0 and step < cfg.train.steps \
                    and type(task).evaluate is not Task.evaluate:
                run.evaluate(step, metrics)
                model.train()
            if step % cfg.train.ckpt_every == 0 and step < cfg.train.steps:
                run.checkpoint(step)
    if latest is not None:
        run.guard.settle()
        last_loss, parts, _ = _figures(good, latest, part_names)
    del batches, loader  # stop workers before validation and probes start their own
    final, _ = run.checkpoint(step)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "kind": task.kind, "steps": step,
                               "final_loss": last_loss, **parts, "stopped_by": stopped_by,
                               "checkpoint": str(final), "processes": info.world,
                               "skipped_steps": run.guard.skipped, **run.bad.summary(),
                               "malformed_lines": len(getattr(dataset, "malformed_lines", []))}
    if stopped_by is None and type(task).evaluate is not Task.evaluate:
        result = run.evaluate(step, metrics)
        summary.update({f"final_{k}" if k in summary else k: v for k, v in result.items()})
        if task.best_metric is not None and run.best is not None:
            summary[f"best_{task.best_metric}"] = run.best
            summary["best_checkpoint"] = str(run_dir / "best")
    plain = run.plain_model() if stopped_by is None else None
    if info.is_main:
        metrics.close()
        if plain is not None:
            plain.eval()
            try:
                summary.update(task.finish(plain, run_dir, device))
            except Exception as e:  # a picture or probe that fails must not lose the run's summary
                log.warning("end-of-run pictures/probes failed and were skipped: %s", e, exc_info=True)
                summary["finish_error"] = str(e)
        write_summary(run_dir, summary)
    dist.barrier(info)
    dist.shutdown(info)
    return summary


def _figures(good: torch.Tensor, latest: torch.Tensor, names: list[str]) -> tuple[float, dict[str, float], float]:
    """The last finite step's loss and named parts, and the last step's gradient norm (a host sync)."""
    host = torch.cat([good, latest[1:2]]).tolist()
    return host[0], dict(zip(names, host[2:-1])), host[-1]


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` atomically."""
    tmp = run_dir / f".summary.{os.getpid()}.json"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, run_dir / "summary.json")
