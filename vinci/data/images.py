"""Image references in data rows: open them, check them, make them RGB, fit them to a pixel range.

A row names its image in one of these ways, all handled here:

- a path string, relative to the data file's folder (or absolute);
- a URL (``http://``, ``https://``, ``data:`` ...), which is refused: vinci reads no network;
- a dict ``{"bytes": ..., "path": ...}`` as `datasets` stores images: raw bytes, or base64 text
  when the dict came from JSON; ``path`` is used when ``bytes`` is empty;
- an already decoded `PIL.Image.Image` (a `datasets.Image` feature with decoding on).

Checking an image (`check_image`) decodes every pixel, because a PNG with valid CRCs but a
broken zlib stream, or a truncated JPEG, passes a header check and ``verify()`` and only fails
when decoded. The header's size is checked against ``DECODE_MAX_PIXELS`` before any decoding
(a 20000x20000 PNG is refused, not decompressed), and the aspect ratio against ``MAX_ASPECT``,
the limit of Qwen2-VL-style processors (``smart_resize`` raises above 200).

Simplifications: one image per row; transparency is flattened onto white (icons and renders are
drawn on white, and a black background would change what the model sees); resizing keeps the
aspect ratio and rounds to whole pixels, it does not snap to a patch multiple (the processor does).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import zlib
from pathlib import Path
from typing import Any, Union

from PIL import Image, UnidentifiedImageError

ImageRef = Union[str, dict, Image.Image]
DECODE_MAX_PIXELS = 40_000_000  # largest image decoded at all (e.g. 8000x5000); PIL's own bomb limit is ~89M
MAX_ASPECT = 200  # longest side / shortest side; Qwen2-VL's smart_resize refuses more
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^data:", re.ASCII)
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, zlib.error,
                 Image.DecompressionBombError)


class ImageError(ValueError):
    """An image reference that is missing, unreadable or corrupt; `reason` is a short category."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # "missing image" | "corrupt image" | "image too large" | "bad aspect ratio" | "image url"
        self.detail = detail


def _bytes_of(ref: dict) -> bytes | None:
    data = ref.get("bytes")
    if data is None or isinstance(data, (bytes, bytearray)):
        return bytes(data) if data else None
    if isinstance(data, str):
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ImageError("corrupt image", f"'bytes' is text but not base64 ({err})") from err
    raise ImageError("corrupt image", f"'bytes' has type {type(data).__name__}")


def _path_of(ref: str, base_dir: Path) -> Path:
    if URL.match(ref.strip()):
        raise ImageError("image url", f"{ref[:80]!r} is a URL; vinci reads no network: download the images "
                                      "and point the row at the files (or embed the bytes)")
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ImageError("missing image", f"no file {path}")
    return path


def _source(ref: Any, base_dir: Path) -> Union[Path, io.BytesIO, Image.Image]:
    """What PIL should open for this reference."""
    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, str):
        if not ref.strip():
            raise ImageError("missing image", "empty path")
        return _path_of(ref, base_dir)
    if isinstance(ref, dict):
        data = _bytes_of(ref)
        if data:
            return io.BytesIO(data)
        if isinstance(ref.get("path"), str) and ref["path"].strip():
            return _path_of(ref["path"], base_dir)
        raise ImageError("missing image", "dict with neither 'bytes' nor 'path'")
    raise ImageError("missing image", f"unsupported image reference of type {type(ref).__name__}")


def check_size(width: int, height: int, max_decode_pixels: int = DECODE_MAX_PIXELS) -> None:
    """ImageError unless the size is decodable and within the processor's aspect-ratio rule."""
    if width < 1 or height < 1:
        raise ImageError("corrupt image", f"size {width}x{height}")
    if width * height > max_decode_pixels:
        raise ImageError("image too large", f"{width}x{height} = {width * height} pixels; the cap is {max_decode_pixels}")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError("bad aspect ratio", f"{width}x{height}: the processor needs an aspect ratio under {MAX_ASPECT}")


def check_image(ref: ImageRef, base_dir: Path, max_decode_pixels: int = DECODE_MAX_PIXELS) -> tuple[int, int]:
    """Decode every pixel (after checking the header's size); returns (width, height)."""
    return load_image(ref, base_dir, max_decode_pixels).size


def load_image(ref: ImageRef, base_dir: Path, max_decode_pixels: int = DECODE_MAX_PIXELS) -> Image.Image:
    """Decode the referenced image into an RGB image (transparency flattened onto white).

    The header's size is checked (`check_size`) before the pixels are decoded.
    """
    source = _source(ref, base_dir)
    try:
        if isinstance(source, Image.Image):
            check_size(*source.size, max_decode_pixels)
            source.load()
            return to_rgb(source)
        with Image.open(source) as image:
            check_size(*image.size, max_decode_pixels)
            image.load()
            return to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError("image too large", f"{err}") from err
    except DECODE_ERRORS as err:
        raise ImageError("corrupt image", f"{type(err).__name__}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; alpha (also palette transparency) is composited onto white."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def fitted_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) scaled with the aspect ratio kept so that min_pixels <= w*h <= max_pixels."""
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    area = width * height
    if min_pixels <= area <= max_pixels:
        return width, height
    scale = math.sqrt((max_pixels if area > max_pixels else min_pixels) / area)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    # Rounding can land a pixel row outside the range; step the longer side back in.
    while w * h > max_pixels and max(w, h) > 1:
        w, h = (w - 1, h) if w >= h else (w, h - 1)
    while w * h < min_pixels:
        w, h = (w + 1, h) if w <= h else (w, h + 1)
    return w, h


def fit_pixels(image: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """Resize (bicubic) so the pixel count lies in [min_pixels, max_pixels]; aspect ratio kept."""
    size = fitted_size(image.width, image.height, min_pixels, max_pixels)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC)
