"""facelock.edge: the on-device runtime (no TensorFlow, ever)."""

__version__ = "0.1.0"
