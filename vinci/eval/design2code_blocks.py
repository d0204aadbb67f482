"""Design2Code's text blocks of a web page, found without OCR (github NoviScl/Design2Code,
Design2Code/metrics/ocr_free_utils.py), in vinci's own code.

Method. The page is parsed into a tree the way BeautifulSoup's `html.parser` builder does it
(tags nest as written; an end tag closes back to its most recent open tag of that name, or is
dropped; void elements hold nothing). Two variants are written out: every element's background
made transparent, and every text-holding tag (TEXT_TAGS, in document order) given its own text
colour from a fixed pool, once as is and once with every channel shifted by 50. The page and
both variants are rendered. A pixel is a text pixel when the shifted render equals the plain
one plus 50 (mod 256, within 8 per channel). Each text node of the body (whitespace stripped,
comments skipped; script and style text included, as BeautifulSoup counts them) inherits the
colour of its nearest ancestor that sets one; its block is the bounding box of the text pixels
within 4 (per channel) of that colour, with the mean colour of those pixels in the plain page.
A block is {text: lower-cased, bbox: (x, y, w, h) as fractions of the page, color: (r, g, b)}.

`prepare_prediction` is the clean-up Design2Code applies to a generated page before it scores
it: repeated content cut, a bare fragment wrapped in <html><body><p>, and any element repeated
more than 50 times (as serialised) dropped after its 50th copy.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Optional

import numpy as np

TEXT_TAGS = (
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "div", "span", "a", "b", "li", "table", "td", "th",
    "button", "footer", "header", "figcaption",
)  # fmt: skip
VOID = frozenset(
    "area base br col embed hr img input keygen link menuitem meta param source track wbr basefont bgsound "
    "command frame image isindex nextid spacer".split()
)
POOL_LEVELS = range(10, 251, 16)  # 16 levels per channel: 4096 text colours
SHIFT = 50  # the second variant's channel shift
PIXEL_TOLERANCE, COLOUR_TOLERANCE = 8, 4


@dataclass
class Node:
    tag: Optional[str]  # None for text; "!comment", "!decl", "!pi" for the others
    attrs: dict = field(default_factory=dict)
    children: list = field(default_factory=list)
    text: str = ""
    raw: bool = False  # script/style text: written out unescaped


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("[document]")
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: "" if v is None else v for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        parent = self.stack[-1]
        if parent.children and parent.children[-1].tag is None:
            parent.children[-1].text += data
        else:
            parent.children.append(Node(None, text=data, raw=parent.tag in ("script", "style")))

    def handle_comment(self, data):
        self.stack[-1].children.append(Node("!comment", text=data))

    def handle_decl(self, decl):
        self.stack[-1].children.append(Node("!decl", text=decl))

    def handle_pi(self, data):
        self.stack[-1].children.append(Node("!pi", text=data))

    def unknown_decl(self, data):
        self.stack[-1].children.append(Node("!decl", text=data))


def parse(page: str) -> Node:
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root


def _attr(value: str) -> str:
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if '"' not in value:
        return f'"{value}"'
    return f"'{value}'" if "'" not in value else '"' + value.replace('"', "&quot;") + '"'


def serialise(node: Node) -> str:
    """The node written out as BeautifulSoup's str() writes it."""
    if node.tag is None:
        return node.text if node.raw else node.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if node.tag == "!comment":
        return f"<!--{node.text}-->"
    if node.tag == "!decl":
        return f"<!{node.text}>"
    if node.tag == "!pi":
        return f"<?{node.text}>"
    inner = "".join(serialise(child) for child in node.children)
    if node.tag == "[document]":
        return inner
    attrs = "".join(f" {k}={_attr(v)}" for k, v in node.attrs.items())
    return f"<{node.tag}{attrs}/>" if node.tag in VOID else f"<{node.tag}{attrs}>{inner}</{node.tag}>"


def _tags(node: Node):
    for child in node.children:
        if child.tag is not None and not child.tag.startswith("!"):
            yield child
            yield from _tags(child)


def _set_style(node: Node, name: str, value: str) -> None:
    kept = [s for s in node.attrs.get("style", "").split(";") if not s.strip().startswith(name) and s.strip()]
    node.attrs["style"] = "; ".join(kept + [f"{name}: {value} !important"]).strip()


def pool(offset: int) -> list[str]:
    """The text colours in the order they are handed out."""
    colours = [((r + offset) % 256, (g + offset) % 256, (b + offset) % 256) for r in POOL_LEVELS for g in POOL_LEVELS for b in POOL_LEVELS]
    return ["#{:02X}{:02X}{:02X}".format(*c) for c in reversed(colours)]


def recoloured(page: str, offset: int = 0) -> str:
    """The page with transparent backgrounds and one pool colour per text-holding tag."""
    root = parse(page)
    for node in _tags(root):
        _set_style(node, "background-color", "rgba(255, 255, 255, 0.0)")
    colours = iter(pool(offset))
    for node in _tags(root):
        if node.tag in TEXT_TAGS:
            _set_style(node, "color", next(colours))  # 4096 colours; more text tags raise, as Design2Code's do
            _set_style(node, "opacity", "1.0")
    return serialise(root)


