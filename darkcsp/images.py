"""Image files: size from the header before any decoding, so a small file that claims
60000 x 60000 pixels is refused before a decoder allocates for it.

:func:`check_image_file` is the one gate every image reader passes (inference's
:func:`darkcsp.infer.preprocess.load_image`, the training and mAP data readers): the path must
be a regular file, and the width x height its header claims must be at most
:func:`darkcsp.budget.max_image_pixels`. PNG, JPEG, BMP, GIF, WebP and PNM headers are read here;
any other format is left to OpenCV, whose own limit ``OPENCV_IO_MAX_IMAGE_PIXELS`` is set to the
same figure before the first decode.
"""
from __future__ import annotations

import os
import struct

from darkcsp.budget import max_image_pixels
from darkcsp.errors import DarkcspError
from darkcsp.files import FileRefused, regular_file

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_image_pixels()))

_HEAD = 64 * 1024  # bytes read to find the size (JPEG may put EXIF before its SOF)
# The most bytes an image within the pixel limit can take (uncompressed 16-bit RGBA + slack).
_BYTES_PER_PIXEL = 8


class ImageError(DarkcspError, OSError):
    """An image file cannot be read or decoded, or is larger than darkcsp accepts."""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        length, = struct.unpack_from(">H", data, at + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if at + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        at += 2 + length
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    numbers: list[int] = []
    for line in data[2:].split(b"\n"):
        for word in line.split(b"#", 1)[0].split():
            if not word.isdigit():
                return None
            numbers.append(int(word))
            if len(numbers) == 2:
                return numbers[0], numbers[1]
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, JPEG, BMP, GIF, WebP or PNM file; None
    for another format or a header too short to tell."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack_from(">II", data, 16)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        header, = struct.unpack_from("<I", data, 14)
        if header == 12:
            return struct.unpack_from("<HH", data, 18)
        width, height = struct.unpack_from("<ii", data, 18)
        return abs(width), abs(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack_from("<HH", data, 6)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width, height
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 ":
            width, height = struct.unpack_from("<HH", data, 26)
            return width & 0x3FFF, height & 0x3FFF
        return None
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return _pnm_size(data)
    return None


def check_pixels(width: int, height: int, name: str) -> None:
    """An :class:`ImageError` when ``width x height`` is over the pixel limit."""
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageError(f"image {name!r} is {width} x {height} = {width * height:,} pixels, "
                         f"more than darkcsp's limit of {limit:,} (set "
                         "DARKCSP_MAX_IMAGE_PIXELS to raise it)")


def check_image_file(path: str | os.PathLike) -> tuple[int, int] | None:
    """Refuse (:class:`ImageError`) a path that is not a regular file, a file too large for
    any image within the pixel limit, or a header that claims more pixels than the limit.
    Returns the header's (width, height), or None when the format is left to the decoder."""
    name = os.fspath(path)
    try:
        regular_file(name, "image")
    except FileRefused as exc:
        raise ImageError(str(exc)) from None
    try:
        with open(name, "rb") as handle:
            head = handle.read(_HEAD)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise ImageError(f"cannot read image {name!r}: {exc.strerror or exc}") from None
    limit = max_image_pixels()
    if size > _BYTES_PER_PIXEL * limit + _HEAD:
        raise ImageError(f"image {name!r} is {size:,} bytes, more than any image within "
                         f"darkcsp's limit of {limit:,} pixels can take")
    dims = header_size(head)
    if dims is not None:
        check_pixels(dims[0], dims[1], name)
    return dims
