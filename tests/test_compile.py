"""mvm.train.compile: torch.compile where it works, a logged fallback to eager where it does not."""

from __future__ import annotations

import logging

import pytest
import torch

from mvm.models import build_mae
from mvm.targets import masked_mse, norm_pix_target
from mvm.train.compile import CompiledModule, maybe_compile

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    perm = torch.stack([torch.randperm(8, generator=g) for _ in range(2)])
    return video, perm[:, :3].sort(1).values, perm[:, 3:].sort(1).values


def _loss(model: torch.nn.Module, video: torch.Tensor, vis: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(video, vis, dec)
    return masked_mse(pred.float(), norm_pix_target(video, 2, 16, MEAN, STD), dec)


def test_disabled_is_the_model_itself() -> None:
    model = build_mae("tiny", patch=16, depth=1, decoder_depth=1)
    assert maybe_compile(model, False, "cpu") is model


def test_compile_failure_falls_back_to_eager_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    def broken_backend(gm, example_inputs):  # a compiler that cannot build this graph
        raise RuntimeError("no kernel for this graph")

    torch.manual_seed(0)
    model = build_mae("tiny", patch=16, depth=1, decoder_depth=1)
    wrapped = maybe_compile(model, True, "cpu", backend=broken_backend)
    assert isinstance(wrapped, CompiledModule)
    video, vis, dec = _batch()
    with caplog.at_level(logging.WARNING, logger="mvm.train.compile"):
        out = wrapped(video, vis, dec)
    assert not wrapped.compiled and "no kernel for this graph" in wrapped.error
    assert "running the model eagerly" in caplog.text
    torch.testing.assert_close(out, model(video, vis, dec), rtol=0, atol=0)
    # Checkpoints see the plain model's keys; attributes reach through.
    assert list(wrapped.state_dict()) == list(model.state_dict())
    assert wrapped.encoder is model.encoder
    # An error of the model's own (bad input) is not swallowed as a compile failure.
    with pytest.raises((RuntimeError, IndexError, ValueError)):
        wrapped(video[:, :, :3], vis, dec)


@pytest.mark.slow
def test_compiled_loss_matches_eager_in_bf16() -> None:
    """Inductor on this CPU: the first C++ compile takes ~20 s with a warm cache (~2 min cold),
    which is why this test is marked slow; it is the only check that compiling changes no loss."""
    torch.manual_seed(0)
    model = build_mae("tiny", patch=16, depth=2, decoder_depth=1)
    compiled = maybe_compile(model, True, "cpu", dynamic=False)
    video, vis, dec = _batch()
    got = _loss(compiled, video, vis, dec)
    if not compiled.compiled:
        pytest.skip(f"torch.compile does not work with this CPU torch build here: {compiled.error}")
    with torch.no_grad():
        want = _loss(model, video, vis, dec)
    assert abs(got.item() - want.item()) <= 2e-2 * abs(want.item())  # bf16: 8 mantissa bits
    got.backward()
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
