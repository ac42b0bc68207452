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


def test_ema_without_sharding_keeps_the_whole_module():
    """Single process (and DDP): the whole module, updated by today's arithmetic; gather does nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.75)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step, taken in enumerate((None, torch.tensor(True), torch.tensor(False), None)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        for k, v in model.state_dict().items():
            if not v.dtype.is_floating_point:
                expected[k] = v.clone()
            elif taken is None:
                expected[k] = expected[k].mul(0.75).add(v, alpha=0.25)
            else:
                expected[k] = expected[k].lerp(v, 0.25 * taken.float())
        ema.update(model, taken)
        ema.gather()  # no sharding: nothing to gather, nothing changes
        ema.gather(keep=False)
        for k, v in ema.module.state_dict().items():
            assert torch.equal(v, expected[k]), (step, k)
    assert not ema.sharded and ema.updates == 4
    assert ema.module_on(torch.device("cpu")) is ema.module
    assert ema.nbytes() == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert all(torch.equal(ema.weights()[k], expected[k]) for k in expected)


def test_ema_under_fsdp2_in_one_process_is_local_and_gathers(tmp_path):
    """FSDP2 on a one-rank gloo group: the average becomes DTensor shards at the first update,
    gather() makes the same whole average as the unsharded EMA, and a whole state loaded while
    sharded lands on the shards. (Two ranks, real halves and no collective per update:
    tests/test_distributed.py.)"""
    import copy

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5))
        plain = copy.deepcopy(model)
        ema, ref = ModelEma(model, decay=0.5), ModelEma(plain, decay=0.5)
        fully_shard(model)
        for taken in (None, torch.tensor(True), torch.tensor(False)):
            with torch.no_grad():
                for p, q in zip(model.parameters(), plain.parameters()):
                    delta = torch.randn(q.shape)
                    p.to_local().add_(delta)
                    q.add_(delta)
                for m in (model, plain):
                    m[1].num_batches_tracked += 1
            ema.update(model, taken)
            ref.update(plain, taken)
        assert ema.sharded and ema.updates == 3
        with pytest.raises(RuntimeError, match="gather"):
            ema.state_dict()
        ema.gather()
        first = ema.module
        ema.gather()  # a checkpoint and a validation at the same step: gathered once
        assert ema.module is first
        got, want = ema.state_dict()["weights"], ref.state_dict()["weights"]
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        assert not any(p.requires_grad for p in ema.module.parameters())
        copied = ema.module_on(torch.device("cpu"))  # a copy for validation, dropped after it
        assert copied is not ema.module and torch.equal(copied[0].weight, want["0.weight"])
        ema.update(model, torch.tensor(True))  # the gathered copy is stale now, and dropped
        with pytest.raises(RuntimeError, match="gather"):
            ema.weights()
        ema.load_state_dict({"weights": want, "updates": 3})  # a resume: whole weights onto the shards
        ema.gather()
        assert ema.updates == 3 and all(torch.equal(ema.weights()[k], want[k]) for k in want)
    finally:
        dist.destroy_process_group()
