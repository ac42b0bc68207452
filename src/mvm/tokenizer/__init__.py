"""The LVMAE video tokenizer: a MAGVIT-style 3D-conv autoencoder with FSQ codes, a token scorer
and a differentiable top-k (``model.py``, ``quantize.py``, ``topk.py``), the job that trains it
(``task.py``) and what pretraining needs from a trained one (``lvmae.py``)."""

from mvm.tokenizer.model import TOKENIZER_SIZES, TokenizerOutput, VideoTokenizer, build_tokenizer
from mvm.tokenizer.quantize import Quantizer
from mvm.tokenizer.topk import straight_through_topk, topk_mask

__all__ = [
    "TOKENIZER_SIZES",
    "Quantizer",
    "TokenizerOutput",
    "VideoTokenizer",
    "build_tokenizer",
    "straight_through_topk",
    "topk_mask",
]
