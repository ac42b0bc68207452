"""The built-in synthetic motion dataset: the class is the motion, never the appearance.

Every clip shows one textured object over a textured background, seen by a camera that pans
slowly (0-1 px/frame in a random direction; ``pan`` scales that, 0 is a fixed camera). The object's motion relative to the background is
the class: it moves right, left, up or down (1.5-3 px/frame at 64 px, scaled with ``size``),
rotates clockwise or counter-clockwise (its outline moving 1.5-3 px/frame), or approaches
(grows about 4x over the clip) or recedes (shrinks as much). Shape, size, colours, textures, pan
and start position are drawn afresh for each clip, so appearance alone cannot give the class.

Everything is rendered with numpy on whole ``[F, S, S]`` coordinate maps (no per-pixel Python):
the background is periodic 1/f noise sampled bilinearly at the panned coordinates, the object a
shape and a texture evaluated in its own rotated, scaled coordinates. Space wraps around, so an
object leaving one side re-enters at the other and stays in view. Clips are real H.264 files
written by :func:`mvm.data.video_io.encode_video`. A clip depends only on ``(seed, split, index)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mvm.data.video_io import encode_video

log = logging.getLogger(__name__)

CLASSES = ("right", "left", "up", "down", "rotate_cw", "rotate_ccw", "approach", "recede")
_DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_SPLITS = {"train": 0, "val": 1}


def _background(rng: np.random.Generator, size: int, camera: np.ndarray, contrast: float = 1.0) -> np.ndarray:
    """``[F, size, size, 3]`` float32 colour texture in 0..255 seen through the camera.

    The texture is periodic 1/f^beta noise made in the Fourier domain, so frame ``t`` (the texture
    at ``pixel + camera[t]``) is an exact sub-pixel shift: a phase ramp on the spectrum.
    ``contrast`` scales the texture around the mean colour (0: a flat colour) after every random
    draw, so the rest of the clip is the same at every value.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amp = f ** -rng.uniform(0.8, 1.8)
    amp[0, 0] = 0.0
    spec = amp * (rng.normal(size=(2, *amp.shape)) + 1j * rng.normal(size=(2, *amp.shape)))
    ramp = (np.exp(2j * np.pi * fx[None] * camera[:, 0, None, None])
            * np.exp(2j * np.pi * fy[None] * camera[:, 1, None, None]))  # [F, S, S/2+1]
    noise = np.fft.irfft2(spec[None] * ramp[:, None], s=(size, size)).astype(np.float32)  # [F, 2, S, S]
    noise /= noise[0].std(axis=(1, 2))[:, None, None] + 1e-8  # unit contrast; a shift keeps the std
    base = rng.uniform(50, 205, 3).astype(np.float32)
    lum = np.float32(rng.uniform(18, 40) * contrast) * noise[:, 0, ..., None]
    chroma = (rng.uniform(5, 15) * contrast * rng.normal(size=3)).astype(np.float32) * noise[:, 1, ..., None]
    return np.clip(base + lum + chroma, 0, 255)


