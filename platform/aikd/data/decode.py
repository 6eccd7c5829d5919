"""The one way aikd turns image bytes into pixels, for every stage: ingest, training, labelling,
evaluation and scoring.

:func:`image_header` is the size guard every decode goes through first: a decompression
bomb (a few KB claiming 30000 x 30000 px) is refused from its header, before any pixel
buffer is allocated. :func:`decode_image` then decodes with OpenCV, which turns the image
upright by its EXIF orientation tag, as photo viewers show it. That is aikd's one
orientation policy: landmarks and boxes, given in a table or found by a detector, are in
the upright image's pixels, and a stored face is decoded upright everywhere. (A decoder
that ignores the tag, as PIL's does by default, sees a phone photo taken upright sideways,
and its landmarks point at the wrong place.)
"""

from __future__ import annotations

import io
import struct
import warnings

import cv2
import numpy as np
from PIL import Image

MIN_IMAGE_SIDE = 16  # pixels: below this there is no face to align (the smallest model input is 16 px)
MAX_IMAGE_PIXELS = 50_000_000  # 50 MP decodes to 150 MB; a header claiming more is refused undecoded

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # SOFn


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first frame header (SOFn), walking the marker segments before it."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _JPEG_FRAMES:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        else:
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _any_size(data: bytes) -> tuple[int, int] | None:
    """Other formats (BMP, WebP, ...): PIL reads the header only; ``open`` decodes no pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller's limit is lower
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        return (2**31 - 1, 2**31 - 1)  # beyond PIL's own limit, so beyond ours
    except Exception:
        return None


def image_header(data: bytes | None) -> tuple[int, int] | str:
    """(width, height) from the image's header if it may be decoded, else why not.

    Nothing is decoded and no pixel buffer is allocated, so a decompression bomb (a few KB
    claiming 30000 x 30000 px) is refused here. Every decoder in aikd calls this first.
    """
    if data is None or len(data) == 0:
        return "empty image file"
    if data.startswith(_PNG_SIGNATURE):
        size = _png_size(data)
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    else:
        size = _any_size(data)
    if size is None:
        return "undecodable image"
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        return f"image too large ({width}x{height} px, more than {MAX_IMAGE_PIXELS:,} pixels)"
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"image too small ({width}x{height} px, less than {MIN_IMAGE_SIDE} px a side)"
    return width, height


def decode_image(blob: bytes | None) -> tuple[np.ndarray | None, str]:
    """(BGR uint8 image, upright by its EXIF orientation, '') or (None, why not).

    The header is checked first (:func:`image_header`). ``IMREAD_COLOR`` converts whatever
    else decodes to 3 channels of 8 bits: grayscale is replicated, alpha is dropped, 16-bit
    samples are scaled down, CMYK becomes BGR. Truncated JPEG and PNG data is refused.
    """
    header = image_header(blob)
    if isinstance(header, str):
        return None, header
    image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    return (image, "") if image is not None else (None, "undecodable image")


