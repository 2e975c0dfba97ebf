"""Observation encoders: each turns a window of observations into Transformer tokens."""

from qtransformer.encoders.efficientnet import EfficientNetLite0
from qtransformer.encoders.image import FiLM, ImageEncoder, random_shift
from qtransformer.encoders.pretrained import PretrainedImageEncoder
from qtransformer.encoders.state import StateEncoder

__all__ = [
    "EfficientNetLite0",
    "FiLM",
    "ImageEncoder",
    "PretrainedImageEncoder",
    "StateEncoder",
    "random_shift",
]
