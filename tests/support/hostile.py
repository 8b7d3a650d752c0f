"""Hostile image files for the decoder tests and the fuzz harness: headers claiming huge (or no) sizes in
every format edge.images reads, truncations, bit flips, junk, and things that are not files at all."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

FORMATS = (".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".gif")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of ~60 bytes whose IHDR claims width x height RGB pixels (a valid CRC, a tiny IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 4))
            + _chunk(b"IEND", b""))


def encoded(ext: str, image: np.ndarray) -> bytes:
    """`image` (RGB) encoded by OpenCV as `ext`."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok, ext
    return buf.tobytes()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encoded(".jpg", np.full((16, 16, 3), 128, np.uint8)))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\xf7\x00\x00" + b"\x00" * 32 + b";"


def bmp_claiming(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54 + 3, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24,
                                                                     0, 3, 0, 0, 0, 0) + b"\x00" * 3


def webp_claiming(width: int, height: int) -> bytes:
    """A WebP extended header (VP8X) claiming a width x height canvas (up to 2**24 a side)."""
    vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_claiming(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 3), (273, 4, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def pnm_claiming(width: int, height: int) -> bytes:
    return f"P6\n# a comment\n{width} {height}\n255\n".encode() + b"\x00" * 12


CLAIMING = {"png": png_claiming, "jpeg": jpeg_claiming, "gif": gif_claiming, "bmp": bmp_claiming,
            "webp": webp_claiming, "tiff": tiff_claiming, "pnm": pnm_claiming}
# Largest size each header can state (16-bit fields for JPEG and GIF, 24-bit for VP8X).
MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65535, "gif": 65535, "bmp": 2**31 - 1, "webp": 2**24, "tiff": 2**32 - 1,
            "pnm": 10**9}


def random_image(rng: random.Random, low: int = 16, high: int = 80) -> np.ndarray:
    h, w = rng.randint(low, high), rng.randint(low, high)
    return np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (h, w, 3), dtype=np.uint8)


def hostile_files(folder: Path, rng: random.Random, count: int) -> list[tuple[Path, str]]:
    """`count` files (and non-files) under `folder`, each with the kind of hostility it carries."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = [_bomb, _tiny, _truncated, _flipped, _junk_appended, _random_bytes, _signature_then_junk, _valid,
              _empty, _not_a_file]
    out = []
    for i in range(count):
        maker = makers[i % len(makers)]
        kind, data, suffix = maker(rng)
        path = folder / f"{i:04d}-{kind}{suffix}"
        if data is None:  # a folder named like an image
            path.mkdir()
        else:
            path.write_bytes(data)
        out.append((path, kind))
    return out


def _bomb(rng):
    fmt = rng.choice(sorted(CLAIMING))
    side = MAX_SIDE[fmt]
    width = rng.choice([side, 40000, 7000, rng.randint(6400, side)])
    height = rng.choice([side, 40000, 7000, rng.randint(6400, side)])
    return f"bomb-{fmt}-{width}x{height}", CLAIMING[fmt](width, height), ".png"


def _tiny(rng):
    fmt = rng.choice(sorted(CLAIMING))
    width, height = rng.choice([(0, 0), (1, 1), (0, 500), (500, 0), (15, 300), (1, 1)])
    if rng.random() < 0.5 and width and height:  # a real tiny image, not just a header
        image = np.zeros((height, width, 3), np.uint8)
        return f"tiny-{width}x{height}", encoded(rng.choice(FORMATS[:5]), image), ".png"
    return f"tiny-{fmt}-{width}x{height}", CLAIMING[fmt](max(width, 1) if fmt == "webp" else width,
                                                       max(height, 1) if fmt == "webp" else height), ".jpg"


def _valid_bytes(rng) -> tuple[str, bytes]:
    ext = rng.choice(FORMATS)
    return ext, encoded(ext, random_image(rng))


def _truncated(rng):
    ext, data = _valid_bytes(rng)
    return f"truncated{ext}", data[:rng.randint(1, max(1, len(data) - 1))], ext


def _flipped(rng):
    ext, data = _valid_bytes(rng)
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    return f"flipped{ext}", bytes(buf), ext


def _junk_appended(rng):
    ext, data = _valid_bytes(rng)
    return f"junk-appended{ext}", data + rng.randbytes(rng.randint(1, 4000)), ext


def _random_bytes(rng):
    return "random", rng.randbytes(rng.randint(1, 3000)), ".jpg"


def _signature_then_junk(rng):
    sig = rng.choice([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                      b"II*\x00", b"MM\x00*", b"P6\n"])
    return "signature-junk", sig + rng.randbytes(rng.randint(0, 64)), ".png"


def _valid(rng):
    ext, data = _valid_bytes(rng)
    return f"valid{ext}", data, ext


def _empty(rng):
    return "empty", b"", rng.choice(FORMATS)


def _not_a_file(rng):
    return "folder", None, rng.choice(FORMATS)
