"""Decoding image files into the frames `edge` works on: uint8 RGB (see edge/types.py). The one decoder:
the folder source, `facelock embed`, `facelock enroll` and the dataset readers all come through here.

An image file is untrusted input (a folder source replays whatever lands in it), so nothing reaches OpenCV's
decoders before its header has been read here: a 62-byte PNG may claim 40000 x 40000 pixels, and decoding
it would ask for gigabytes (OpenCV raises cv2.error past its own limit; below it the lock runs out of
memory). The checks, in order, each an `ImageError` naming the file:

- a regular file (not a folder, a FIFO or a device) of at most `MAX_FILE_BYTES`;
- a format whose size is read from its header: PNG (IHDR), JPEG (SOF), GIF, BMP, WebP (VP8/VP8L/VP8X),
  TIFF (first IFD), PBM/PGM/PPM; other formats (JPEG 2000, OpenEXR, HDR, ...) are refused;
- at most `MAX_PIXELS` and at least `MIN_SIDE` pixels a side (smaller holds no face the detector finds);
- then the decode, with every decoder error (cv2.error, MemoryError, ...) mapped to ImageError.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np

from edge.errors import ImageError

MAX_FILE_BYTES = 64 << 20  # a 40-MP JPEG is ~10-20 MB; a camera frame a few hundred kB
MAX_PIXELS = 40_000_000  # 40 MP: 120 MB as RGB, the most a board is asked to hold for one image
MIN_SIDE = 16  # px: BlazeFace looks at 128 x 128, the embedder at a 150 x 150 chip
FORMATS = "PNG, JPEG, GIF, BMP, WebP, TIFF, PBM/PGM/PPM"


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3); ImageError naming the file for anything else."""
    path = Path(path)
    return decode_image_rgb(_read_bytes(path), str(path))


def decode_image_rgb(data: bytes, name: str = "<image>") -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB, after the header checks; ImageError naming `name`."""
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: {len(data)} bytes, at most {MAX_FILE_BYTES} accepted")
    fmt, width, height = _checked_size(data, name)
    import cv2

    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageError(f"{name}: not a decodable image (corrupt or truncated {fmt})")
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ImageError(f"{name}: decoded to {bgr.shape} {bgr.dtype}, expected (H, W, 3) uint8")
        h, w = bgr.shape[:2]
        if h * w > MAX_PIXELS or min(h, w) < MIN_SIDE:  # the decoder is not bound by the header we read
            raise ImageError(f"{name}: decoded to {w}x{h} pixels, header said {width}x{height}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{name}: {fmt} {width}x{height}: out of memory while decoding") from None
    except Exception as exc:  # noqa: BLE001 -- cv2.error, ValueError, ...: the decoder's is the file's fault
        raise ImageError(f"{name}: not a decodable image ({fmt}: {type(exc).__name__}: "
                         f"{str(exc).strip()[:120]})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{path}: a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: {st.st_size} bytes, at most {MAX_FILE_BYTES} accepted")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # the file may grow while it is read
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from exc
    except ValueError as exc:  # a NUL in the path
        raise ImageError(f"{path!r}: not a usable file name ({exc})") from exc
    return data


def _checked_size(data: bytes, name: str) -> tuple[str, int, int]:
    """(format, width, height) from the header, or ImageError: unknown format, no size, too many or too
    few pixels."""
    fmt, size = _header(data)
    if fmt is None:
        raise ImageError(f"{name}: not a decodable image (its format is none of {FORMATS})")
    if size is None:
        raise ImageError(f"{name}: {fmt} header without a readable size (truncated or corrupt)")
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {fmt} claims {width}x{height} pixels, at most {MAX_PIXELS // 1_000_000} MP "
                         "accepted")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: {width}x{height} pixels, too small to hold a face (at least "
                         f"{MIN_SIDE}x{MIN_SIDE})")
    return fmt, width, height


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of encoded image bytes, without decoding; None when the format
    is not one of FORMATS or the header is cut short."""
    return _header(data)[1]


def _format(data: bytes) -> str | None:
    """The format named by the file's signature (what OpenCV also goes by), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "PNM"
    return None


def _header(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    fmt = _format(data)
    if fmt is None:
        return None, None
    try:
        return fmt, _SIZE_READERS[fmt](data)
    except (struct.error, IndexError, ValueError):  # cut short
        return fmt, None


def _gif(data: bytes) -> tuple[int, int] | None:
    return _positive(*struct.unpack_from("<HH", data, 6))  # the logical screen


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _png(data: bytes) -> tuple[int, int] | None:
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        return None
    return _positive(*struct.unpack_from(">II", data, 16))


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """The frame header (SOFn) size; a height of 0 (defined later by DNL) counts as no size."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        (length,) = struct.unpack_from(">H", data, i + 2)
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, i + 5)
            return _positive(width, height)
        i += 2 + length
    return None


def _bmp(data: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # BITMAPCOREHEADER
        width, height = struct.unpack_from("<hh", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return _positive(abs(width), abs(height))  # a negative height is a top-down bitmap


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        if len(data) < 30:
            return None
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD (the page OpenCV decodes)."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, offset)
    size: dict[int, int] = {}
    for i in range(min(count, (len(data) - offset - 2) // 12)):
        tag, kind, _n = struct.unpack_from(order + "HHI", data, offset + 2 + 12 * i)
        if tag in (256, 257):
            fmt = {3: "H", 4: "I"}.get(kind)
            if fmt is None:
                return None
            (size[tag],) = struct.unpack_from(order + fmt, data, offset + 2 + 12 * i + 8)
    if 256 not in size or 257 not in size:
        return None
    return _positive(size[256], size[257])


def _pnm(data: bytes) -> tuple[int, int] | None:
    """Width and height: the first two numbers after the magic, skipping whitespace and # comments."""
    numbers: list[int] = []
    i = 2
    head = data[:1024]
    while len(numbers) < 2 and i < len(head):
        c = head[i:i + 1]
        if c.isspace():
            i += 1
        elif c == b"#":
            end = head.find(b"\n", i)
            i = len(head) if end < 0 else end + 1
        elif c.isdigit():
            j = i
            while j < len(head) and head[j:j + 1].isdigit():
                j += 1
            if j - i > 9:
                return None
            numbers.append(int(head[i:j]))
            i = j
        else:
            return None
    return _positive(*numbers) if len(numbers) == 2 else None


_SIZE_READERS = {"PNG": _png, "JPEG": _jpeg, "GIF": _gif, "BMP": _bmp, "WebP": _webp, "TIFF": _tiff, "PNM": _pnm}
