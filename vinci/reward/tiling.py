"""InternVL's dynamic tiling: the crops that the coarse-to-fine reward compares.

An image is matched to the grid (cols, rows) with 1 <= cols*rows <= max_tiles whose aspect ratio
is closest to its own, resized to (cols*S, rows*S) and cut into S x S tiles in row-major order.
A thumbnail of the whole image at S x S follows the tiles, unless the grid is 1 x 1 (the single
tile already is the whole image).

The grid rule reproduces InternVL's `dynamic_preprocess` / `find_closest_aspect_ratio`, tie-break
included: candidates are visited from the smallest tile count up, and when a candidate's ratio is
exactly as close as the best so far, it replaces the best when the image area exceeds half of the
candidate grid's pixel area. So a large square image gets 2x2 or 3x3 tiles, a small one 1x1.
The candidate order is the same as InternVL's (a set of grids sorted by tile count), so even the
ties between equal-count grids resolve identically.

Simplification: the resize uses bicubic resampling (PIL's default for RGB in the original code).
Images with transparency are composited onto white first (`to_rgb`), so a transparent SVG render
compares like the same drawing on a white page, not on black.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as RGB; transparent pixels become white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, rgba).convert("RGB")
    return image.convert("RGB")


def _check(tile_size: int, min_tiles: int, max_tiles: int) -> None:
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if min_tiles < 1 or max_tiles < min_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got min={min_tiles} max={max_tiles}")


@lru_cache(maxsize=64)
def candidate_grids(min_tiles: int = 1, max_tiles: int = 12) -> tuple[tuple[int, int], ...]:
    """All (cols, rows) with min_tiles <= cols*rows <= max_tiles, in InternVL's visiting order."""
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    }
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def tile_grid(
    width: int, height: int, tile_size: int = 448, min_tiles: int = 1, max_tiles: int = 12
) -> tuple[int, int]:
    """The (cols, rows) grid InternVL picks for a width x height image."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    _check(tile_size, min_tiles, max_tiles)
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def crop_count(
    width: int, height: int, tile_size: int = 448, max_tiles: int = 12, thumbnail: bool = True
) -> int:
    """How many crops `crops` returns for an image of this size (without building them)."""
    cols, rows = tile_grid(width, height, tile_size, 1, max_tiles)
    return cols * rows + int(thumbnail and cols * rows > 1)


def crops(
    image: Image.Image, tile_size: int = 448, max_tiles: int = 12, thumbnail: bool = True
) -> list[Image.Image]:
    """The S x S tiles of `image` in row-major order, then its thumbnail (absent for a 1x1 grid)."""
    image = to_rgb(image)
    width, height = image.size
    cols, rows = tile_grid(width, height, tile_size, 1, max_tiles)
    resized = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    out = [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if thumbnail and len(out) > 1:
        out.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return out
