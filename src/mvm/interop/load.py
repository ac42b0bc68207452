"""Model specs, safe weight reading and ``load_model(path)``.

A :class:`ModelSpec` is everything needed to rebuild an mvm model from weights: most of it is read
off tensor shapes, the rest (head counts, LayerNorm epsilons) comes from a config or from the
spec mvm writes next to the weights. Files are read safely: safetensors, or ``.pth`` through
``torch.load(weights_only=True)`` (``argparse.Namespace``, which the original VideoMAE stores as
``args``, is the one extra class allowed); anything needing more is refused, naming the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvm.models import MaskedVideoAutoencoder, VideoClassifier, VideoEncoder
from mvm.models.variants import VARIANTS

log = logging.getLogger(__name__)

SPEC_KEY = "mvm_spec"


class InteropError(ValueError):
    """A file or model that cannot be converted; the message names the file or the reason."""


class UnsafeCheckpointError(InteropError):
    """A pickle that needs arbitrary Python objects to load; refused."""


@dataclass
class ModelSpec:
    """Architecture of an mvm model. ``kind``: ``pretrain``, ``classify`` or ``encoder``."""

    kind: str
    dim: int
    depth: int
    heads: int
    mlp_hidden: int
    tubelet: int
    patch: int
    in_chans: int = 3
    qkv_bias: bool = True
    init_values: float | None = None
    norm_eps: float = 1e-6
    final_norm: bool = True
    pos_grid: list[int] | None = None
    decoder_dim: int = 0
    decoder_depth: int = 0
    decoder_heads: int = 0
    decoder_mlp_hidden: int = 0
    out_dim: int = 0
    decoder_norm_eps: float = 1e-6
    head_norm_eps: float = 1e-6
    num_classes: int = 0
    fc_norm_eps: float = 1e-6
    motion_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def build_from_spec(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model of ``spec``'s architecture."""
    enc = VideoEncoder(spec.dim, spec.depth, spec.heads, spec.tubelet, spec.patch, in_chans=spec.in_chans,
                       norm_eps=spec.norm_eps, final_norm=spec.final_norm and spec.kind != "classify",
                       qkv_bias=spec.qkv_bias, mlp_hidden=spec.mlp_hidden, init_values=spec.init_values)
    if spec.pos_grid is not None:
        t, h, w = spec.pos_grid
        enc.use_learned_pos_embed(torch.zeros(1, t * h * w, spec.dim), (t, h, w))
    if spec.kind == "encoder":
        return enc
    if spec.kind == "classify":
        return VideoClassifier(enc, spec.num_classes, fc_norm_eps=spec.fc_norm_eps)
    if spec.kind == "pretrain":
        return MaskedVideoAutoencoder(enc, spec.decoder_dim, spec.decoder_depth, spec.decoder_heads,
                                      out_dim=spec.out_dim, decoder_mlp_hidden=spec.decoder_mlp_hidden,
                                      norm_eps=spec.decoder_norm_eps, head_norm_eps=spec.head_norm_eps,
                                      motion_dim=spec.motion_dim)
    raise InteropError(f"unknown model kind '{spec.kind}'")


