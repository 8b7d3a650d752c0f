"""`facelock models ...` (placeholder until the fetcher lands)."""


def register(sub):
    pass
