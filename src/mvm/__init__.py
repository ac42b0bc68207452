"""mvm: masked video modelling (VideoMAE, motion-guided masking, long-video MAE) in PyTorch."""

from mvm.grid import TokenGrid

__all__ = ["TokenGrid"]
__version__ = "0.1.0"
