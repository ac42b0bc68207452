"""Shared test setup: CPU, few threads, quiet matplotlib."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
