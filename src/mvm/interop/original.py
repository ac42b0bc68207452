"""Original VideoMAE / VideoMAE V2 state dicts <-> mvm.

mvm's parameter names *are* the original ones (``models/layers.py``), so the mapping is small:

- pretraining (``modeling_pretrain.py``): identical keys (``encoder.*``, ``encoder_to_decoder.weight``,
  ``mask_token``, ``decoder.blocks.*``, ``decoder.norm``, ``decoder.head``);
- fine-tuned (``modeling_finetune.py``, mean pooling): ``patch_embed.*``, ``blocks.*``, ``pos_embed``
  gain an ``encoder.`` prefix; ``fc_norm`` and ``head`` stay.

Buffers the original keeps outside the state dict (the fixed sinusoid tables) are recomputed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mvm.interop.load import SPEC_KEY, InteropError, spec_from_model

_ENCODER_KEYS = ("patch_embed.", "blocks.", "norm.")


def original_to_mvm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original-layout keys -> mvm keys (pretraining keys and bare backbones pass through unchanged)."""
    if any(k.startswith("encoder.") for k in sd):
        # The original encoder's head is Identity (no keys) unless encoder_num_classes was set.
        return {k: v for k, v in sd.items() if not k.startswith("encoder.head.")}
    if "head.weight" not in sd and "fc_norm.weight" not in sd:
        return dict(sd)  # a headless backbone: mvm's bare VideoEncoder layout
    return {("encoder." + k if k.startswith(_ENCODER_KEYS) or k == "pos_embed" else k): v for k, v in sd.items()}


def mvm_to_original(model: nn.Module) -> dict[str, torch.Tensor]:
    """An mvm model's weights under the original VideoMAE names."""
    spec = spec_from_model(model)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if spec.kind == "classify":
        return {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in sd.items()}
    return sd


def save_original(model: nn.Module, path: str | Path, frames: int | None = None, size: int | None = None) -> Path:
    """``torch.save({"model": state_dict, "mvm_spec": {...}}, path)`` in the original layout.

    The spec (plain numbers and strings) records what shapes cannot say (head counts, epsilons), so
    :func:`mvm.interop.load.load_model` rebuilds the model exactly; the original code ignores it.
    ``frames``/``size`` (the training clip) are recorded as ``mvm_clip`` for later exports.
    """
    from mvm.interop.clip import CLIP_KEY

    path = Path(path)
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise InteropError(f"{path}: original checkpoints are .pth files")
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"model": mvm_to_original(model), SPEC_KEY: spec_from_model(model).to_dict()}
    if frames or size:
        obj[CLIP_KEY] = {"frames": frames, "size": size}
    torch.save(obj, path)
    return path
