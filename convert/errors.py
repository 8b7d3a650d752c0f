"""Errors of the workstation side; they share the base class so the CLI treats them alike."""

from edge.errors import FacelockError


class ConvertError(FacelockError):
    """Conversion, pruning, quantization or validation failed."""


class FetchError(ConvertError):
    """A model could not be fetched from the package registry or failed its checksum."""


class DataError(ConvertError):
    """A face-photo folder or pair list is unusable."""
