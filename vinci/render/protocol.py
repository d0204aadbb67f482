"""Length-prefixed frames (JSON header + raw bytes) over pipes, and images as raw RGB.

Every hop (pool <-> worker, worker <- job process) uses the same frame:
`<u32 header length><u32 payload length><header JSON><payload>`. Nothing is unpickled, so
bytes written by an untrusted job can at worst produce a malformed frame, never run code
in the worker. Images travel as raw RGB (no PNG encode/decode on the hot path).
Every pool -> worker request carries a fresh random `nonce` that the reply must echo: the
pool takes a reply only for the request it sent (see `handle`), never a frame some other
process slipped into the pipe or one left over from an earlier request.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from typing import Optional

from PIL import Image

_PREFIX = struct.Struct("<II")
MAX_HEADER = 1 << 20  # 1 MiB of JSON is far more than any header needs
MAX_REQUEST_BYTES = 64 << 20  # program text per pool -> worker request (the pool splits batches to fit)


class ProtocolError(RuntimeError):
    """A peer sent bytes that are not a valid frame."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(len(head), len(payload)) + head + payload


def write_frame(fd: int, header: dict, payload: bytes = b"") -> None:
    """Write one whole frame to a blocking fd."""
    view = memoryview(encode(header, payload))
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameReader:
    """Accumulates bytes from a fd until one frame is complete (select-loop friendly)."""

    def __init__(self, max_payload: int):
        self.max_payload = max_payload
        self.buffer = bytearray()
        self.frame: Optional[tuple[dict, bytes]] = None
        self.eof = False

    def feed(self, fd: int, chunk: int = 1 << 20) -> bool:
        """Read what is available from fd; True when bytes arrived (False: none yet, or EOF)."""
        try:
            data = os.read(fd, chunk)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EINTR):
                return False
            raise
        if not data:
            self.eof = True
            return False
        self.buffer += data
        self._parse()
        return True

    def _parse(self) -> None:
        if self.frame is not None or len(self.buffer) < _PREFIX.size:
            return
        head_len, payload_len = _PREFIX.unpack_from(self.buffer)
        if head_len > MAX_HEADER or payload_len > self.max_payload:
            raise ProtocolError(f"frame too large (header {head_len} B, payload {payload_len} B)")
        end = _PREFIX.size + head_len + payload_len
        if len(self.buffer) < end:
            return
        try:
            header = json.loads(bytes(self.buffer[_PREFIX.size : _PREFIX.size + head_len]))
        except ValueError as error:
            raise ProtocolError(f"frame header is not JSON: {error}") from error
        if not isinstance(header, dict):
            raise ProtocolError("frame header is not an object")
        self.frame = (header, bytes(self.buffer[_PREFIX.size + head_len : end]))
        del self.buffer[:end]

    def take(self) -> Optional[tuple[dict, bytes]]:
        frame, self.frame = self.frame, None
        if frame is not None:
            self._parse()
        return frame


def image_to_frame(image: Image.Image) -> tuple[dict, bytes]:
    """An RGB image as (header, raw bytes)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return {"ok": True, "size": list(rgb.size)}, rgb.tobytes()


def frame_to_image(header: dict, payload: bytes, max_pixels: int) -> Image.Image:
    """Rebuild an image from a frame, checking the declared size against the payload."""
    size = header.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ProtocolError(f"bad image size {size!r}")
    width, height = size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise ProtocolError(f"image size {width}x{height} outside the pixel cap")
    if len(payload) != width * height * 3:
        raise ProtocolError(f"image payload is {len(payload)} B, expected {width * height * 3}")
    return Image.frombytes("RGB", (width, height), payload)


def on_white(image: Image.Image) -> Image.Image:
    """Composite any transparency onto white and return an RGB image."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")
