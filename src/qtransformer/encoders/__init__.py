"""Observation encoders: each turns a window of observations into Transformer tokens."""

from qtransformer.encoders.image import FiLM, ImageEncoder, random_shift
from qtransformer.encoders.state import StateEncoder

__all__ = ["FiLM", "ImageEncoder", "StateEncoder", "random_shift"]
