"""facelock.convert: the workstation side (TensorFlow). Modules import TensorFlow lazily, inside functions,
so that `facelock --help` and `facelock models fetch` work without it."""

import os

# tensorflow-model-optimization and TFLiteConverter.from_keras_model need Keras 2 (tf_keras); this must be
# set before TensorFlow is first imported, and every TensorFlow import in facelock goes through `convert`.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