def _shape_distance(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A gauge that is 1 on the outline of shape ``kind`` (in object units), < 1 inside."""
    au, av = np.abs(u), np.abs(v)
    if kind == 0:  # square
        return np.maximum(au, av) * 1.2
    if kind == 1:  # triangle
        return np.maximum(np.maximum(-v, 0.866 * u + 0.5 * v), -0.866 * u + 0.5 * v) * 1.9
    if kind == 2:  # ellipse
        return np.sqrt(u * u + (v / 0.6) ** 2)
    if kind == 3:  # plus sign
        return np.minimum(np.maximum(au, av / 0.4), np.maximum(au / 0.4, av))
    if kind == 4:  # diamond
        return au + av
    return np.maximum(au, av / 0.55)  # bar


def _trajectory(label: str, rng: np.random.Generator, frames: int, size: int,
                pan_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Per-frame object centre (screen, before wrapping), angle, radius, and the camera pan."""
    t = np.arange(frames, dtype=np.float64)
    k = size / 64.0
    pan = rng.uniform(0.0, 1.0) * pan_scale * k * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    speed = rng.uniform(1.5, 3.0) * k
    centre0 = rng.uniform(0.3, 0.7, 2) * size
    angle = np.full(frames, rng.uniform(0, 2 * np.pi))
    radius = np.full(frames, rng.uniform(0.15, 0.22) * size)
    world = np.repeat(centre0[None], frames, 0)
    if label in _DIRECTIONS:
        world = world + np.outer(t, _DIRECTIONS[label]) * speed
    elif label.startswith("rotate"):
        # y points down, so a growing angle turns clockwise on screen
        angle = angle + (1 if label == "rotate_cw" else -1) * speed / radius[0] * t
    else:
        small, large = rng.uniform(0.07, 0.1) * size, rng.uniform(0.3, 0.36) * size
        grow = (large / small) ** (t / max(frames - 1, 1))
        radius = small * grow if label == "approach" else large / grow
    camera = np.outer(t, pan)
    return {"centre": world - camera, "angle": angle, "radius": radius, "camera": camera}


def render_clip(label: int, rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, dict]:
    """One clip of class ``label``.

    Returns:
        ``[frames, size, size, 3]`` uint8, and metadata: per frame the object centre (wrapped
        into the frame), radius and bounding box ``[x0, y0, x1, y1]`` (may cross the border, where
        the object wraps around).
    """
    video, meta, _ = render_clip_with_mask(label, rng, frames, size)
    return video, meta


def render_clip_with_mask(label: int, rng: np.random.Generator, frames: int, size: int, pan: float = 1.0,
                          background_contrast: float = 1.0) -> tuple[np.ndarray, dict, np.ndarray]:
    """:func:`render_clip` plus the object's per-frame mask ``[frames, size, size]`` bool (its
    coverage > 1/2, so the soft one-pixel edge splits evenly). ``pan`` scales the camera's pan,
    ``background_contrast`` the background texture's contrast (the same random draws at every
    value, so only the camera speed, or the background's texture, changes)."""
    traj = _trajectory(CLASSES[label], rng, frames, size, pan)
    video = _background(rng, size, traj["camera"], background_contrast)  # [F, S, S, 3]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    # Object coordinates: offset from the (wrapped) centre, rotated back and scaled to units.
    centre = (traj["centre"] % size).astype(np.float32)
    half = size / 2
    dx = (xs[None] - centre[:, 0, None, None] + half) % size - half
    dy = (ys[None] - centre[:, 1, None, None] + half) % size - half
    angle, r = traj["angle"].astype(np.float32), traj["radius"].astype(np.float32)[:, None, None]
    cos, sin = np.cos(angle)[:, None, None] / r, np.sin(angle)[:, None, None] / r
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    gauge = _shape_distance(int(rng.integers(6)), u, v)
    alpha = np.clip((1.0 - gauge) * r + 0.5, 0.0, 1.0)[..., None]  # about one pixel of soft edge
    # Texture fixed to the object: stripes and a checker in object units plus coarse noise.
    a = rng.uniform(0, np.pi)
    stripes = np.sin(rng.uniform(4, 9) * (u * np.cos(a) + v * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    checker = np.sign(np.sin(rng.uniform(3, 6) * u) * np.sin(rng.uniform(3, 6) * v))
    cells = rng.normal(size=(8, 8)).astype(np.float32)
    iu, iv = np.clip((u + 1) * 4, 0, 7).astype(np.int64), np.clip((v + 1) * 4, 0, 7).astype(np.int64)
    noise = np.take(cells, iu * 8 + iv)
    pattern = np.clip(0.5 + 0.25 * stripes + 0.15 * checker + 0.1 * noise, 0, 1)[..., None]
    bg_mean = video[0].reshape(-1, 3).mean(0)
    d1, d2 = rng.normal(size=(2, 3))
    c1 = np.clip(bg_mean + d1 / np.linalg.norm(d1) * rng.uniform(80, 130), 0, 255)  # stands out
    c2 = np.clip(c1 + d2 / np.linalg.norm(d2) * rng.uniform(50, 100), 0, 255)  # texture contrast
    c1, c2 = c1.astype(np.float32), (c2 - c1).astype(np.float32)
    video += alpha * (c1 + c2 * pattern - video)  # every term stays in 0..255
    extent = traj["radius"] * 1.25  # the shapes' farthest outline point, in units of the radius
    bbox = np.stack([centre[:, 0] - extent, centre[:, 1] - extent,
                     centre[:, 0] + extent, centre[:, 1] + extent], axis=1)
    meta = {"centre": np.round(centre, 2).tolist(), "radius": np.round(traj["radius"], 2).tolist(),
            "bbox": np.round(bbox, 2).tolist()}
    return (video + 0.5).astype(np.uint8), meta, alpha[..., 0] > 0.5


def recorded_args(args: dict) -> dict:
    """``make_synthetic``'s arguments as ``synth.json`` records them: options at their defaults
    (``object_masks`` off, ``pan`` and ``background_contrast`` 1) are left out, so sets made before
    the options compare equal."""
    out = {k: v for k, v in args.items() if k not in ("object_masks", "pan", "background_contrast", "workers")}
    if args.get("object_masks"):
        out["object_masks"] = True
    for key in ("pan", "background_contrast"):
        if args.get(key, 1.0) != 1.0:
            out[key] = args[key]
    return out


def object_mask_path(video_path: str | os.PathLike) -> Path:
    """Where ``--object-masks`` writes a clip's mask: ``NNNNN.mp4`` -> ``NNNNN.mask.npz``."""
    p = Path(video_path)
    return p.with_name(p.stem + ".mask.npz")


def load_object_mask(video_path: str | os.PathLike) -> np.ndarray:
    """The per-frame object mask ``[frames, size, size]`` bool written beside ``video_path``.

    Raises:
        FileNotFoundError: naming the mask file, when the set was made without ``object_masks``.
    """
    path = object_mask_path(video_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no object mask (make the set with `mvm synth --object-masks`)")
    with np.load(path) as z:
        return z["mask"].astype(bool)


def _make_clip(job: tuple) -> dict:
    """Render and encode one clip (runs in a worker process when ``workers > 1``)."""
    out_dir, split, index, label, frames, size, seed, gop, bframes, refs, object_masks, pan, contrast = job
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    video, meta, mask = render_clip_with_mask(label, rng, frames, size, pan, contrast)
    rel = f"{split}/{index:05d}.mp4"
    encode_video(Path(out_dir) / rel, video, gop=gop, bframes=bframes, refs=refs)
    if object_masks:
        np.savez_compressed(object_mask_path(Path(out_dir) / rel), mask=mask)
    return {"path": rel, "label": label, "class": CLASSES[label], **meta}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_synthetic(
    out_dir: str | os.PathLike,
    clips: int = 800,
    val_clips: int = 160,
    frames: int = 32,
    size: int = 64,
    seed: int = 0,
    gop: int = 16,
    bframes: int = 0,
    refs: int = 1,
    object_masks: bool = False,
    workers: int = 1,
    pan: float = 1.0,
    background_contrast: float = 1.0,
) -> dict:
    """Write the synthetic set into ``out_dir``.

    Layout: ``train/NNNNN.mp4``, ``val/NNNNN.mp4``, ``train.csv`` / ``val.csv`` (VideoMAE format:
    ``relative/path.mp4 label`` per line, space separated), ``classes.txt``, ``synth.json`` (the
    arguments and counts) and ``train_meta.json`` / ``val_meta.json`` (per clip, per frame: the
    object centre, radius and bounding box). Clip ``i`` of a split has label ``i % 8`` (balanced).
    With ``object_masks``, each clip's per-frame object mask goes beside it as ``NNNNN.mask.npz``
    (key ``mask``, ``[frames, size, size]`` bool; :func:`load_object_mask`).
    ``pan`` scales the camera pan (1: 0-1 px/frame at 64 px, the default; 0: a fixed camera, as
    in surveillance footage); ``background_contrast`` scales the background texture's contrast (1: the
    default; 0: a flat colour, so the object is all the clip's content). The list files are written last, so their presence means the set is complete.

    Returns:
        a summary dict (out_dir, counts, classes, seconds, bytes).
    """
    if clips < 1 or val_clips < 0 or frames < 1 or size < 8:
        raise ValueError(f"need clips >= 1, val_clips >= 0, frames >= 1, size >= 8; got clips={clips}, "
                         f"val_clips={val_clips}, frames={frames}, size={size}")
    if size % 2:
        raise ValueError(f"size must be even for H.264 (yuv420p), got {size}")
    if pan < 0:
        raise ValueError(f"pan must be >= 0, got {pan}")
    if background_contrast < 0:
        raise ValueError(f"background_contrast must be >= 0, got {background_contrast}")
    if gop < 1 or bframes < 0 or refs < 1:
        raise ValueError(f"need gop >= 1, bframes >= 0, refs >= 1; got gop={gop}, bframes={bframes}, refs={refs}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"{out_dir} is a file; OUT_DIR must be a folder (created if absent)")
    t0 = time.perf_counter()
    out = Path(out_dir)
    jobs: dict[str, list[tuple]] = {}
    for split, n in (("train", clips), ("val", val_clips)):
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs[split] = [(str(out), split, i, i % len(CLASSES), frames, size, seed, gop, bframes, refs,
                        object_masks, pan, background_contrast)
                       for i in range(n)]
    every = jobs["train"] + jobs["val"]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_make_clip, every, chunksize=8))
    else:
        results = [_make_clip(job) for job in every]
    by_split = {"train": results[:clips], "val": results[clips:]}
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    args = recorded_args({"clips": clips, "val_clips": val_clips, "frames": frames, "size": size, "seed": seed,
                          "gop": gop, "bframes": bframes, "refs": refs, "object_masks": object_masks, "pan": pan,
                          "background_contrast": background_contrast})
    summary = {"out_dir": str(out), "train": clips, "val": val_clips, "classes": list(CLASSES),
               "frames": frames, "size": size,
               "bytes": sum((out / r["path"]).stat().st_size for r in results)}
    for split, rows in by_split.items():
        _write_atomic(out / f"{split}_meta.json", json.dumps(rows))
    _write_atomic(out / "synth.json", json.dumps({"args": args, **summary}, indent=1))
    for split, rows in by_split.items():
        _write_atomic(out / f"{split}.csv", "".join(f"{r['path']} {r['label']}\n" for r in rows))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("synthetic set: %d train + %d val clips of %dx%dx%d in %s (%.1f s)",
             clips, val_clips, frames, size, size, out, summary["seconds"])
    return summary
