"""`facelock embed` (placeholder)."""


def register(sub):
    pass
