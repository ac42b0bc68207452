"""What keeps a run alive: bad-data accounting, non-finite step skipping, preemption signals."""

from __future__ import annotations

import logging
import signal
from collections import Counter
from types import FrameType

log = logging.getLogger(__name__)


class TooMuchBadData(RuntimeError):
    """More of the data failed to load than ``data.max_bad_fraction`` allows."""


class TooManyNonFinite(RuntimeError):
    """Consecutive non-finite losses or gradients exceeded ``train.max_nonfinite``."""


class BadDataTracker:
    """Counts samples replaced because their file failed to load, by reason (``reason|path`` entries)."""

    def __init__(self, max_fraction: float, min_samples: int = 20) -> None:
        self.max_fraction = max_fraction
        self.min_samples = min_samples
        self.by_reason: Counter[str] = Counter()
        self.files: dict[str, str] = {}
        self.good = 0

    def update(self, batch_size: int, failed: list[str]) -> None:
        self.good += batch_size
        for entry in failed:
            reason, _, path = entry.partition("|")
            if path not in self.files:
                log.warning("skipped %s (%s); a replacement sample was used", path, reason)
            self.by_reason[reason] += 1
            self.files[path] = reason
        bad = sum(self.by_reason.values())
        seen = bad + self.good
        if seen >= self.min_samples and bad / seen > self.max_fraction:
            worst = ", ".join(f"{r}: {n}" for r, n in self.by_reason.most_common())
            raise TooMuchBadData(
                f"{bad} of {seen} samples drawn so far failed to load ({worst}), over "
                f"data.max_bad_fraction={self.max_fraction}; e.g. {next(iter(self.files))}")

    def summary(self) -> dict:
        return {"bad_samples": sum(self.by_reason.values()), "bad_by_reason": dict(self.by_reason),
                "bad_files": len(self.files)}

    def state_dict(self) -> dict:
        return {"by_reason": dict(self.by_reason), "good": self.good, "files": dict(self.files)}

    def load_state_dict(self, s: dict) -> None:
        self.by_reason = Counter(s.get("by_reason", {}))
        self.good = int(s.get("good", 0))
        self.files = dict(s.get("files", {}))


class NonFiniteGuard:
    """Counts skipped steps; raises after ``limit`` consecutive ones."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0
        self.skipped = 0

    def ok(self, step: int, finite: bool) -> bool:
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", step, self.consecutive)
        if self.consecutive >= self.limit:
            raise TooManyNonFinite(
                f"step {step}: {self.consecutive} consecutive non-finite losses or gradients "
                f"(train.max_nonfinite={self.limit}); the last good checkpoint is kept")
        return False


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
