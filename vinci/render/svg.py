"""Render SVG with cairosvg onto white.

Runs inside a job process. External references are never resolved: the URL fetcher only
decodes inline `data:` URIs, so `file:` and `http:` images/stylesheets/uses render as absent;
XML entities and DTDs are refused by cairosvg's defusedxml parser (billion laughs fails as a
syntax error). The cairo surface is checked against the pixel cap *before* it is allocated,
so a 200,000-pixel canvas fails with kind 'limit' instead of allocating gigabytes.
Output size: `RenderOptions.svg_width/svg_height`; None keeps the document's size/aspect.
"""

from __future__ import annotations

import base64
import sys
import urllib.parse

from PIL import Image

from vinci.render.options import RenderOptions
from vinci.render.result import RenderFailure


WARM_UP_SVG = """<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
 width="32" height="16" viewBox="0 0 32 16"><defs><linearGradient id="g"><stop offset="0" stop-color="red"/>
<stop offset="1" stop-color="#00f"/></linearGradient><style>.c{fill:url(#g)}</style></defs>
<path class="c" d="M1 1h10v10H1z" fill-rule="evenodd"/><circle cx="20" cy="8" r="4" stroke="#000" opacity=".5"/>
<use xlink:href="#g"/><text x="2" y="14" font-family="sans-serif" font-size="4">Aa</text></svg>"""


def preload() -> None:
    """Import cairosvg and render one throwaway SVG (loads cairo, CSS parsing and fonts), so
    forked jobs start warm."""
    render_svg(WARM_UP_SVG, RenderOptions())


EMPTY_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'


def _inline_only(url: str, resource_type: str) -> bytes:
    """cairosvg URL fetcher: decodes data: URIs; anything else (file:, http:, relative
    paths) is never opened and reads as an empty SVG, so it draws nothing."""
    if not url.startswith("data:"):
        return EMPTY_SVG
    meta, _, data = url[5:].partition(",")
    if meta.endswith(";base64"):
        return base64.b64decode(data)
    return urllib.parse.unquote_to_bytes(data)


def _surface_class(options: RenderOptions):
    from cairosvg.surface import PNGSurface

    class CappedPNGSurface(PNGSurface):
        def _create_surface(self, width, height):
            reason = options.check_size(int(width), int(height))
            if reason:
                raise RenderFailure("limit", reason)
            return super()._create_surface(width, height)

    return CappedPNGSurface


def render_svg(code: str, options: RenderOptions) -> Image.Image:
    """Rasterise an SVG document; RGB on white."""
    from cairosvg.parser import Tree

    data = code.encode("utf-8")
    try:
        tree = Tree(bytestring=data, url_fetcher=_inline_only, unsafe=False)
    except RenderFailure:
        raise
    except Exception as error:  # parser errors of every kind: a malformed document
        raise RenderFailure("syntax", f"not a valid SVG document: {type(error).__name__}: {error}"[:300])
    try:
        surface = _surface_class(options)(
            tree,
            None,  # draw in memory; the pixels are read straight from the cairo surface
            96,
            output_width=options.svg_width,
            output_height=options.svg_height,
            background_color="white",
        )
    except (RenderFailure, MemoryError):
        raise
    except Exception as error:  # cairo/cairosvg failures while drawing
        raise RenderFailure("crash", f"cairosvg: {type(error).__name__}: {error}"[:300])
    canvas = surface.cairo
    canvas.flush()
    width, height = canvas.get_width(), canvas.get_height()
    reason = options.check_size(width, height)
    if reason:
        raise RenderFailure("limit", reason)
    # cairo ARGB32 is native-endian; on the opaque white background alpha is always 255
    raw = "BGRX" if sys.byteorder == "little" else "XRGB"
    return Image.frombuffer("RGB", (width, height), bytes(canvas.get_data()), "raw", raw, canvas.get_stride(), 1)