def _style_colour(node: Node) -> Optional[str]:
    """The text colour an element's style attribute sets, as Design2Code reads it."""
    declarations = [s for s in node.attrs.get("style", "").split(";") if "color" in s and "background-color" not in s]
    if not declarations:
        return None
    value = declarations[-1].split(":")[1].strip().replace(" !important", "")
    if value.startswith("#"):
        return value
    try:
        if value.startswith("rgb"):
            rgb = tuple(map(int, value[4:-1].split(",")))
        else:
            from PIL import ImageColor

            rgb = ImageColor.getrgb(value)
        return "#{:02x}{:02x}{:02x}".format(*rgb)
    except (ValueError, TypeError):
        return None


def text_items(page: str) -> list[tuple[str, str]]:
    """[(text, colour)] of every text node of the page's body, in document order."""
    body = next((n for n in _tags(parse(page)) if n.tag == "body"), None)
    out: list[tuple[str, str]] = []

    def walk(node: Node, colour: str) -> None:
        for child in node.children:
            if child.tag is None:
                if child.text.strip():
                    out.append((child.text.strip(), colour))
            elif not child.tag.startswith("!"):
                walk(child, _style_colour(child) or colour)

    if body is not None:
        walk(body, _style_colour(body) or "#000000")
    return out


def _rgb(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)  # [H, W, 3]


def find_blocks(plain, shot, shot_shifted, items: list[tuple[str, str]]) -> list[dict]:
    """Blocks of the items (from `text_items` of the recoloured page) in the renders of the page
    (`plain`), its recoloured variant (`shot`) and the shifted variant (PIL images)."""
    a, b = _rgb(shot), _rgb(shot_shifted)  # [H, W, 3]
    if a.shape != b.shape:
        return []
    text_pixels = (np.abs((a + SHIFT) % 256 - b) <= PIXEL_TOLERANCE).all(axis=-1)  # [H, W]
    if not text_pixels.any():
        return []
    original = _rgb(plain)
    height, width = a.shape[:2]
    rows, cols = np.nonzero(text_pixels)  # [K] only text pixels can belong to a block
    candidates = (rows, cols, a[rows, cols], original[rows, cols])  # [K], [K], [K, 3], [K, 3]
    found: dict[str, Optional[tuple]] = {}
    blocks = []
    for text, colour in items:
        if colour not in found:
            found[colour] = _locate(colour, *candidates)
        if found[colour] is not None:
            (r0, c0, r1, c1), mean = found[colour]
            bbox = (c0 / width, r0 / height, (c1 - c0 + 1) / width, (r1 - r0 + 1) / height)
            blocks.append({"text": text.lower(), "bbox": bbox, "color": mean})
    return blocks


def _locate(colour: str, rows: np.ndarray, cols: np.ndarray, shot: np.ndarray, original: np.ndarray) -> Optional[tuple]:
    """((row0, col0, row1, col1), mean plain colour) of the text pixels (at rows, cols; their
    colours in the recoloured `shot` and the `original` render) that have one colour, or None."""
    try:
        rgb = np.array([int(colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)
    except ValueError:
        return None  # not a six-digit colour: Design2Code skips it
    low, high = (rgb - np.uint8(COLOUR_TOLERANCE)).astype(np.int16), (rgb + np.uint8(COLOUR_TOLERANCE)).astype(np.int16)  # uint8 wrap, as theirs
    hit = ((shot >= low) & (shot <= high)).all(axis=-1)  # [K]
    if not hit.any():
        return None
    mean = tuple(int(v) for v in original[hit].mean(axis=0).astype(int))
    return (rows[hit].min(), cols[hit].min(), rows[hit].max(), cols[hit].max()), mean


# ----------------------------------------------------------------------------- predictions


def cut_repetition(page: str, chunk: int = 100, repeats: int = 5, similar: float = 0.8) -> str:
    """The page cut where its tag-free text starts repeating (>= `repeats` chunks of `chunk`
    characters at least `similar` alike); unchanged when it does not repeat."""
    text = re.sub("<.*?>", "", page)
    where, at = [], 0
    for char in text:  # position in the page of each character of the text
        while page[at] != char:
            at += 1
        where.append(at)
        at += 1
    seen: dict[str, tuple[difflib.SequenceMatcher, list[int]]] = {}  # chunk -> (a matcher against it, its repeats)
    start = len(text)
    for i in range(0, len(text), chunk):
        piece = text[i : i + chunk]
        for match, hits in seen.values():
            match.set_seq1(piece)  # ratio(piece, chunk); the chunk's index is built once
            if match.quick_ratio() >= similar and match.ratio() >= similar:  # an upper bound first
                hits.append(i // chunk)
                if len(hits) >= repeats:
                    first = min(start, hits[0] * chunk)
                    start = min(start, where[first] if first < len(where) else len(page))
                break
        else:
            seen[piece] = (difflib.SequenceMatcher(None, "", piece), [i // chunk])
    return page[:start] if start != len(text) else page


def prepare_prediction(page: str, max_copies: int = 50) -> str:
    page = cut_repetition(page)
    if not re.search(r"<html[^>]*>", page, re.IGNORECASE):
        page = f"<html><body><p>{page}</p></body></html>"
    root = parse(page)
    counts: dict[str, int] = {}

    def prune(node: Node) -> None:
        for child in list(node.children):
            if child.tag is None or child.tag.startswith("!"):
                continue
            key = serialise(child)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > max_copies:
                node.children.remove(child)
            else:
                prune(child)

    prune(root)
    return serialise(root)
