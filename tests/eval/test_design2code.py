"""Design2Code's low-level web scores: the page rewriting, the pixel block finder on synthetic
screenshots (no browser), the clean-up of generated pages, and the matching and scores on
hand-built blocks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vinci.eval.chartmimic import ciede2000, rgb_to_lab
from vinci.eval.design2code import SCORE_KEYS, design2code_scores
from vinci.eval.design2code_blocks import find_blocks, parse, pool, prepare_prediction, recoloured, serialise, text_items

PAGE = (
    "<!DOCTYPE html><html><head><style>p { margin: 0 }</style></head>"
    '<body><div style="color: red; padding: 4px">Title &amp; more<p>First <b>bold</b></p></div>'
    "<section>loose</section><!-- note --><br></body></html>"
)


def block(text, x, y, w=0.1, h=0.05, color=(0, 0, 0)):
    return {"text": text, "bbox": (x, y, w, h), "color": color}


# ----------------------------------------------------------------------------- pages


def test_recolouring_gives_each_text_tag_its_own_colour_and_clears_backgrounds():
    out = recoloured(PAGE)
    colours = pool(0)
    assert colours[0] == "#FAFAFA" and len(set(colours)) == 4096
    div = out[out.index("<div") : out.index(">", out.index("<div"))]
    declarations = [d.strip() for d in div.split('"')[1].split(";")]
    assert declarations == [
        "padding: 4px", "background-color: rgba(255, 255, 255, 0.0) !important",
        f"color: {colours[0]} !important", "opacity: 1.0 !important",
    ]  # fmt: skip  (the page's own colour is replaced)
    assert f"color: {colours[1]} !important" in out[out.index("<p style") :]
    assert f"color: {colours[2]} !important" in out  # <b>
    assert '<section style="background-color: rgba(255, 255, 255, 0.0) !important">' in out  # not a text tag
    assert "<br style=" in out and "/>" in out and "Title &amp; more" in out and "<!-- note -->" in out
    assert pool(50)[0] == "#2C2C2C"  # (250 + 50) % 256


def test_text_nodes_take_the_colour_of_their_nearest_coloured_ancestor():
    items = text_items(recoloured(PAGE))
    colours = pool(0)
    assert items == [("Title & more", colours[0]), ("First", colours[1]), ("bold", colours[2]), ("loose", "#000000")]
    assert text_items("<html><body>x<span style='color: rgb(1, 2, 3)'>y</span></body></html>") == [("x", "#000000"), ("y", "#010203")]


def test_parser_closes_back_to_the_matching_tag_and_drops_stray_end_tags():
    root = parse("<div><span>a</div></p>b")
    assert serialise(root) == "<div><span>a</span></div>b"


def test_blocks_are_the_boxes_of_pixels_that_shift_by_50():
    colours = pool(0)
    shot = np.full((20, 40, 3), 255, np.uint8)
    shot[2:5, 3:10] = [int(colours[0][i : i + 2], 16) for i in (1, 3, 5)]  # text of colour 0
    shifted = shot.copy()
    shifted[2:5, 3:10] = (shot[2:5, 3:10].astype(int) + 50) % 256
    plain = np.full((20, 40, 3), 255, np.uint8)
    plain[2:5, 3:10] = [10, 20, 30]
    items = [("Hello", colours[0]), ("World", colours[0]), ("gone", colours[1])]
    blocks = find_blocks(*(Image.fromarray(a) for a in (plain, shot, shifted)), items)
    assert [b["text"] for b in blocks] == ["hello", "world"]  # colour 1 drew no pixel
    assert blocks[0]["bbox"] == pytest.approx((3 / 40, 2 / 20, 7 / 40, 3 / 20))
    assert blocks[0]["color"] == (10, 20, 30)
    assert find_blocks(*(Image.fromarray(a) for a in (plain, shot, shot)), items) == []  # nothing shifted


def test_generated_pages_are_cleaned_up_as_design2code_does():
    assert prepare_prediction("just text") == "<html><body><p>just text</p></body></html>"
    page = "<html><body>" + "<br>" * 60 + "<p>x</p></body></html>"
    assert prepare_prediction(page).count("<br/>") == 50
    repeated = "<html><body>" + "".join(f"<p>{'the same words again ' * 6}</p>" for _ in range(8)) + "</body></html>"
    cut = prepare_prediction(repeated)
    assert cut.count("<p>") < 8  # cut where the text repeats


# ----------------------------------------------------------------------------- scores


def test_identical_pages_score_one_and_empty_pages_zero():
    blocks = [block("a heading", 0.1, 0.1), block("some body text", 0.1, 0.3, color=(200, 0, 0))]
    assert design2code_scores(blocks, blocks) == dict.fromkeys(SCORE_KEYS, 1.0)
    assert design2code_scores([], blocks) == design2code_scores(blocks, []) == dict.fromkeys(SCORE_KEYS, 0.0)
    assert design2code_scores([block("zzzz", 0, 0)], [block("aaaa", 0, 0)]) == dict.fromkeys(SCORE_KEYS, 0.0)


def test_position_colour_and_text_of_a_matched_pair():
    ref = [block("welcome to the page", 0.1, 0.1, color=(0, 0, 0))]
    pred = [block("welcome to a page", 0.3, 0.15, color=(255, 0, 0))]
    scores = design2code_scores(pred, ref)
    from difflib import SequenceMatcher

    assert scores["d2c_text"] == pytest.approx(SequenceMatcher(None, "welcome to a page", "welcome to the page").ratio())
    assert scores["d2c_position"] == pytest.approx(1 - 0.2)  # max(|dx| = 0.2, |dy| = 0.05)
    red_black = ciede2000(rgb_to_lab(np.array([[255, 0, 0]])), rgb_to_lab(np.array([[0, 0, 0]])))[0, 0]
    assert scores["d2c_color"] == pytest.approx(1 - red_black / 100)
    assert scores["d2c_block"] == 1.0


def test_unmatched_blocks_lower_the_block_score_by_area():
    ref = [block("kept text", 0, 0, 0.2, 0.1), block("missing text", 0, 0.5, 0.2, 0.3)]
    scores = design2code_scores([block("kept text", 0, 0, 0.2, 0.1)], ref)
    assert scores["d2c_block"] == pytest.approx((0.02 + 0.02) / (0.04 + 0.06))
    assert scores["d2c_text"] == 1.0


def test_neighbouring_blocks_merge_when_that_matches_better():
    ref = [block("hello there", 0.1, 0.1, 0.1), block("general kenobi", 0.2, 0.1, 0.1)]
    pred = [block("hello there general kenobi", 0.1, 0.1, 0.2)]
    scores = design2code_scores(pred, ref)
    assert scores["d2c_text"] == 1.0 and scores["d2c_block"] == 1.0  # the two reference blocks became one


# ----------------------------------------------------------------------------- end to end


def test_web_answers_get_design2code_scores_from_real_renders(corpora):
    """score_samples on a real Design2Code page: the page itself, the page with its heading
    retitled, and an answer without code, all rendered in Chromium in the sandboxed pool."""
    from vinci.eval.design2code import page_blocks
    from vinci.eval.scoring import score_samples
    from vinci.reward.metric import PatchSimilarity
    from vinci.render import RenderJob, RenderPool
    from vinci.render.options import RenderOptions

    page = (corpora / "html" / "4704.html").read_text()
    edited = page.replace("Bandit II", "Roadster Mk IV").replace("Beatnik", "Zephyr")
    assert edited != page
    with RenderPool(workers=1, timeout=60.0, options=RenderOptions(html_width=1280, html_height=720)) as pool:
        reference = page_blocks([page], pool, prediction=False)[0]
        image = pool.render_many([RenderJob("html", page)])[0].image
        answers = [f"```html\n{p}\n```" for p in (page, edited)] + ["no page here"]
        scored = score_samples(answers, ["html"] * 3, [image] * 3, pool, PatchSimilarity(), reference_blocks=[reference] * 3)
    same, retitled, missing = scored.scores
    assert reference and len(reference) >= 3  # the page has several text blocks
    assert same["d2c_block"] > 0.95 and same["d2c_text"] > 0.95 and same["d2c_position"] > 0.95 and same["d2c_color"] > 0.95
    assert retitled["d2c_text"] < same["d2c_text"]
    assert {k: missing[k] for k in SCORE_KEYS} == dict.fromkeys(SCORE_KEYS, 0.0)
    assert "text_f1" not in same  # chart scores stay with charts
