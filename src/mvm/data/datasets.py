"""One dataset class for every source: VideoMAE list files, CSV lists and folders of videos.

An item is ``{"video": [3, T, S, S] float32, "label": int, "index": int, "motion": [t, h, w, 2]
float32, "failed": ["reason|path", ...]}``. The sample and its augmentation are functions of
``(seed, i)`` only, and ``i`` may run past ``len`` (:class:`EpochSampler` hands out
``epoch * len + position``), so data order and augmentation replay exactly on resume and do
not depend on which worker loads what. A file that fails to load is replaced by the next sample
and reported in ``failed`` so the counts reach the training loop from worker processes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from mvm.config import DataConfig
from mvm.data.cache import CachedVideo, DecodeCache
from mvm.data.sampling import clip_indices
from mvm.data.transforms import ClipTransform
from mvm.data.video_io import VideoDecodeError, count_frames, decode_video
from mvm.grid import TokenGrid
from mvm.motion.field import MotionField, clip_motion, frame_motion, to_token_grid

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
#: Consecutive failed samples after which loading gives up.
MAX_CONSECUTIVE_FAILURES = 50

Entry = tuple[str, int]


class BadSample(Exception):
    """A sample refused before decoding; ``reason`` is the counting tag (``bad_label``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def _parse_line(line: str) -> Entry | None:
    """``path label``, ``path,label`` or ``path`` (label -1); None when malformed."""
    fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
    if len(fields) == 1 and fields[0]:
        return fields[0], -1
    if len(fields) == 2 and fields[0]:
        try:
            return fields[0], int(fields[1])
        except ValueError:
            return None
    return None


def parse_list(path: str | os.PathLike, root: str = "") -> tuple[list[Entry], list[str]]:
    """Read a list file, keeping going past malformed lines.

    Blank lines and ``#`` comments are skipped, and so is a first line that reads like a CSV
    header (``path,label``). Relative paths resolve against ``root``, else the list's folder.

    Returns:
        ``[(path, label), ...]`` and one ``"file:line: problem"`` message per malformed line.
    """
    path = Path(path)
    base = Path(root) if root else path.parent
    entries: list[Entry] = []
    malformed: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parsed = _parse_line(line)
            if parsed is None:
                if number == 1 and line.replace(" ", ",").split(",")[-1].lower() in ("label", "class", "target"):
                    continue  # a CSV header
                malformed.append(f"{path}:{number}: expected 'path label' (label an integer), got {line!r}")
                continue
            file, label = parsed
            entries.append((str(base / file) if not os.path.isabs(file) else file, label))
    return entries, malformed


def read_list(path: str | os.PathLike, root: str = "") -> list[Entry]:
    """VideoMAE list file -> ``[(path, label), ...]``.

    Raises:
        ValueError: at the first malformed line, naming the file and the line number.
    """
    entries, malformed = parse_list(path, root)
    if malformed:
        raise ValueError(malformed[0])
    return entries


def scan_folder(folder: str | os.PathLike) -> tuple[list[Entry], list[str]]:
    """Every video file under ``folder``; label = index of its top sub-folder among the sorted
    sub-folder names, or -1 for files directly in ``folder``.

    Returns:
        entries sorted by path, and the class names.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    tops = [p.relative_to(folder).parts[0] if p.parent != folder else None for p in files]
    classes = sorted({t for t in tops if t is not None})
    index = {name: i for i, name in enumerate(classes)}
    return [(str(p), -1 if t is None else index[t]) for p, t in zip(files, tops)], classes


class VideoDataset(torch.utils.data.Dataset):
    """Clips with their motion from a list file, a folder, or ``[(path, label), ...]``.

    Args:
        source: list file, folder of videos, or a sequence of ``(path, label)``.
        grid: token grid; its frames and size must match ``data_cfg``.
        data_cfg: frames, stride, size, augmentation, motion source, ``root``, ``num_classes``.
        train: random clip start, multi-scale crop and flip; otherwise centre clip and crop.
        seed: with the raw index, seeds every sample's clip start and augmentation.
        with_motion: compute motion (default: ``data_cfg.motion != "none"``); without it the
            item's motion is zeros so batches collate the same way.

    Attributes:
        entries: ``[(path, label), ...]``; classes: class names of a folder source (else []);
        malformed_lines: ``"file:line: problem"`` per skipped list line;
        failure_counts: ``{reason: count}`` of failures seen in this process.
    """

    def __init__(self, source: str | os.PathLike | Sequence[Entry], grid: TokenGrid, data_cfg: DataConfig,
                 train: bool, seed: int = 0, with_motion: bool | None = None) -> None:
        if grid.frames != data_cfg.frames or grid.size != (data_cfg.size, data_cfg.size):
            raise ValueError(f"grid covers {grid.frames}x{grid.size} but data has frames={data_cfg.frames}, "
                             f"size={data_cfg.size}")
        self.grid, self.cfg, self.train, self.seed = grid, data_cfg, train, seed
        self.classes: list[str] = []
        self.malformed_lines: list[str] = []
        if isinstance(source, str | os.PathLike):
            p = Path(source)
            if p.is_dir():
                self.entries, self.classes = scan_folder(p)
            elif p.is_file():
                self.entries, self.malformed_lines = parse_list(p, data_cfg.root)
                for msg in self.malformed_lines:
                    log.warning("skipping malformed line %s", msg)
            else:
                raise FileNotFoundError(f"data source not found: {p}")
        else:
            self.entries = [(str(f), int(y)) for f, y in source]
        if not self.entries:
            raise ValueError(f"no videos in {source if isinstance(source, str | os.PathLike) else 'the list'}")
        self.with_motion = data_cfg.motion != "none" if with_motion is None else with_motion
        self.motion_source = data_cfg.motion if data_cfg.motion != "none" else "auto"
        self.transform = ClipTransform(data_cfg.size, train, data_cfg.scales, data_cfg.flip,
                                       data_cfg.mean, data_cfg.std)
        self.failure_counts: Counter[str] = Counter()
        # Each worker process gets its own copy when the DataLoader forks or pickles the dataset.
        self.cache = DecodeCache(data_cfg.cache_mb) if data_cfg.cache_mb > 0 else None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        rng = np.random.default_rng([self.seed, i])
        failed: list[str] = []
        n = len(self.entries)
        for attempt in range(MAX_CONSECUTIVE_FAILURES):
            path, label = self.entries[(i + attempt) % n]  # deterministic replacement: the next one
            try:
                video, motion = self._load(path, label, rng)
            except Exception as e:  # any failure of one file must not stop a run
                reason = e.reason if isinstance(e, VideoDecodeError | BadSample) else "decode_error"
                log.debug("sample %d: %s failed (%s): %s", i, path, reason, e)
                self.failure_counts[reason] += 1
                failed.append(f"{reason}|{path}")
                last = e
                continue
            return {"video": video, "label": label, "index": i, "motion": motion, "failed": failed}
        raise RuntimeError(f"{MAX_CONSECUTIVE_FAILURES} consecutive samples failed to load from index {i}; "
                           f"the last was {path}: {last}") from last

    def _load(self, path: str, label: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode, sample and transform one file: video ``[3, T, S, S]``, motion ``[t, h, w, 2]``."""
        k = self.cfg.num_classes
        if k and not -1 <= label < k:
            raise BadSample("bad_label", f"label {label} outside [0, {k}) (data.num_classes={k})")
        frames, field, idx = self._decode(path, rng)
        motion, block = None, None
        if field is not None:
            motion, block = clip_motion(field, idx), field.block
        video, motion_t = self.transform(frames[idx], motion, rng, block=block)
        if motion_t is None:
            return video, torch.zeros(*self.grid.shape, 2)
        return video, to_token_grid(motion_t, self.grid).float()

    def _decode(self, path: str, rng: np.random.Generator) -> tuple[np.ndarray, MotionField | None, np.ndarray]:
        """Frames ``[F, H, W, 3]`` uint8, the motion field (None without motion) and the clip's indices.

        Without a cache the clip is placed from the header's frame count and decoding stops at its
        last frame. With one the whole video is decoded and kept, so a hit and a miss give the
        same frames, field and indices.
        """
        cfg = self.cfg
        codec_mv = self.with_motion and self.motion_source in ("auto", "codec")
        if self.cache is not None:
            hit = self.cache.get(path)
            if hit is None:
                decoded = decode_video(path, with_motion=codec_mv)
                field = frame_motion(decoded, self.motion_source, path=path) if self.with_motion else None
                hit = CachedVideo(decoded.frames, field)
                self.cache.put(path, hit)
            return hit.frames, hit.field, clip_indices(len(hit.frames), cfg.frames, cfg.stride, self.train, rng)
        total = count_frames(path)
        idx = None if total is None else clip_indices(total, cfg.frames, cfg.stride, self.train, rng)
        decoded = decode_video(path, max_frames=None if idx is None else int(idx[-1]) + 1, with_motion=codec_mv)
        if idx is None:
            idx = clip_indices(decoded.num_frames, cfg.frames, cfg.stride, self.train, rng)
        idx = np.minimum(idx, decoded.num_frames - 1)  # the header may promise more than decodes
        field = frame_motion(decoded, self.motion_source, path=path) if self.with_motion else None
        return decoded.frames, field, idx


def collate_items(items: list[dict]) -> dict:
    """Stack dataset items: video ``[B, 3, T, S, S]``, motion ``[B, t, h, w, 2]``, label and index
    ``[B]`` long; ``failed`` is one flat list of ``"reason|path"`` for the whole batch."""
    return {
        "video": torch.stack([it["video"] for it in items]),
        "motion": torch.stack([it["motion"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "failed": [f for it in items for f in it.get("failed", [])],
    }


class EpochSampler(Sampler[int]):
    """Endless ``epoch * n + perm_epoch[j]``, from sample position ``start`` on.

    Position ``p`` (0, 1, 2, ... over the whole run) is epoch ``p // n``, slot ``p % n``; the
    permutation of an epoch is seeded by ``(seed, epoch)``, so a run resumed at ``start``
    continues exactly as the uninterrupted run would have. With ``num_replicas > 1`` each rank
    takes every ``num_replicas``-th position (``start`` counts positions over all ranks).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, start: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one sample, got n={n}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.n, self.seed, self.shuffle, self.start = n, seed, shuffle, start
        self.num_replicas, self.rank = num_replicas, rank

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of one epoch, ``[n]``."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        p = self.start + (self.rank - self.start) % self.num_replicas  # this rank's first position
        epoch, perm = -1, np.arange(0)
        while True:
            e, j = divmod(p, self.n)
            if e != epoch:
                epoch, perm = e, self.order(e)
            yield e * self.n + int(perm[j])
            p += self.num_replicas
