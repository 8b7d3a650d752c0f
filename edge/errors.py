"""One exception hierarchy for the board side. Messages name the thing at fault and what was expected."""


class FacelockError(Exception):
    """Base of every error facelock raises on purpose; the CLI prints these without a traceback."""


class ConfigError(FacelockError):
    """A configuration file or key is wrong."""


class ModelError(FacelockError):
    """A model file is missing, truncated, corrupt or of the wrong kind."""


class BundleError(ModelError):
    """A model bundle's manifest, schema or checksums do not match."""


class ImageError(FacelockError):
    """An image could not be read or decoded."""


class NoFaceError(FacelockError):
    """An image or frame holds no usable face."""


class SourceError(FacelockError):
    """A camera, video or image-folder source failed."""


class GalleryError(FacelockError):
    """The enrolment database refused an operation."""


class MqttError(FacelockError):
    """The MQTT connection or a message is wrong."""
