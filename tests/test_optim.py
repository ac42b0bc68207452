import math

import torch
from torch import nn

from mvm.train.optim import lr_at, param_groups, set_lr


def test_warmup_then_cosine():
    assert lr_at(0, 100, 1.0, 10, 0.0) == 0.1
    assert lr_at(9, 100, 1.0, 10, 0.0) == 1.0
    assert math.isclose(lr_at(10, 100, 1.0, 10, 0.1), 1.0)
    assert math.isclose(lr_at(55, 100, 1.0, 10, 0.0), 0.5, abs_tol=1e-9)
    assert math.isclose(lr_at(100, 100, 1.0, 10, 0.1), 0.1)
    assert all(lr_at(s, 100, 1.0, 10, 0.0) >= lr_at(s + 1, 100, 1.0, 10, 0.0) for s in range(10, 99))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Linear(4, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)) for _ in range(2)])
        self.head = nn.Linear(4, 2)


def test_no_decay_on_norms_biases_positions():
    m = _Tiny()
    groups = param_groups(m, weight_decay=0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(m.patch_embed.weight) in decayed and id(m.head.weight) in decayed
    assert id(m.pos_embed) not in decayed
    assert id(m.blocks[0][0].weight) not in decayed and id(m.blocks[0][1].bias) not in decayed


def test_layer_decay_scales():
    m = _Tiny()
    groups = param_groups(m, 0.05, layer_decay=0.5, num_layers=2)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(m.head.weight)] == 1.0
    assert scale[id(m.blocks[1][1].weight)] == 0.5
    assert scale[id(m.blocks[0][1].weight)] == 0.25
    assert scale[id(m.patch_embed.weight)] == 0.125
    opt = torch.optim.AdamW(groups, lr=1.0)
    set_lr(opt, 2.0)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.25, 0.5, 1.0, 2.0]
