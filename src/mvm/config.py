"""Typed, nested run configuration.

Presets are TOML files (``configs/*.toml``, also shipped inside the package); ``--set a.b=v``
overrides any field. Unknown keys, wrong types and impossible values are refused before any work
starts, and every message names the key (``mask.ratio``, ``data.frames``...).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


@dataclass
class DataConfig:
    train: str = ""
    """List file (``path label`` per line, VideoMAE format; ``.csv`` or ``.txt``) or a folder of
    videos. Empty: generate the built-in synthetic set into ``synth_dir``."""
    val: str = ""
    """Validation list or folder, used by the probes. Empty with synthetic data: its val split."""
    root: str = ""
    """Prefix for relative paths in the list files (default: the list file's folder)."""
    format: str = ""
    """Annotation format (videomae, folder, ucf101, hmdb51, kinetics, ssv2, diving48, epic100);
    empty: detected from the source (``mvm.data.formats``)."""
    repeat: int = 1
    """Clips cut from each decoded video, each with its own crop and mask (MAE-ST / VideoMAE V2
    repeated sampling); a batch of ``optim.batch_size`` clips then holds ``batch_size / repeat`` videos."""
    repeat_mode: str = "frames"
    """How repeated clips differ: ``frames`` (VideoMAE V2's ``num_sample``: the same frames, each
    repeat its own crop, flip and mask: one decode serves all) or ``clips`` (MAE-ST: each repeat also
    its own start, so decoding covers all of them)."""
    num_classes: int = 0
    """Number of classes; labels outside [0, num_classes) are bad samples. 0: not checked."""
    synth_dir: str = ".cache/mvm/synth"
    """Where the built-in synthetic set is generated when ``train`` is empty."""
    frames: int = 16
    """Frames per clip."""
    stride: int = 4
    """Temporal stride between sampled frames."""
    size: int = 224
    """Square crop side in pixels."""
    scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    """Multi-scale crop: candidate crop sides as fractions of the short side (VideoMAE)."""
    flip: bool = True
    """Random horizontal flip when training (turn off for direction-sensitive data such as SSv2)."""
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    motion: str = "auto"
    """Motion source: auto (codec vectors, else estimated), codec, estimate, none."""
    motion_frames: str = "all"
    """Codec motion of B-frame streams: ``all`` decodes every frame of a clip's span for its
    vectors; ``references`` skips the frames no other frame refers to (most B-frames) that the
    clip does not show, and fills their motion from their neighbours (docs/motion.md)."""
    workers: int = 2
    """DataLoader worker processes (0: load in the main process)."""
    cache_mb: float = 0.0
    """Per-process memory for decoded videos (``mvm.data.cache``): > 0 decodes each file once per
    DataLoader worker and keeps it, for data sets that fit in RAM. 0: decode on every draw."""
    max_bad_fraction: float = 0.1
    """Stop the run when more than this share of the samples drawn so far failed to load."""


@dataclass
class ModelConfig:
    name: str = "tiny"
    """Named size: tiny, small, base, large, huge, giant (see ``mvm.models.variants``)."""
    tubelet: int = 2
    patch: int = 16
    drop_path: float = 0.0
    checkpointing: bool = False
    """Activation checkpointing in encoder and decoder blocks: recompute activations in the
    backward pass, trading about a third more compute for memory (long clips)."""
    recompute_chunks: int = 0
    """With checkpointing, > 0 recomputes each block in pieces in the backward pass (the attention
    in up to this many head groups, the MLP in this many token chunks), so only one piece's
    activations are held at a time: a lower peak for one more forward of each block
    (docs/benchmarks.md, "Long clips")."""


@dataclass
class MaskConfig:
    encoder: str = "tube"
    """Encoder mask strategy (registry name: random, frame_random, tube, smm, mgm, ...)."""
    ratio: float = 0.9
    """Share of tokens hidden from the encoder."""
    decoder: str = "none"
    """Decoder mask strategy (none, random, running_cell, ...)."""
    decoder_ratio: float = 0.5
    """Share of all tokens the decoder reconstructs (ignored by ``none``)."""
    motion_share: float = 0.5
    """MGM: share of the encoder's masking budget spent on the motion-following region."""


@dataclass
class OptimConfig:
    batch_size: int = 8
    base_lr: float = 1.5e-4
    """Learning rate for a batch of 256; the run uses ``base_lr * batch_size * accum / 256``."""
    min_lr: float = 1e-5
    warmup_steps: int = 40
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    clip_grad: float = 0.02
    """Gradient norm clip (0 turns it off). VideoMAE pretraining uses 0.02 for ViT-B and larger."""
    accum_steps: int = 1


@dataclass
class TrainConfig:
    steps: int = 1000
    out: str = "runs/pretrain"
    seed: int = 0
    target: str = "norm_pix"
    """Reconstruction target: norm_pix (VideoMAE), pixel, or tokens (LVMAE: the FSQ codes of the
    tokenizer in ``train.tokenizer``, factorised cross-entropy over its levels)."""
    tokenizer: str = ""
    """A ``mvm tokenizer train`` run folder: its frozen tokenizer gives the token targets and the
    scores of ``mask.decoder = "adaptive"``. Its tubelet and patch must be the model's."""
    motion_weight: float = 0.0
    """Weight of the codec-motion target (ours): > 0 adds a linear head on the encoder that predicts
    the motion of every visible token, read from the codec's motion vectors while decoding; the
    loss is ``reconstruction + motion_weight * motion MSE``. 0: plain VideoMAE."""
    motion_scale: float = 2.0
    """Pixels per frame that count as 1 in the motion target (keeps it of order one)."""
    bf16: bool = False
    """bf16 autocast (pays on CPU too: ~3x the fp32 matmul rate here)."""
    device: str = "auto"
    """auto (this rank's GPU if any, else CPU), cpu, cuda, cuda:N."""
    parallel: str = "ddp"
    """Under torchrun: ddp (replicated weights) or fsdp (FSDP2 ``fully_shard``, sharded weights)."""
    log_every: int = 10
    ckpt_every: int = 200
    keep_ckpts: int = 2
    probe: bool = True
    """Run the kNN probe (pretrained vs random init) at the end."""
    max_nonfinite: int = 5
    """Stop after this many consecutive non-finite losses or gradients."""
    threads: int = 0
    """torch intra-op threads (0: torch's default)."""
    eval_every: int = 0
    """Validate every this many steps (jobs that validate, e.g. fine-tuning); 0: only at the end."""
    compile: bool = False
    """``torch.compile`` the model (see docs/benchmarks.md for when it pays)."""


@dataclass
class SynthConfig:
    """The built-in synthetic motion set (`mvm synth`), generated when `data.train` is empty."""

    clips: int = 800
    val_clips: int = 160
    frames: int = 32
    size: int = 64
    seed: int = 0
    gop: int = 16
    bframes: int = 0
    refs: int = 1
    pan: float = 1.0
    """Scale of the camera pan (1: 0-1 px/frame at 64 px; 0: a fixed camera, as in surveillance)."""
    background_contrast: float = 1.0
    """Scale of the background texture's contrast (1: 1/f noise; 0: a flat colour)."""


@dataclass
class FinetuneConfig:
    """Fine-tuning a classifier on an encoder (``mvm finetune``): VideoMAE's recipe by default."""

    init: str = ""
    """Checkpoint to start from: an mvm run folder (newest checkpoint), checkpoint folder or
    ``.safetensors``, a transformers VideoMAE folder, an original VideoMAE ``.pth``. Empty: from scratch."""
    layer_decay: float = 0.75
    """Layer-wise lr decay: block i gets ``layer_decay ** (depth - i)``, the embedding
    ``layer_decay ** (depth + 1)``, the head 1 (1.0 turns it off)."""
    label_smoothing: float = 0.1
    mixup: float = 0.8
    """Mixup Beta(alpha, alpha) (0: off)."""
    cutmix: float = 1.0
    """Cutmix Beta(alpha, alpha) (0: off)."""
    mixup_prob: float = 1.0
    """Probability of mixing a batch at all."""
    mixup_switch_prob: float = 0.5
    """With both on, probability of cutmix rather than mixup for a batch."""
    randaug_ops: int = 4
    """RandAugment operations per clip, the same for every frame (0: off). VideoMAE: 4."""
    randaug_magnitude: float = 7.0
    """RandAugment magnitude in [0, 10]. VideoMAE: 7 (timm ``rand-m7-n4-mstd0.5-inc1``)."""
    randaug_std: float = 0.5
    """Std of the per-op jitter of the magnitude."""
    ema: bool = False
    """Keep an exponential moving average of the weights (validated too, saved as ema.safetensors)."""
    ema_decay: float = 0.9999
    head_dropout: float = 0.0
    """Dropout before the linear head."""
    head_init_scale: float = 0.001
    """The head's initial weights (trunc. normal, std 0.02) are multiplied by this (VideoMAE 0.001)."""
    val_views: str = "1x1"
    """Views (CLIPSxCROPS) of the periodic validation; ``mvm evaluate`` does the full multi-view test."""


@dataclass
class TokenizerConfig:
    """The LVMAE video tokenizer (``mvm tokenizer train``); tubelet and patch come from ``model``."""

    size: str = "tiny"
    """Named size: tiny (CPU), base (MAGVIT-v1 base widths, GPU) or small (base's widths after a 4x4
    patchify stem: about 1/16 of base's FLOPs at 224 px, GPU); see ``mvm.tokenizer.model``."""
    quantizer: str = "fsq"
    """fsq (finite scalar quantisation) or lfq (lookup-free: levels must all be 2, one bit each)."""
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    """Quantiser levels per code dimension; the codebook has their product entries."""
    budget: float = 0.15
    """Share of the tokens the differentiable top-k keeps (LVMAE's decoder budget)."""
    temperature: float = 0.5
    """Width of the top-k's sigmoid surrogate, in standard deviations of a clip's scores."""
    all_weight: float = 1.0
    """Weight of the reconstruction from every token next to the one from the top-k alone."""
    topk_after: int = 0
    """Steps of reconstruction from every token alone before the top-k's reconstruction joins the
    loss (0: from the start). The scorer is then trained against a decoder that can already
    reconstruct, not one that is still learning the clip's colours."""
    motion_weight: float = 0.0
    """Weight of a loss on frame-to-frame differences, added to each reconstruction's pixel MSE:
    ``MSE(recon[t+1] - recon[t], clip[t+1] - clip[t])``. A static background has (nearly) no
    temporal difference, so this term is paid for what moves: it tells the scorer that dropping a
    moving object costs more than dropping a place seen, unchanged, at another time (0: pixels only)."""
    noise: float = 0.0
    """Gumbel noise on the standardised scores before the top-k, in training only (0: none), so
    tokens ranked just below the cut are tried now and then (see ``mvm.tokenizer.topk``)."""
    attention_blocks: int = 0
    """Self-attention blocks over the whole latent grid in the decoder, so kept content can be
    carried to any time slice of a long clip (0: 3x3x3 convolutions only, about +-10 slices)."""
    scorer_attention: int = 0
    """The same in the scorer, so it can weigh a token against the whole clip (e.g. keep a static
    place once rather than at every time slice)."""
    eval_clips: int = 64
    """Validation clips for PSNR (all / top-k / random-k) and the object hit rate."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading and overriding


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from TOML or a ``--set`` string) to the field type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(key, value, args[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _section_types(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def apply_dict(cfg: Config, values: dict[str, Any], where: str = "") -> Config:
    """Merge a nested dict (as read from TOML) into ``cfg``; unknown keys are errors."""
    for section, body in values.items():
        if not hasattr(cfg, section) or not dataclasses.is_dataclass(getattr(cfg, section)):
            raise ConfigError(f"{where}unknown section '{section}'; known: {', '.join(_sections())}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}'{section}' must be a table of keys")
        for key, value in body.items():
            set_value(cfg, f"{section}.{key}", value, where)
    return cfg


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def set_value(cfg: Config, dotted: str, value: Any, where: str = "") -> None:
    """Set ``section.key`` to ``value`` (converted to the field's type)."""
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{where}'{dotted}': keys look like section.key, e.g. mask.ratio")
    section, key = parts
    if section not in _sections():
        raise ConfigError(f"{where}unknown section '{section}' in '{dotted}'; known: {', '.join(_sections())}")
    sec = getattr(cfg, section)
    hints = _section_types(sec)
    if key not in hints:
        raise ConfigError(f"{where}unknown key '{dotted}'; {section} has: {', '.join(hints)}")
    setattr(sec, key, _coerce(dotted, value, hints[key]))


def parse_override(text: str) -> tuple[str, str]:
    """``"a.b=v"`` -> ``("a.b", "v")``."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected section.key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def preset_path(name: str) -> Path:
    """A preset by name (``tiny-synthetic``) or a path to a TOML file."""
    p = Path(name)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    res = resources.files("mvm") / "presets" / f"{name}.toml"
    if not res.is_file():
        names = sorted(x.name[:-5] for x in (resources.files("mvm") / "presets").iterdir() if x.name.endswith(".toml"))
        raise ConfigError(f"unknown preset '{name}'; known: {', '.join(names)}")
    return Path(str(res))


def load_config(config: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the TOML file or preset ``config``, then ``section.key=value`` overrides; validated."""
    cfg = Config()
    if config:
        path = preset_path(config)
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
        apply_dict(cfg, data, where=f"{path}: ")
    for item in overrides:
        key, value = parse_override(item)
        set_value(cfg, key, value, where="--set ")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Refuse impossible values, naming the key."""
    d, m, k, o, t = cfg.data, cfg.model, cfg.mask, cfg.optim, cfg.train

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    need(d.frames > 0, "data.frames", f"must be positive, got {d.frames}")
    need(m.tubelet > 0, "model.tubelet", f"must be positive, got {m.tubelet}")
    need(m.patch > 0, "model.patch", f"must be positive, got {m.patch}")
    need(d.frames % m.tubelet == 0, "data.frames", f"{d.frames} is not divisible by model.tubelet={m.tubelet}")
    need(d.size > 0 and d.size % m.patch == 0, "data.size", f"{d.size} is not divisible by model.patch={m.patch}")
    need(d.stride >= 1, "data.stride", f"must be >= 1, got {d.stride}")
    need(all(0 < s <= 1 for s in d.scales) and d.scales, "data.scales", f"must lie in (0, 1], got {d.scales}")
    need(len(d.mean) == 3 and len(d.std) == 3, "data.mean", "mean and std need 3 values (RGB)")
    need(all(s > 0 for s in d.std), "data.std", f"must be positive, got {d.std}")
    need(d.motion in ("auto", "codec", "estimate", "none"), "data.motion",
         f"must be auto, codec, estimate or none, got '{d.motion}'")
    need(d.num_classes >= 0, "data.num_classes", f"must be >= 0, got {d.num_classes}")
    need(d.cache_mb >= 0, "data.cache_mb", f"must be >= 0, got {d.cache_mb}")
    need(d.workers >= 0, "data.workers", f"must be >= 0, got {d.workers}")
    need(d.repeat >= 1, "data.repeat", f"must be >= 1, got {d.repeat}")
    need(d.repeat_mode in ("frames", "clips"), "data.repeat_mode", f"must be frames or clips, got '{d.repeat_mode}'")
    need(d.motion_frames in ("all", "references"), "data.motion_frames",
         f"must be all or references, got '{d.motion_frames}'")
    need(o.batch_size % d.repeat == 0, "optim.batch_size",
         f"{o.batch_size} clips is not a multiple of data.repeat={d.repeat}")
    need(t.eval_every >= 0, "train.eval_every", f"must be >= 0, got {t.eval_every}")
    need(0 <= d.max_bad_fraction <= 1, "data.max_bad_fraction", f"must be in [0, 1], got {d.max_bad_fraction}")
    need(0 < k.ratio < 1, "mask.ratio", f"must be in (0, 1), got {k.ratio}")
    need(0 < k.decoder_ratio <= 1, "mask.decoder_ratio", f"must be in (0, 1], got {k.decoder_ratio}")
    need(0 <= k.motion_share <= 1, "mask.motion_share", f"must be in [0, 1], got {k.motion_share}")
    need(0 <= m.drop_path < 1, "model.drop_path", f"must be in [0, 1), got {m.drop_path}")
    need(m.recompute_chunks >= 0, "model.recompute_chunks", f"must be >= 0, got {m.recompute_chunks}")
    need(m.recompute_chunks == 0 or m.checkpointing, "model.recompute_chunks",
         "acts only under activation checkpointing: set model.checkpointing = true too")
    need(o.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {o.batch_size}")
    need(o.accum_steps >= 1, "optim.accum_steps", f"must be >= 1, got {o.accum_steps}")
    need(o.base_lr > 0, "optim.base_lr", f"must be positive, got {o.base_lr}")
    need(o.min_lr >= 0, "optim.min_lr", f"must be >= 0, got {o.min_lr}")
    need(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", f"need two values in [0, 1), got {o.betas}")
    need(o.clip_grad >= 0, "optim.clip_grad", f"must be >= 0, got {o.clip_grad}")
    need(t.parallel in ("ddp", "fsdp"), "train.parallel", f"must be ddp or fsdp, got '{t.parallel}'")
    need(t.steps >= 1, "train.steps", f"must be >= 1, got {t.steps}")
    need(t.target in ("norm_pix", "pixel", "tokens"), "train.target",
         f"must be norm_pix, pixel or tokens, got '{t.target}'")
    need(t.target != "tokens" or bool(t.tokenizer), "train.tokenizer",
         "train.target = tokens needs a tokenizer run folder (mvm tokenizer train)")
    need(k.decoder != "adaptive" or bool(t.tokenizer), "train.tokenizer",
         "mask.decoder = adaptive needs a tokenizer run folder for its scores (mvm tokenizer train)")
    tk = cfg.tokenizer
    need(tk.size in ("tiny", "base", "small"), "tokenizer.size", f"must be tiny, base or small, got '{tk.size}'")
    need(tk.quantizer in ("fsq", "lfq"), "tokenizer.quantizer", f"must be fsq or lfq, got '{tk.quantizer}'")
    need(bool(tk.levels) and all(v >= 2 for v in tk.levels), "tokenizer.levels", f"need values >= 2, got {tk.levels}")
    need(tk.quantizer != "lfq" or all(v == 2 for v in tk.levels), "tokenizer.levels",
         f"LFQ codes are bits: every level must be 2, got {tk.levels}")
    need(0 < tk.budget <= 1, "tokenizer.budget", f"must be in (0, 1], got {tk.budget}")
    need(tk.temperature > 0, "tokenizer.temperature", f"must be positive, got {tk.temperature}")
    need(tk.all_weight >= 0, "tokenizer.all_weight", f"must be >= 0, got {tk.all_weight}")
    need(tk.motion_weight >= 0, "tokenizer.motion_weight", f"must be >= 0, got {tk.motion_weight}")
    need(tk.noise >= 0, "tokenizer.noise", f"must be >= 0, got {tk.noise}")
    need(tk.topk_after >= 0, "tokenizer.topk_after", f"must be >= 0, got {tk.topk_after}")
    need(tk.topk_after == 0 or tk.all_weight > 0, "tokenizer.topk_after",
         "needs tokenizer.all_weight > 0 (before it only the reconstruction from every token is trained)")
    need(cfg.synth.pan >= 0, "synth.pan", f"must be >= 0, got {cfg.synth.pan}")
    need(cfg.synth.background_contrast >= 0, "synth.background_contrast",
         f"must be >= 0, got {cfg.synth.background_contrast}")
    need(tk.eval_clips >= 1, "tokenizer.eval_clips", f"must be >= 1, got {tk.eval_clips}")
    need(t.motion_weight >= 0, "train.motion_weight", f"must be >= 0, got {t.motion_weight}")
    need(t.motion_scale > 0, "train.motion_scale", f"must be positive, got {t.motion_scale}")
    need(t.motion_weight == 0 or d.motion != "none", "train.motion_weight",
         "the motion target needs motion: set data.motion to auto, codec or estimate, or motion_weight to 0")
    need(t.ckpt_every >= 1, "train.ckpt_every", f"must be >= 1, got {t.ckpt_every}")
    need(t.log_every >= 1, "train.log_every", f"must be >= 1, got {t.log_every}")
    need(t.keep_ckpts >= 1, "train.keep_ckpts", f"must be >= 1, got {t.keep_ckpts}")
    need(t.max_nonfinite >= 1, "train.max_nonfinite", f"must be >= 1, got {t.max_nonfinite}")
    # Names resolved against the registries, so a typo fails now rather than at step 0.
    from mvm.masking import DECODER_MASKS, ENCODER_MASKS
    from mvm.models.variants import VARIANTS

    need(m.name in VARIANTS, "model.name", f"unknown size '{m.name}'; known: {', '.join(VARIANTS)}")
    need(k.encoder in ENCODER_MASKS, "mask.encoder", f"unknown strategy '{k.encoder}'; known: {', '.join(ENCODER_MASKS.names())}")
    need(k.decoder in DECODER_MASKS, "mask.decoder", f"unknown strategy '{k.decoder}'; known: {', '.join(DECODER_MASKS.names())}")
    _validate_finetune(cfg.finetune)


def _validate_finetune(f: FinetuneConfig) -> None:
    """The ``[finetune]`` section's checks, naming the key."""
    import re

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"finetune.{key}: {msg}")

    need(0 < f.layer_decay <= 1, "layer_decay", f"must be in (0, 1], got {f.layer_decay}")
    need(0 <= f.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {f.label_smoothing}")
    need(f.mixup >= 0 and f.cutmix >= 0, "mixup", f"mixup and cutmix alphas must be >= 0, got {f.mixup}, {f.cutmix}")
    need(0 <= f.mixup_prob <= 1, "mixup_prob", f"must be in [0, 1], got {f.mixup_prob}")
    need(0 <= f.mixup_switch_prob <= 1, "mixup_switch_prob", f"must be in [0, 1], got {f.mixup_switch_prob}")
    need(f.randaug_ops >= 0, "randaug_ops", f"must be >= 0, got {f.randaug_ops}")
    need(0 <= f.randaug_magnitude <= 10, "randaug_magnitude", f"must be in [0, 10], got {f.randaug_magnitude}")
    need(f.randaug_std >= 0, "randaug_std", f"must be >= 0, got {f.randaug_std}")
    need(0 <= f.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {f.ema_decay}")
    need(0 <= f.head_dropout < 1, "head_dropout", f"must be in [0, 1), got {f.head_dropout}")
    need(f.head_init_scale > 0, "head_init_scale", f"must be positive, got {f.head_init_scale}")
    need(re.fullmatch(r"[1-9]\d*[xX][1-9]\d*", f.val_views) is not None, "val_views",
         f"must look like CLIPSxCROPS (e.g. 1x1, 5x3), got {f.val_views!r}")


def to_toml(cfg: Config) -> str:
    """Serialise a config as TOML (saved into every run folder)."""
    lines: list[str] = []
    for section, body in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
