"""Image references in data rows: open them, check them, make them RGB, fit them to a pixel range.

A row names its image in one of four ways, all handled here:

- a path string, relative to the data file's folder (or absolute);
- a dict ``{"bytes": ..., "path": ...}`` as `datasets` stores images: raw bytes, or base64 text
  when the dict came from JSON; ``path`` is used when ``bytes`` is empty;
- an already decoded `PIL.Image.Image` (a `datasets.Image` feature with decoding on).

Simplifications: one image per row; transparency is flattened onto white (icons and renders are
drawn on white, and a black background would change what the model sees); resizing keeps the
aspect ratio and rounds to whole pixels, it does not snap to a patch multiple (the processor does).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from pathlib import Path
from typing import Any, Union

from PIL import Image, UnidentifiedImageError

ImageRef = Union[str, dict, Image.Image]


class ImageError(ValueError):
    """An image reference that is missing, unreadable or corrupt; `reason` is a short category."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # "missing image" | "corrupt image"
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


def check_image(ref: ImageRef, base_dir: Path) -> tuple[int, int]:
    """Open the header and verify the file's integrity without decoding; returns (width, height)."""
    source = _source(ref, base_dir)
    if isinstance(source, Image.Image):
        return source.size
    try:
        with Image.open(source) as image:
            size = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError("corrupt image", f"{err}") from err
    return size


def load_image(ref: ImageRef, base_dir: Path) -> Image.Image:
    """Decode the referenced image into an RGB image (transparency flattened onto white)."""
    source = _source(ref, base_dir)
    try:
        if isinstance(source, Image.Image):
            source.load()
            return to_rgb(source)
        with Image.open(source) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError("corrupt image", f"{err}") from err


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