def spec_from_model(model: nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` of an mvm model (autoencoder, classifier or bare encoder)."""
    enc = model if isinstance(model, VideoEncoder) else getattr(model, "encoder", None)
    if not isinstance(enc, VideoEncoder):
        raise InteropError(f"{type(model).__name__} is not an mvm model")
    spec = ModelSpec("encoder", enc.dim, enc.depth, enc.heads, enc.mlp_hidden, enc.tubelet, enc.patch,
                     enc.in_chans, enc.qkv_bias, enc.init_values, enc.norm_eps, enc.final_norm,
                     list(enc.pos_grid) if enc.pos_embed is not None else None)
    if isinstance(model, MaskedVideoAutoencoder):
        dec = model.decoder
        blk_eps = dec.blocks[0].norm1.eps if len(dec.blocks) else enc.norm_eps
        spec = dataclasses.replace(spec, kind="pretrain", decoder_dim=dec.dim, decoder_depth=dec.depth,
                                   decoder_heads=dec.heads, decoder_mlp_hidden=dec.mlp_hidden,
                                   out_dim=model.out_dim, decoder_norm_eps=blk_eps, head_norm_eps=dec.norm.eps,
                                   motion_dim=model.motion_dim)
    elif isinstance(model, VideoClassifier):
        spec = dataclasses.replace(spec, kind="classify", final_norm=False, num_classes=model.num_classes,
                                   fc_norm_eps=model.fc_norm.eps)
    return spec


# ---------------------------------------------------------------------------------------------
# Reading weights safely


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (``{"model": ...}``, ``{"module": ...}``, ``{"state_dict": ...}``),
    with a DDP ``module.`` prefix removed."""
    for key in ("model", "module", "state_dict", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InteropError("no tensor state dict found (looked at the top level and at model/module/state_dict)")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _checkpoint_kind(ckpt: Path) -> str | None:
    """The ``kind`` a training checkpoint folder's ``meta.json`` records (None when it records none)."""
    try:
        kind = json.loads((ckpt / "meta.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


#: How torch.save files begin: a zip archive (PyTorch >= 1.6), or a legacy pickle (protocol 2+).
_PTH_MAGIC = (b"PK\x03\x04", b"\x80")


def read_pth(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)``; a file that needs more than tensors and plain containers
    is refused with :class:`UnsafeCheckpointError`, one that is no torch.save file at all (a video, a
    text file) with :class:`InteropError` saying so."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError as e:
        raise InteropError(f"{path}: no such file") from e
    if not head.startswith(_PTH_MAGIC):
        raise InteropError(f"{path}: not a PyTorch checkpoint (expected a transformers folder, an mvm "
                           ".safetensors file, checkpoint or run folder, or an original VideoMAE .pth)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, FileNotFoundError):
            raise InteropError(f"{path}: no such file") from e
        text = str(e)
        found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", text)
        if found or "weights_only" in text.lower() or "weights only" in text.lower():
            what = found.group(1) if found else "objects other than tensors and plain containers"
            raise UnsafeCheckpointError(
                f"{path}: refused: loading it would need arbitrary pickled Python objects ({what}), which can "
                "run code. Only tensors, plain containers and argparse.Namespace are loaded (weights_only=True). "
                "If you trust the file, re-save just its state_dict (torch.save(sd, ...)) or convert it to "
                "safetensors.") from e
        raise InteropError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {text[:200]})") from e


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:
        raise InteropError(f"{path}: not a readable safetensors file ({e})") from e


# ---------------------------------------------------------------------------------------------
# Inferring a spec from mvm-layout weights (which are the original VideoMAE names)


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in sd if (m := pat.match(k))})


def default_heads(dim: int) -> int:
    """Heads of the named size with this width, else ``dim // 64`` (head width 64)."""
    for v in VARIANTS.values():
        if v.dim == dim:
            return v.heads
    return max(1, dim // 64)


def default_decoder_heads(dim: int, decoder_dim: int) -> int:
    """Decoder heads of the named size whose encoder (then any size whose decoder) fits; else ``decoder_dim // 64``."""
    for v in VARIANTS.values():
        if v.dim == dim and v.decoder_dim == decoder_dim:
            return v.decoder_heads
    for v in VARIANTS.values():
        if v.decoder_dim == decoder_dim:
            return v.decoder_heads
    return max(1, decoder_dim // 64)


def infer_spec(sd: dict[str, torch.Tensor], heads: int | None = None, decoder_heads: int | None = None,
               frames: int | None = None, size: int | None = None) -> ModelSpec:
    """Architecture of mvm-layout weights from their shapes (heads: given, else :func:`default_heads`).

    ``frames`` and ``size`` are needed only for a learned ``pos_embed`` (to lay its rows on a grid).
    """
    pfx = "encoder." if "encoder.patch_embed.proj.weight" in sd else ""
    if pfx + "patch_embed.proj.weight" not in sd:
        raise InteropError("no patch embedding (patch_embed.proj.weight) in the weights")
    dim, chans, tub, ph, pw = sd[pfx + "patch_embed.proj.weight"].shape
    if ph != pw:
        raise InteropError(f"non-square patches {ph}x{pw} are not supported")
    depth = _count(sd, pfx + "blocks.")
    kind = "pretrain" if "decoder.head.weight" in sd else "classify" if "head.weight" in sd else "encoder"
    b0 = pfx + "blocks.0."
    spec = ModelSpec(kind, dim, depth, heads or default_heads(dim),
                     sd[b0 + "mlp.fc1.weight"].shape[0] if depth else 4 * dim, tub, ph, chans,
                     qkv_bias=b0 + "attn.q_bias" in sd, init_values=1.0 if b0 + "gamma_1" in sd else None,
                     final_norm=pfx + "norm.weight" in sd)
    if pfx + "pos_embed" in sd:
        if not frames or not size:
            raise InteropError("the weights hold a learned pos_embed: pass frames and size to lay it on a grid")
        spec.pos_grid = [frames // tub, size // ph, size // ph]
    if kind == "pretrain":
        ddim = sd["encoder_to_decoder.weight"].shape[0]
        ddepth = _count(sd, "decoder.blocks.")
        spec = dataclasses.replace(
            spec, decoder_dim=ddim, decoder_depth=ddepth,
            decoder_heads=decoder_heads or default_decoder_heads(dim, ddim),
            decoder_mlp_hidden=sd["decoder.blocks.0.mlp.fc1.weight"].shape[0] if ddepth else 4 * ddim,
            out_dim=sd["decoder.head.weight"].shape[0],
            motion_dim=sd["motion_head.weight"].shape[0] if "motion_head.weight" in sd else 0)
    elif kind == "classify":
        if "fc_norm.weight" not in sd:
            raise InteropError("classifier weights without fc_norm (CLS-token pooling) are not supported; "
                               "mvm classifiers use mean pooling + fc_norm")
        spec = dataclasses.replace(spec, num_classes=sd["head.weight"].shape[0], final_norm=False)
    return spec


def load_state(model: nn.Module, sd: dict[str, torch.Tensor], where: str) -> nn.Module:
    """``model.load_state_dict(sd)`` refusing missing/unexpected keys and shape mismatches, naming ``where``."""
    own = model.state_dict()
    if "encoder.pos_embed" in sd and sd["encoder.pos_embed"].shape[1] == own["encoder.pos_embed"].shape[1] + 1:
        sd = {**sd, "encoder.pos_embed": sd["encoder.pos_embed"][:, 1:]}  # a CLS row VideoMAE never uses
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InteropError(f"{where}: weights do not fit the inferred model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    model.load_state_dict(sd)
    return model


def save_mvm(model: nn.Module, path: str | Path, frames: int | None = None, size: int | None = None) -> Path:
    """Write an mvm model as one safetensors file with its :class:`ModelSpec` in the header.

    ``frames``/``size``: the clip the model was trained on, recorded (``mvm_clip``) so a later
    export to transformers can write them into its config.
    """
    from safetensors.torch import save_file

    from mvm.interop.clip import CLIP_KEY

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = spec_from_model(model)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {SPEC_KEY: json.dumps(spec.to_dict()), "format": "pt"}
    if frames or size:
        meta[CLIP_KEY] = json.dumps({"frames": frames, "size": size})
    save_file(weights, str(path), metadata=meta)
    return path


def load_model(path: str | Path, heads: int | None = None, decoder_heads: int | None = None,
               frames: int | None = None, size: int | None = None) -> nn.Module:
    """Load any supported checkpoint as an mvm model (eval mode).

    - a transformers VideoMAE directory (``config.json`` + safetensors or ``pytorch_model.bin``);
    - an mvm ``.safetensors`` file, training checkpoint folder (``ckpt-*/model.safetensors``) or
      run folder (its newest checkpoint);
    - an original VideoMAE / VideoMAE V2 ``.pth`` (pretraining or fine-tuned; ``{"model": ...}``
      and ``{"module": ...}`` wrappers accepted), read with ``weights_only=True``.

    ``heads``/``decoder_heads`` override what cannot be read off shapes; ``frames``/``size`` lay a
    learned position table on its grid.
    """
    from mvm.interop import original
    from mvm.interop import transformers as hf
    from mvm.interop.clip import run_checkpoint

    path = Path(path)
    if not path.exists():
        raise InteropError(f"{path}: no such file or folder")
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "model.safetensors").is_file():
        ckpt = run_checkpoint(path)
        if ckpt is None:
            raise InteropError(f"{path}: a folder with no config.json, model.safetensors or complete ckpt-* "
                               "checkpoint")
        log.info("run folder %s: using its newest checkpoint %s", path, ckpt.name)
        path = ckpt
    spec_dict: dict[str, Any] | None = None
    if path.is_dir() and (path / "config.json").is_file():
        return hf.import_transformers(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        kind = _checkpoint_kind(path)
        if kind not in (None, "pretrain", "finetune"):  # e.g. an LVMAE tokenizer: no ViT weights in it
            raise InteropError(f"{path}: a {kind} checkpoint, not a video MAE or classifier (give an `mvm "
                               "pretrain` or `mvm finetune` run, a transformers VideoMAE folder or a .pth)")
        sd, meta = read_safetensors(path / "model.safetensors")
        if SPEC_KEY in meta:
            spec_dict = json.loads(meta[SPEC_KEY])
        elif (path / "meta.json").is_file() and heads is None:
            name = json.loads((path / "meta.json").read_text()).get("config", {}).get("model", {}).get("name")
            if name in VARIANTS:
                heads = heads or VARIANTS[name].heads
                decoder_heads = decoder_heads or VARIANTS[name].decoder_heads
        where = path / "model.safetensors"
    elif path.suffix == ".safetensors":
        sd, meta = read_safetensors(path)
        spec_dict = json.loads(meta[SPEC_KEY]) if SPEC_KEY in meta else None
        where = path
    elif path.is_file():
        obj = read_pth(path)
        try:
            sd = unwrap_state_dict(obj)
        except InteropError as e:
            raise InteropError(f"{path}: {e}") from None
        if isinstance(obj, dict) and isinstance(obj.get(SPEC_KEY), dict):
            spec_dict = obj[SPEC_KEY]
        if any(k.startswith("videomae.") for k in sd):
            raise InteropError(f"{path}: transformers weights need their config.json: pass the folder instead")
        sd = original.original_to_mvm(sd)
        where = path
    else:
        raise InteropError(f"{path}: not a transformers folder, mvm checkpoint, .safetensors or .pth file")
    try:
        spec = ModelSpec.from_dict(spec_dict) if spec_dict else infer_spec(sd, heads, decoder_heads, frames, size)
    except InteropError as e:
        raise InteropError(f"{where}: {e}") from None
    model = load_state(build_from_spec(spec), sd, str(where))
    log.info("loaded %s from %s (dim %d, depth %d, heads %d)", spec.kind, where, spec.dim, spec.depth, spec.heads)
    return model.eval()
