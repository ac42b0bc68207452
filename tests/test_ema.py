import pytest
import torch
from torch import nn

from mvm.train.ema import ModelEma


def test_ema_follows_weights_and_resumes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    start = model[0].weight.detach().clone()
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 7
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, start + 0.5)
    assert int(ema.module[1].num_batches_tracked) == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())
    other = ModelEma(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)
    assert set(ema.weights()) == set(model.state_dict())
    with pytest.raises(ValueError, match="decay"):
        ModelEma(model, decay=1.0)


def test_ema_leaves_the_average_for_a_skipped_step():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    start = model.weight.detach().clone()
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, torch.tensor(False))  # the guard skipped this step: decided without a host read
    assert torch.equal(ema.module.weight, start)
    ema.update(model, torch.tensor(True))
    torch.testing.assert_close(ema.module.weight, start + 0.5)
