"""transformers VideoMAE <-> mvm, by directory (``config.json`` + weights) or in memory.

transformers is an optional extra: import and export of files need only safetensors and json;
:func:`from_hf_model` / :func:`to_hf_model` import transformers lazily. Differences handled here:

- transformers splits attention into ``query``/``key``/``value`` (q and v biases as ``q_bias``/``v_bias``
  on the Hub, ``query.bias``/``value.bias`` in transformers >= 5): mvm concatenates them into ``qkv``;
- LayerNorm epsilons: blocks use ``config.layer_norm_eps`` (often 1e-12 on the Hub, 1e-6 in the
  original); the decoder's final norm and ``fc_norm`` are built with torch's default 1e-5. Imported
  models carry these values; exported ones cannot change transformers' fixed 1e-5 (see docs/interop.md);
- inputs are ``[B, T, C, H, W]`` in transformers, ``[B, C, T, H, W]`` in mvm.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvm.interop.load import InteropError, ModelSpec, build_from_spec, load_state, read_pth, read_safetensors
from mvm.interop.load import spec_from_model as _spec_from_model

log = logging.getLogger(__name__)

TRANSFORMERS_NORM_EPS = 1e-5  # nn.LayerNorm default, used by transformers for decoder.norm and fc_norm

_BLOCK = {  # transformers layer suffix -> mvm block suffix (qkv handled separately)
    "attention.output.dense": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def _int(v: Any, what: str) -> int:
    if isinstance(v, list | tuple):
        if len(set(v)) != 1:
            raise InteropError(f"non-square {what} {v} is not supported")
        v = v[0]
    return int(v)


def spec_from_config(config: dict[str, Any], sd: dict[str, torch.Tensor]) -> ModelSpec:
    """:class:`ModelSpec` of a transformers VideoMAE config (plus its weights, for the model kind)."""
    kind = "pretrain" if "decoder.head.weight" in sd else "classify" if "classifier.weight" in sd else "encoder"
    tub, patch = int(config.get("tubelet_size", 2)), _int(config.get("patch_size", 16), "patch_size")
    chans = int(config.get("num_channels", 3))
    eps = float(config.get("layer_norm_eps", 1e-12))
    mean_pool = bool(config.get("use_mean_pooling", True))
    if kind == "classify" and not mean_pool:
        raise InteropError("VideoMAEForVideoClassification with use_mean_pooling=False (CLS pooling) is not "
                           "supported: mvm classifiers mean-pool")
    if config.get("hidden_act", "gelu") != "gelu":
        raise InteropError(f"hidden_act {config.get('hidden_act')!r} is not supported (gelu only)")
    return ModelSpec(
        kind, dim=int(config.get("hidden_size", 768)), depth=int(config.get("num_hidden_layers", 12)),
        heads=int(config.get("num_attention_heads", 12)), mlp_hidden=int(config.get("intermediate_size", 3072)),
        tubelet=tub, patch=patch, in_chans=chans, qkv_bias=bool(config.get("qkv_bias", config.get("qv_bias", True))),
        norm_eps=eps, final_norm=not mean_pool,
        decoder_dim=int(config.get("decoder_hidden_size", 384)) if kind == "pretrain" else 0,
        decoder_depth=int(config.get("decoder_num_hidden_layers", 4)) if kind == "pretrain" else 0,
        decoder_heads=int(config.get("decoder_num_attention_heads", 6)) if kind == "pretrain" else 0,
        decoder_mlp_hidden=int(config.get("decoder_intermediate_size", 1536)) if kind == "pretrain" else 0,
        out_dim=chans * tub * patch * patch if kind == "pretrain" else 0, decoder_norm_eps=eps,
        head_norm_eps=TRANSFORMERS_NORM_EPS,
        num_classes=sd["classifier.weight"].shape[0] if kind == "classify" else 0,
        fc_norm_eps=TRANSFORMERS_NORM_EPS)


def _block_to_mvm(sd: dict[str, torch.Tensor], src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    a = src + "attention.attention."
    out[dst + "attn.qkv.weight"] = torch.cat([sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]])
    for mine, names in (("q_bias", ("q_bias", "query.bias")), ("v_bias", ("v_bias", "value.bias"))):
        for name in names:
            if a + name in sd:
                out[dst + "attn." + mine] = sd[a + name]
    for theirs, mine in _BLOCK.items():
        for p in ("weight", "bias"):
            out[f"{dst}{mine}.{p}"] = sd[f"{src}{theirs}.{p}"]


def hf_to_mvm(sd: dict[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    """transformers VideoMAE weights -> mvm weights for the model of ``spec``."""
    if not any(k.startswith("videomae.") for k in sd):
        sd = {"videomae." + k: v for k, v in sd.items()}  # a bare VideoMAEModel
    enc = "" if spec.kind == "encoder" else "encoder."
    out: dict[str, torch.Tensor] = {}
    for p in ("weight", "bias"):
        out[f"{enc}patch_embed.proj.{p}"] = sd[f"videomae.embeddings.patch_embeddings.projection.{p}"]
        if spec.final_norm and spec.kind != "classify":
            out[f"{enc}norm.{p}"] = sd[f"videomae.layernorm.{p}"]
    for i in range(spec.depth):
        _block_to_mvm(sd, f"videomae.encoder.layer.{i}.", f"{enc}blocks.{i}.", out)
    if spec.kind == "pretrain":
        out["encoder_to_decoder.weight"] = sd["encoder_to_decoder.weight"]
        out["mask_token"] = sd["mask_token"]
        for i in range(spec.decoder_depth):
            _block_to_mvm(sd, f"decoder.decoder_layers.{i}.", f"decoder.blocks.{i}.", out)
        for p in ("weight", "bias"):
            out[f"decoder.norm.{p}"] = sd[f"decoder.norm.{p}"]
            out[f"decoder.head.{p}"] = sd[f"decoder.head.{p}"]
    elif spec.kind == "classify":
        for p in ("weight", "bias"):
            out[f"fc_norm.{p}"] = sd[f"fc_norm.{p}"]
            out[f"head.{p}"] = sd[f"classifier.{p}"]
    return out


def _block_to_hf(sd: dict[str, torch.Tensor], src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    a = dst + "attention.attention."
    q, k, v = sd[src + "attn.qkv.weight"].chunk(3)
    out[a + "query.weight"], out[a + "key.weight"], out[a + "value.weight"] = q, k, v
    if src + "attn.q_bias" in sd:
        # The Hub's names; transformers >= 5 renames them to query.bias / value.bias on load.
        out[a + "q_bias"], out[a + "v_bias"] = sd[src + "attn.q_bias"], sd[src + "attn.v_bias"]
    for theirs, mine in _BLOCK.items():
        for p in ("weight", "bias"):
            out[f"{dst}{theirs}.{p}"] = sd[f"{src}{mine}.{p}"]


def mvm_to_hf(model: nn.Module, frames: int = 16, size: int = 224,
              labels: list[str] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An mvm autoencoder or classifier as transformers weights and ``config.json`` contents."""
    spec = _spec_from_model(model)
    if spec.kind == "encoder":
        raise InteropError("export a MaskedVideoAutoencoder or a VideoClassifier, not a bare encoder")
    if spec.init_values is not None:
        raise InteropError("transformers' VideoMAE has no layer scale (gamma_1/gamma_2); cannot export")
    if spec.pos_grid is not None:
        raise InteropError("transformers' VideoMAE has only the fixed sinusoid table; cannot export a learned pos_embed")
    if spec.kind == "pretrain" and spec.out_dim != spec.in_chans * spec.tubelet * spec.patch ** 2:
        raise InteropError(f"transformers predicts pixels (out_dim {spec.in_chans * spec.tubelet * spec.patch ** 2}), "
                           f"this model predicts {spec.out_dim} values per token")
    if spec.motion_dim:
        log.info("transformers' VideoMAE has no motion head: its weights (motion_head.*) are left out")
    if frames % spec.tubelet or size % spec.patch:
        raise InteropError(f"frames={frames}/size={size} do not divide into {spec.tubelet}x{spec.patch} tubelets")
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for p in ("weight", "bias"):
        out[f"videomae.embeddings.patch_embeddings.projection.{p}"] = sd[f"encoder.patch_embed.proj.{p}"]
        if spec.final_norm and spec.kind == "pretrain":
            out[f"videomae.layernorm.{p}"] = sd[f"encoder.norm.{p}"]
    for i in range(spec.depth):
        _block_to_hf(sd, f"encoder.blocks.{i}.", f"videomae.encoder.layer.{i}.", out)
    config: dict[str, Any] = {
        "model_type": "videomae", "image_size": size, "patch_size": spec.patch, "num_channels": spec.in_chans,
        "num_frames": frames, "tubelet_size": spec.tubelet, "hidden_size": spec.dim,
        "num_hidden_layers": spec.depth, "num_attention_heads": spec.heads, "intermediate_size": spec.mlp_hidden,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": spec.norm_eps, "qkv_bias": spec.qkv_bias,
        "use_mean_pooling": not (spec.final_norm and spec.kind == "pretrain"), "norm_pix_loss": True,
    }
    if spec.kind == "pretrain":
        config.update(architectures=["VideoMAEForPreTraining"], decoder_hidden_size=spec.decoder_dim,
                      decoder_num_hidden_layers=spec.decoder_depth, decoder_num_attention_heads=spec.decoder_heads,
                      decoder_intermediate_size=spec.decoder_mlp_hidden)
        if spec.decoder_norm_eps != spec.norm_eps:
            log.warning("decoder blocks use eps %g, transformers will use the encoder's %g",
                        spec.decoder_norm_eps, spec.norm_eps)
        out["encoder_to_decoder.weight"] = sd["encoder_to_decoder.weight"]
        out["mask_token"] = sd["mask_token"]
        for i in range(spec.decoder_depth):
            _block_to_hf(sd, f"decoder.blocks.{i}.", f"decoder.decoder_layers.{i}.", out)
        for p in ("weight", "bias"):
            out[f"decoder.norm.{p}"] = sd[f"decoder.norm.{p}"]
            out[f"decoder.head.{p}"] = sd[f"decoder.head.{p}"]
        eps_note = spec.head_norm_eps
    else:
        names = labels or [f"LABEL_{i}" for i in range(spec.num_classes)]
        if len(names) != spec.num_classes:
            raise InteropError(f"{len(names)} labels given for {spec.num_classes} classes")
        config.update(architectures=["VideoMAEForVideoClassification"],
                      id2label={str(i): n for i, n in enumerate(names)},
                      label2id={n: i for i, n in enumerate(names)})
        for p in ("weight", "bias"):
            out[f"fc_norm.{p}"] = sd[f"fc_norm.{p}"]
            out[f"classifier.{p}"] = sd[f"head.{p}"]
        eps_note = spec.fc_norm_eps
    if eps_note != TRANSFORMERS_NORM_EPS:
        log.info("transformers fixes the eps of decoder.norm / fc_norm at 1e-5; this model uses %g "
                 "(outputs differ at the 1e-6 relative level)", eps_note)
    return {k: v.contiguous() for k, v in out.items()}, config


