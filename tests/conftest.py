"""Shared test setup: CPU, few threads, quiet matplotlib."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def host_made():
    """``host_made(fn) -> int``: how many tensors ``fn()`` builds from Python data (``aten.lift_fresh``).
    On a GPU each is a host-to-device copy, so a training step should build none once warm."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Made(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten.lift_fresh.default
            return func(*args, **(kwargs or {}))

    def run(fn) -> int:
        with Made() as made:
            fn()
        return made.count

    return run
