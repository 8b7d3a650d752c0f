"""facelock.convert: the workstation side (TensorFlow). Modules import TensorFlow lazily, inside functions,
so that `facelock --help` and `facelock models fetch` work without it."""