def export_transformers(model: nn.Module, out_dir: str | Path, frames: int = 16, size: int = 224,
                        labels: list[str] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that ``VideoMAEForPreTraining`` /
    ``VideoMAEForVideoClassification.from_pretrained`` load with no missing or unexpected keys."""
    from safetensors.torch import save_file

    sd, config = mvm_to_hf(model, frames, size, labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def read_transformers_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, weights)`` of a transformers folder (safetensors preferred; ``.bin`` read with weights_only)."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise InteropError(f"{path / 'config.json'}: unreadable ({e})") from e
    if config.get("model_type") != "videomae":
        raise InteropError(f"{path}: model_type is {config.get('model_type')!r}, not 'videomae'")
    files = sorted(path.glob("*.safetensors"))
    sd: dict[str, torch.Tensor] = {}
    if files:
        for f in files:
            sd.update(read_safetensors(f)[0])
    elif (path / "pytorch_model.bin").is_file():
        sd = read_pth(path / "pytorch_model.bin")
    else:
        raise InteropError(f"{path}: no model.safetensors or pytorch_model.bin")
    return config, sd


def import_transformers(path: str | Path) -> nn.Module:
    """An mvm model (autoencoder, classifier or encoder) from a transformers VideoMAE folder."""
    config, sd = read_transformers_dir(path)
    return _import(config, sd, str(path))


def _import(config: dict[str, Any], sd: dict[str, torch.Tensor], where: str) -> nn.Module:
    try:
        spec = spec_from_config(config, sd)
        mine = hf_to_mvm(sd, spec)
    except KeyError as e:
        raise InteropError(f"{where}: weight {e} missing for the configured VideoMAE") from None
    return load_state(build_from_spec(spec), mine, where).eval()


def from_hf_model(hf_model: nn.Module) -> nn.Module:
    """An mvm model from an in-memory transformers VideoMAE model."""
    return _import(hf_model.config.to_dict(), hf_model.state_dict(), type(hf_model).__name__)


def to_hf_model(model: nn.Module, frames: int = 16, size: int = 224) -> nn.Module:
    """An in-memory transformers model (imports transformers) with ``model``'s weights."""
    import transformers

    sd, config = mvm_to_hf(model, frames, size)
    arch = config.pop("architectures")[0]
    config.pop("model_type")
    hf = getattr(transformers, arch)(transformers.VideoMAEConfig(**config))
    renamed = {k.replace("attention.attention.q_bias", "attention.attention.query.bias")
               .replace("attention.attention.v_bias", "attention.attention.value.bias"): v for k, v in sd.items()}
    own = hf.state_dict()
    if set(own) != set(renamed):  # transformers < 5 keeps the q_bias / v_bias names
        renamed = sd
    hf.load_state_dict(renamed, strict=True)
    return hf.eval()
