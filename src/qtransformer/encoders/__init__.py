"""Observation encoders: each turns a window of observations into Transformer tokens."""

from qtransformer.encoders.state import StateEncoder

__all__ = ["StateEncoder"]
