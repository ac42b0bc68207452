"""Models: patchify, layers, the video encoder, the masked autoencoder, the classifier, named sizes."""

from mvm.models.classifier import VideoClassifier
from mvm.models.encoder import VideoEncoder
from mvm.models.mae import MaeDecoder, MaskedVideoAutoencoder
from mvm.models.patch import patchify, unpatchify
from mvm.models.variants import VARIANTS, Variant, build_classifier, build_encoder, build_mae, get_variant

__all__ = [
    "VARIANTS",
    "MaeDecoder",
    "MaskedVideoAutoencoder",
    "Variant",
    "VideoClassifier",
    "VideoEncoder",
    "build_classifier",
    "build_encoder",
    "build_mae",
    "get_variant",
    "patchify",
    "unpatchify",
]
