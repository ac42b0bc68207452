"""What keeps a run alive: bad-data accounting, non-finite step skipping, preemption signals."""

from __future__ import annotations

import logging
import math
import signal
from collections import Counter
from types import FrameType

import torch

log = logging.getLogger(__name__)


class TooMuchBadData(RuntimeError):
    """More of the data failed to load than ``data.max_bad_fraction`` allows."""


class TooManyNonFinite(RuntimeError):
    """Consecutive non-finite losses or gradients exceeded ``train.max_nonfinite``."""


class BadDataTracker:
    """Counts files that failed to load (``"reason|path"`` entries from the batches) and stops
    the run when too many of the data set's files are bad.

    The dataset remembers a failed file and never draws it again, so each file is logged once
    and counted once. With ``dataset_size`` the threshold is judged on DISTINCT bad files
    against the data set: the run stops when more than ``ceil(max_fraction * dataset_size)``
    files are bad (rounded up, so a 6-file set with one bad file trains on). Without it
    (``dataset_size=0``) the share of failed draws is judged once ``min_samples`` were drawn.
    """

    def __init__(self, max_fraction: float, dataset_size: int = 0, min_samples: int = 20) -> None:
        self.max_fraction = max_fraction
        self.dataset_size = int(dataset_size)
        self.min_samples = min_samples
        self.by_reason: Counter[str] = Counter()
        self.files: dict[str, str] = {}
        self.good = 0
        self.draws = 0  # failed draws, repeats of a known file included

    @property
    def allowed(self) -> int:
        """Distinct bad files tolerated (with a known dataset size)."""
        return math.ceil(self.max_fraction * self.dataset_size - 1e-9)

    def update(self, batch_size: int, failed: list[str]) -> None:
        """Count one batch of ``batch_size`` good clips and its failures.

        Raises:
            TooMuchBadData: over the threshold (see the class docstring).
        """
        self.good += batch_size
        for entry in failed:
            reason, _, path = entry.partition("|")
            self.draws += 1
            if path in self.files:
                continue  # a worker that had not yet seen the shared table tried it again
            log.warning("skipping %s (%s); it is not drawn again", path, reason)
            self.by_reason[reason] += 1
            self.files[path] = reason
        bad = len(self.files)
        worst = ", ".join(f"{r}: {n}" for r, n in self.by_reason.most_common())
        example = next(iter(self.files), "")
        if self.dataset_size:
            if bad > self.allowed:
                raise TooMuchBadData(
                    f"{bad} of the {self.dataset_size} files failed to load ({worst}), over "
                    f"data.max_bad_fraction={self.max_fraction} (at most {self.allowed}); e.g. {example}")
            return
        seen = self.draws + self.good
        if seen >= self.min_samples and self.draws / seen > self.max_fraction:
            raise TooMuchBadData(
                f"{self.draws} of {seen} samples drawn so far failed to load ({worst}), over "
                f"data.max_bad_fraction={self.max_fraction}; e.g. {example}")

    def summary(self) -> dict:
        return {"bad_samples": sum(self.by_reason.values()), "bad_by_reason": dict(self.by_reason),
                "bad_files": len(self.files)}

    def state_dict(self) -> dict:
        return {"by_reason": dict(self.by_reason), "good": self.good, "files": dict(self.files),
                "draws": self.draws}

    def load_state_dict(self, s: dict) -> None:
        self.by_reason = Counter(s.get("by_reason", {}))
        self.good = int(s.get("good", 0))
        self.files = dict(s.get("files", {}))
        self.draws = int(s.get("draws", sum(self.by_reason.values())))


class NonFiniteGuard:
    """Skips optimiser steps whose loss or gradient norm is not finite; stops the run after
    ``limit`` consecutive ones.

    The decision is taken on the device: :meth:`check` returns a 0-dim bool tensor the optimiser
    skips with (fused AdamW's ``found_inf``), and counts on the device, so a step never waits for
    the host. The host learns of skipped steps in :meth:`settle`, which the loop calls where it
    reads the device anyway (a log line, a checkpoint, the end of the run); a run over the limit
    stops there, naming the step where the limit was reached. The steps in between were skipped
    too, so no weights changed, and no checkpoint is written before :meth:`settle` has run.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0  # skipped steps in a row, as of the last settle
        self.skipped = 0  # all skipped steps, as of the last settle
        # int64 [4] on the device: skipped since the last settle, skipped in a row, the step where
        # the run reached the limit (-1: not yet), the first step skipped since the last settle (-1)
        self._tally: torch.Tensor | None = None

    def check(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """Whether step ``step`` must be skipped: ``loss`` and ``grad_norm`` (0-dim, on the
        device, the same on every rank) not both finite. Returns a 0-dim bool on their device."""
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        t = self._tally
        if t is None:
            t = torch.tensor([0, self.consecutive, -1, -1]).to(loss.device, non_blocking=True)  # no wait
        b = bad.long()
        row = (t[1] + 1) * b
        self._tally = torch.stack([t[0] + b, row, torch.where((t[2] < 0) & (row >= self.limit), step, t[2]),
                                   torch.where((t[3] < 0) & bad, step, t[3])])
        return bad

    def settle(self) -> None:
        """Read the device's counts (a host sync); log the steps skipped since the last call.

        Raises:
            TooManyNonFinite: ``limit`` consecutive steps were skipped.
        """
        if self._tally is None:
            return
        new, row, limit_at, first = self._tally.tolist()
        self._tally = None
        self.skipped += new
        self.consecutive = row
        if new:
            log.warning("%d step(s) from step %d on skipped: non-finite loss or gradient (%d in a row now)",
                        new, first, row)
        if limit_at >= 0:
            raise TooManyNonFinite(
                f"step {limit_at}: {self.limit} consecutive non-finite losses or gradients "
                f"(train.max_nonfinite={self.limit}); the last good checkpoint is kept")


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag checked at step boundaries (checkpoint, then exit cleanly)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with the host program
                pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.received = signum
        log.warning("received %s: checkpointing at the next step boundary", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
