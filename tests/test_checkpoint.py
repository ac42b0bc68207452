import json
import pickle

import pytest
import torch
from torch import nn

from mvm.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
    save_checkpoint,
)


def _model(width=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.LayerNorm(width))


def test_save_load_prune(tmp_path):
    m = _model()
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, m, {"step_state": torch.tensor(step)}, {"config": {}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-0000020", "ckpt-0000030"]
    other = _model()
    with torch.no_grad():
        other[0].weight.zero_()
    load_weights(other, latest_checkpoint(tmp_path))
    assert torch.equal(other[0].weight, m[0].weight)
    state, meta = load_state(latest_checkpoint(tmp_path))
    assert int(state["step_state"]) == 30 and meta["step"] == 30


def test_half_written_checkpoint_is_ignored(tmp_path):
    m = _model()
    save_checkpoint(tmp_path, 5, m, {}, {})
    # a kill during the next write leaves a temporary folder (and maybe a folder without meta)
    (tmp_path / ".tmp-ckpt-0000010-123").mkdir()
    (tmp_path / ".tmp-ckpt-0000010-123" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "ckpt-0000010").mkdir()
    assert latest_checkpoint(tmp_path).name == "ckpt-0000005"


def test_mismatched_model_is_refused_with_both_shapes(tmp_path):
    save_checkpoint(tmp_path, 1, _model(4), {}, {})
    with pytest.raises(CheckpointError, match=r"checkpoint \(4, 3\) vs model \(8, 3\)"):
        load_weights(_model(8), latest_checkpoint(tmp_path))


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("import os; os.environ['MVM_PWNED'] = '1'",))

    ck = tmp_path / "ckpt-0000001"
    ck.mkdir()
    (ck / "meta.json").write_text(json.dumps({"step": 1}))
    with open(ck / "state.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_state(ck)
    import os

    assert "MVM_PWNED" not in os.environ
