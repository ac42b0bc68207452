"""One dataset class for every source format (``mvm.data.formats``): clips, their motion, repeats.

An item is ``{"video": [3, T, S, S] float32, "label": int, "index": int, "motion": [t, h, w, 2]
float32, "failed": ["reason|path", ...], "repeat": R}``; with ``repeat = R > 1`` video and motion
gain a leading ``[R, ...]``: R clips cut from one decoded video, each with its own clip start,
crop and flip (and, in the collate step, its own mask). Clip ``k`` of item ``i`` is a function of
``(seed, i, k)`` only, and ``i`` may run past ``len`` (:class:`EpochSampler` hands out
``epoch * len + position``), so data order and augmentation replay exactly on resume and do
not depend on which worker loads what.

A file that fails to load is marked in a shared-memory table (seen by every worker) and never
tried again; the item falls to the next usable entry, which is the same whether or not the
failure was already known, so items stay deterministic. The failure is reported once in
``failed`` for the training loop's count.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from mvm.config import DataConfig
from mvm.data.cache import DecodeCache
from mvm.data.formats import Entry, open_source
from mvm.data.sampling import EpochSampler, clip_indices
from mvm.data.transforms import ClipTransform
from mvm.data.video_io import DecodedVideo, VideoDecodeError, VideoInfo, decode_video, probe_video
from mvm.grid import TokenGrid

__all__ = ["VideoDataset", "collate_items", "stack_items", "EpochSampler", "BadSample"]

log = logging.getLogger(__name__)

#: Failed files in a row after which one item gives up.
MAX_CONSECUTIVE_FAILURES = 50
#: Videos whose frame index (timestamps, size) each process keeps; about 8 bytes per frame.
INDEX_CACHE_VIDEOS = 4096


class BadSample(Exception):
    """A sample refused before decoding; ``reason`` is the counting tag (``bad_label``, ``empty_span``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class VideoDataset(torch.utils.data.Dataset):
    """Clips with their motion from any annotation source, or a sequence of entries.

    Args:
        source: list file, folder, annotation file of any format in ``mvm.data.formats``
            (``data_cfg.format``, ``data_cfg.root``), or ``[(path, label[, start, end]), ...]``.
        grid: token grid; its frames and size must match ``data_cfg``.
        data_cfg: frames, stride, size, augmentation, motion source, format, root, num_classes,
            cache_mb, repeat.
        train: random clip start, multi-scale crop and flip; otherwise centre clip and crop.
        seed: with the raw index (and repeat number), seeds every clip's start and augmentation.
        with_motion: compute motion (default: ``data_cfg.motion != "none"``); without it the
            item's motion is zeros so batches collate the same way.
        repeat: clips per decoded video (default: ``data_cfg.repeat`` when training, else 1).
        pixels: ``"float"``: videos float32, normalised with ``data_cfg.mean`` / ``std``;
            ``"uint8"``: the cropped, resized pixels as uint8, for the consumer to normalise with
            :func:`~mvm.data.transforms.normalise_pixels` (bit for bit the same values; what
            pretraining loads: a quarter of the bytes from the workers to the GPU).

    Attributes:
        entries: :class:`~mvm.data.formats.Entry` rows; classes: class names (may be empty);
        malformed_lines: ``"file:line: problem"`` per skipped annotation line;
        bad: ``[len]`` bool in shared memory, True for entries known to fail;
        failure_counts: ``{reason: count}`` of failures seen in this process.

    Raises:
        mvm.data.formats.DataSourceError: the source cannot be opened or holds no videos.
    """

    def __init__(self, source: str | os.PathLike | Sequence[tuple], grid: TokenGrid, data_cfg: DataConfig,
                 train: bool, seed: int = 0, with_motion: bool | None = None, repeat: int | None = None,
                 pixels: str = "float") -> None:
        if grid.frames != data_cfg.frames or grid.size != (data_cfg.size, data_cfg.size):
            raise ValueError(f"grid covers {grid.frames}x{grid.size} but data has frames={data_cfg.frames}, "
                             f"size={data_cfg.size}")
        self.grid, self.cfg, self.train, self.seed = grid, data_cfg, train, seed
        self.classes: list[str] = []
        self.malformed_lines: list[str] = []
        if isinstance(source, str | os.PathLike):
            src = open_source(source, data_cfg.format, data_cfg.root)
            self.entries, self.classes, self.malformed_lines = src.entries, src.classes, src.malformed
            for msg in self.malformed_lines:
                log.warning("skipping malformed line %s", msg)
        else:
            self.entries = [Entry(str(e[0]), int(e[1]), *e[2:4]) for e in source]
        if not self.entries:
            raise ValueError("VideoDataset got no entries")
        if pixels not in ("float", "uint8"):
            raise ValueError(f"pixels must be 'float' or 'uint8', got {pixels!r}")
        self.pixels = pixels
        self.repeat = int(repeat if repeat is not None else (data_cfg.repeat if train else 1))
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {self.repeat}")
        self.with_motion = data_cfg.motion != "none" if with_motion is None else with_motion
        self.motion_source = data_cfg.motion if data_cfg.motion != "none" else "auto"
        self.transform = ClipTransform(data_cfg.size, train, data_cfg.scales, data_cfg.flip,
                                       data_cfg.mean, data_cfg.std)
        self.failure_counts: Counter[str] = Counter()
        # Made before the DataLoader starts its workers, so forked and spawned workers share it.
        self.bad = torch.zeros(len(self.entries), dtype=torch.bool).share_memory_()
        # Per process (each worker gets its own copy when the DataLoader starts it).
        self.cache = DecodeCache(data_cfg.cache_mb) if data_cfg.cache_mb > 0 else None
        self._info: OrderedDict[str, VideoInfo] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        n = len(self.entries)
        failed: list[str] = []
        last: Exception | None = None
        for step in range(n):
            j = (i + step) % n  # deterministic replacement: the next usable entry
            if self.bad[j]:
                continue
            entry = self.entries[j]
            try:
                video, motion = self._load(entry, i)
            except Exception as e:  # any failure of one file must not stop a run
                reason = e.reason if isinstance(e, VideoDecodeError | BadSample) else "decode_error"
                log.debug("sample %d: %s failed (%s): %s", i, entry.path, reason, e)
                self.bad[j] = True
                self.failure_counts[reason] += 1
                failed.append(f"{reason}|{entry.path}")
                last = e
                if len(failed) >= MAX_CONSECUTIVE_FAILURES:
                    break
                continue
            return {"video": video, "label": entry.label, "index": i, "motion": motion, "failed": failed,
                    "repeat": self.repeat}
        detail = f"; the last was {failed[-1].partition('|')[2]}: {last}" if failed else ""
        raise RuntimeError(f"no usable video found from index {i}: {len(failed)} failed in this item, "
                           f"{int(self.bad.sum())} of {n} files known bad{detail}") from last

    def clip_rngs(self, i: int) -> list[np.random.Generator]:
        """One generator per repeat, seeded by ``(seed, i, k)``: clip start, then crop and flip."""
        return [np.random.default_rng([self.seed, i, k]) for k in range(self.repeat)]

    def _load(self, entry: Entry, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Video ``[3, T, S, S]`` (float32, or uint8 with ``pixels="uint8"``) and motion
        ``[t, h, w, 2]`` (``[R, ...]`` each when repeat > 1)."""
        k = self.cfg.num_classes
        if k and not -1 <= entry.label < k:
            raise BadSample("bad_label", f"label {entry.label} outside [0, {k}) (data.num_classes={k})")
        rngs = self.clip_rngs(i)
        window, clips = self._decode(entry, rngs)
        # Each repeat's crop and flip, drawn first: motion of every repeat is then computed at once
        # (frames that several clips need are turned into motion once) and only where the crops read it.
        h, w = window.frames.shape[1:3]
        params = [self.transform.draw(h, w, rng) for rng in rngs]
        fields = [(None, None)] * len(clips)
        if self.with_motion:
            region = (min(p[0] for p in params), max(p[0] + p[2] for p in params),
                      min(p[1] for p in params), max(p[1] + p[3] for p in params))
            fields = _clips_motion(window, clips, self.motion_source, entry.path, region)
        # Repeats are written straight into their rows of one [R, 3, T, S, S] tensor (no stack copy).
        # Each clip's crop is read straight from the decoded frames (one copy of the crop; a clip's
        # 16 whole RGB frames at 340x604 are 9.9 MB, about 0.84 ms a gather), and frames a decode
        # held unconverted are converted right there, while the crop is read (HeldFrames).
        s = self.transform.size
        videos = torch.empty(len(clips), 3, len(clips[0]), s, s,
                             dtype=torch.uint8 if self.pixels == "uint8" else torch.float32)
        for k, (idx, (y0, x0, ch, cw, flip)) in enumerate(zip(clips, params)):
            clip = window.pixels(idx, box=(y0, x0, ch, cw))
            self.transform(clip, None, None, out=videos[k], params=(0, 0, ch, cw, flip))
        if not self.with_motion:
            tokens = torch.zeros(len(clips), *self.grid.shape, 2)
        else:  # after the pixels: the repeats' motion one after the other (their shared field stays
            # in cache; each clip's pixel work between them evicted it), straight onto the token grid
            tokens = torch.stack([self.transform.motion_tokens(m, (h, w), crop, block, self.grid)
                                  for crop, (m, block) in zip(params, fields)])
        if self.repeat == 1:
            return videos[0], tokens[0]
        return videos, tokens

    def info(self, path: str) -> VideoInfo:
        """Frame count, size and timestamps of a video, kept per process (LRU)."""
        hit = self._info.get(path)
        if hit is None:
            hit = self._info[path] = probe_video(path)
            if len(self._info) > INDEX_CACHE_VIDEOS:
                self._info.popitem(last=False)
        else:
            self._info.move_to_end(path)
        return hit

    def _decode(self, entry: Entry, rngs: list[np.random.Generator]) -> tuple[DecodedVideo, list[np.ndarray]]:
        """The decoded frames all clips need and each clip's indices into them.

        Clips are placed in the entry's span from the exact frame count (packet timestamps).
        Decoding seeks to the keyframe before the first needed frame (the clip start, less one
        stride for motion) and stops after the last. With a cache, a video that fits the budget
        is decoded whole once and the same window is cut from it, so items do not depend on hits.
        """
        cfg, info = self.cfg, self.info(entry.path)
        lo_span = max(0, entry.start or 0)
        hi_span = min(info.num_frames, entry.end if entry.end is not None else info.num_frames)
        if hi_span <= lo_span:
            raise BadSample("empty_span", f"frames [{entry.start}, {entry.end}) outside a video of "
                                          f"{info.num_frames} frames")
        # Repeats share one clip's frames (data.repeat_mode="frames", VideoMAE V2: one decode for
        # all) or each draws its own start ("clips", MAE-ST); crops and flips are always their own.
        starts = rngs if cfg.repeat_mode == "clips" else rngs[:1]
        clips = [lo_span + clip_indices(hi_span - lo_span, cfg.frames, cfg.stride, self.train, rng) for rng in starts]
        clips = clips * (len(rngs) // len(clips))
        lo = int(min(c[0] for c in clips))
        hi = int(max(c[-1] for c in clips)) + 1
        if self.with_motion:
            lo = motion_start(lo, cfg.stride, info.keyframes)
        codec_mv = self.with_motion and self.motion_source in ("auto", "codec")
        shown = np.unique(np.concatenate(clips)) - lo  # offsets of the frames the clips show
        pos = [c - lo for c in clips]  # each clip's frames in the window
        if self.cache is not None and self.cache.fits(info.decoded_bytes()):
            whole = self.cache.get(entry.path)
            if whole is None:
                whole = decode_video(entry.path, with_motion=codec_mv)
                self.cache.put(entry.path, whole)
            window = whole.window(lo, hi)
        elif self.with_motion and self.motion_source == "codec":
            # No cache, or a video larger than its budget: decode only the needed span. Codec
            # motion reads the vectors, picture types and (streams with farther references) luma
            # planes of every frame of it; RGB is needed for the clips' frames only.
            window = decode_video(entry.path, start=lo, max_frames=hi - lo, with_motion=True, pts=info.pts,
                                  rgb=shown, skip_unreferenced=cfg.motion_frames == "references")
        elif self.with_motion:  # motion estimated from the pixels: every frame in RGB
            window = decode_video(entry.path, start=lo, max_frames=hi - lo, with_motion=codec_mv, pts=info.pts)
        else:  # without motion only the clips' frames are decoded to RGB (16 of a 61-frame span)
            window = decode_video(entry.path, start=lo, max_frames=hi - lo, pts=info.pts, keep=shown)
            pos = [np.searchsorted(shown, p) for p in pos]  # window.frames[j] is frame lo + shown[j]
        if window.num_frames == 0:
            raise VideoDecodeError(entry.path, "no_frames", f"nothing decoded from frame {lo}")
        # The last frames can fail to decode (damaged tail): repeat the last one that did (in RGB).
        last = window.num_frames - 1 if window.rgb is None else int(np.flatnonzero(window.rgb >= 0)[-1])
        return window, [np.minimum(p, last) for p in pos]


def motion_start(lo: int, stride: int, keyframes: np.ndarray | None) -> int:
    """First frame to decode for the motion of a clip starting at ``lo``.

    Sample 0's motion sums the ``stride`` frames before the clip, so those are decoded too;
    except when a keyframe lies among them: reaching them would cost a whole earlier GOP (a
    quarter of the clips of GOP-16 streams at stride 4, about 6% of a dataset item's decoding).
    There the window starts at the clip and sample 0 copies sample 1, as it does for a clip at
    the start of a video (``mvm.motion.field.clip_motion``).
    """
    want = max(0, lo - stride)
    if keyframes is not None and keyframes.size:
        key = keyframes[max(int(np.searchsorted(keyframes, lo, side="right")) - 1, 0)]
        if want < key <= lo:
            return lo
    return want


def _clips_motion(window: DecodedVideo, clips: list[np.ndarray], source: str, path: str,
                  region: tuple[int, int, int, int] | None = None) -> list[tuple[np.ndarray, int]]:
    """Per clip, motion ``[T, Hm, Wm, 2]`` and its block size, from the frames of ``window`` only
    (codec motion only where ``region = (y0, y1, x0, x1)`` reads it, see ``motion_for_clips``)."""
    from mvm.motion.field import motion_for_clips

    return motion_for_clips(window, clips, source, path=path, region=region)


def stack_items(items: list[dict]) -> dict:
    """Stack dataset items into rows, one per clip (an item of R repeats gives R rows).

    Returns:
        ``video [N, 3, T, S, S]``, ``motion [N, t, h, w, 2]`` (None when no item has motion),
        ``label``, ``index`` and ``clip`` (repeat number) ``[N]`` long, ``failed`` one flat list
        of ``"reason|path"``; ``N = sum of the items' repeats``.
    """
    videos, motions, labels, index, clip = [], [], [], [], []
    for it in items:
        v = torch.as_tensor(it["video"])
        r = v.shape[0] if v.dim() == 5 else 1
        videos.append(v if r > 1 or v.dim() == 5 else v.unsqueeze(0))
        m = it.get("motion")
        motions.append(None if m is None else (torch.as_tensor(m) if r > 1 or m.dim() == 5
                                                else torch.as_tensor(m).unsqueeze(0)))
        labels += [int(it["label"])] * r
        index += [int(it["index"])] * r
        clip += list(range(r))
    motion = None
    if any(m is not None for m in motions):
        ref = next(m for m in motions if m is not None)
        motion = _cat_rows([m if m is not None else torch.zeros(v.shape[0], *ref.shape[1:])
                            for m, v in zip(motions, videos)])
    return {"video": _cat_rows(videos), "motion": motion, "label": torch.tensor(labels, dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long), "clip": torch.tensor(clip, dtype=torch.long),
            "failed": [f for it in items for f in it.get("failed") or []]}


def _cat_rows(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors)``; in a DataLoader worker straight into shared memory, as torch's
    ``default_collate`` does: otherwise the worker copies the batch (38 MB for four 16x224 clips)
    into shared memory once more to send it."""
    if torch.utils.data.get_worker_info() is None:
        return torch.cat(tensors)
    first = tensors[0]
    shape = (sum(t.shape[0] for t in tensors), *first.shape[1:])
    storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
    return torch.cat(tensors, out=first.new(storage).resize_(shape))


def collate_items(items: list[dict]) -> dict:
    """:func:`stack_items` for loaders without masks (probes, evaluation)."""
    return stack_items(items)
