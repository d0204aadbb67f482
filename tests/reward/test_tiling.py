"""InternVL dynamic tiling: grid choice (tie-break included), crop order, thumbnail rule."""

from __future__ import annotations

import pytest
from PIL import Image, ImageStat

from vinci.reward.tiling import candidate_grids, crop_count, crops, tile_grid, to_rgb

S = 448


def declarative_grid(width, height, tile_size=S, min_tiles=1, max_tiles=12):
    """The rule restated: among the grids with the smallest ratio difference (visited by tile
    count), the last tied one whose pixel area is under twice the image area wins, else the first."""
    grids = candidate_grids(min_tiles, max_tiles)
    diffs = [abs(width / height - c / r) for c, r in grids]
    tied = [g for g, d in zip(grids, diffs) if d == min(diffs)]
    later = [g for g in tied[1:] if width * height > 0.5 * tile_size * tile_size * g[0] * g[1]]
    return later[-1] if later else tied[0]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((448, 448), (1, 1)),  # square: ties 1x1 / 2x2 / 3x3, too small for 2x2
        ((633, 633), (1, 1)),  # area 400689 < 2*S*S = 401408
        ((634, 634), (2, 2)),  # area 401956 > 401408
        ((950, 950), (2, 2)),  # area 902500 < 4.5*S*S = 903168
        ((951, 951), (3, 3)),
        ((1266, 633), (2, 1)),  # ratio 2: 4x2 needs area > 4*S*S = 802816
        ((1268, 634), (4, 2)),
        ((634, 1268), (2, 4)),  # the tall mirror
        ((7, 2), (3, 1)),  # ratio 3.5: 3x1, 4x1 and 6x2 tie exactly; tiny image keeps the first
        ((1400, 400), (4, 1)),  # ... area 560000 passes 4x1 (401408) but not 6x2 (1204224)
        ((3584, 1024), (6, 2)),  # ... and a large one takes the last
        ((10000, 100), (12, 1)),  # very wide
        ((100, 10000), (1, 12)),  # very tall
        ((1, 1), (1, 1)),  # tiny
        ((990, 789), (4, 3)),  # a real chart size (ChartMimic)
    ],
)
def test_tile_grid_cases(size, expected):
    assert tile_grid(*size) == expected


@pytest.mark.parametrize(
    ("size", "kwargs", "expected"),
    [
        ((1000, 200), dict(tile_size=224, max_tiles=6), (5, 1)),
        ((1000, 200), dict(tile_size=224, max_tiles=4), (4, 1)),
        ((448, 448), dict(min_tiles=2), (2, 2)),  # 1x1 excluded: first square grid left
        ((300, 300), dict(tile_size=100, max_tiles=12), (3, 3)),  # 90000 > 0.5*100*100*9
        ((300, 300), dict(tile_size=200, max_tiles=12), (2, 2)),  # 90000 > 80000, < 180000
        ((5000, 5000), dict(max_tiles=3), (1, 1)),  # no other square grid fits
    ],
)
def test_tile_grid_non_default(size, kwargs, expected):
    assert tile_grid(*size, **kwargs) == expected


def test_tile_grid_matches_rule_on_sweep():
    """Every size on a grid of widths/heights, with several tile sizes and maxima, incl. exact ties."""
    sizes = [1, 2, 3, 7, 9, 11, 50, 224, 300, 448, 633, 634, 896, 1000, 1268, 2000, 3584]
    for tile_size, max_tiles in ((448, 12), (224, 6), (100, 9)):
        for w in sizes:
            for h in sizes:
                expected = declarative_grid(w, h, tile_size, 1, max_tiles)
                assert tile_grid(w, h, tile_size, 1, max_tiles) == expected, (w, h, tile_size, max_tiles)


def test_candidate_grids_order():
    grids = candidate_grids(1, 12)
    assert len(grids) == len({(c, r) for c in range(1, 13) for r in range(1, 13) if c * r <= 12})
    counts = [c * r for c, r in grids]
    assert counts == sorted(counts) and grids[0] == (1, 1)


@pytest.mark.parametrize(
    "bad",
    [
        dict(width=0, height=5),
        dict(width=5, height=5, tile_size=0),
        dict(width=5, height=5, max_tiles=0),
        dict(width=5, height=5, min_tiles=3, max_tiles=2),
    ],
)
def test_tile_grid_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        tile_grid(**bad)


def cells_image(cols: int, rows: int, cell: int) -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """An image of cols x rows solid cells, each its own colour (row-major list)."""
    image = Image.new("RGB", (cols * cell, rows * cell))
    colours = []
    for r in range(rows):
        for c in range(cols):
            colour = (40 * c + 20, 60 * r + 10, 200 - 30 * (r * cols + c) % 200)
            image.paste(colour, (c * cell, r * cell, (c + 1) * cell, (r + 1) * cell))
            colours.append(colour)
    return image, colours


def test_crops_row_major_then_thumbnail():
    image, colours = cells_image(3, 2, 100)  # 300x200 -> grid 3x2 at S=100
    assert tile_grid(300, 200, 100) == (3, 2)
    out = crops(image, tile_size=100)
    assert len(out) == 7 == crop_count(300, 200, 100)
    assert all(c.size == (100, 100) for c in out)
    for tile, colour in zip(out[:6], colours):
        mean = ImageStat.Stat(tile.crop((20, 20, 80, 80))).mean  # away from resampled borders
        assert all(abs(m - v) < 1.0 for m, v in zip(mean, colour))
    thumb = out[-1]
    expected = image.resize((100, 100), Image.Resampling.BICUBIC)
    assert thumb.tobytes() == expected.tobytes()


def test_crops_no_thumbnail_for_one_tile_and_on_request():
    assert len(crops(Image.new("RGB", (1, 1), "red"))) == 1  # 1x1 px -> 1x1 grid, no thumbnail
    tile = crops(Image.new("RGB", (1, 1), "red"))[0]
    assert tile.size == (S, S) and tile.getpixel((200, 200)) == (255, 0, 0)
    assert len(crops(Image.new("RGB", (1268, 634)), thumbnail=False)) == 8
    assert len(crops(Image.new("RGB", (1268, 634)))) == 9
    assert len(crops(Image.new("RGB", (1268, 634)), tile_size=224, max_tiles=4)) == 3  # 2x1 + thumb


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    image.putpixel((5, 5), (255, 0, 0, 255))
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((5, 5)) == (255, 0, 0)
    assert crops(image)[0].getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
