"""report.html (summary maths, escaping, and the page itself in headless Chromium) and the
PredictionWriter callback driven by a real `Trainer.predict`."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from callbacks.predictions import PredictionWriter, merged_predictions
from tests.conftest import require_tool
from vinci.eval.records import Prediction, read_predictions
from vinci.eval.report import OVERALL, mean_scores, summarise, thumbnail, worst_first, write_report

HOSTILE_CODE = "plt.title('x')\n</pre><script>alert(1)</script>\n<script>window.__injected = 1</script>"
HOSTILE_ERROR = "<img src=x onerror=\"window.__injected = 2\"> failed"
SHAPES = {"python": (640, 480), "svg": (200, 200), "html": (320, 900), "latex": (400, 300)}  # html: taller than 2:1


def synthetic_predictions(n: int = 100, seed: int = 0) -> list[Prediction]:
    """n predictions over four languages with real images; every 7th failed to render, every
    3rd chart has F1 scores, sample 5 carries hostile code and sample 8 a hostile error."""
    rng = random.Random(seed)
    languages = list(SHAPES)
    out = []
    for i in range(n):
        language = languages[i % 4]
        size = SHAPES[language]
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        failed = i % 7 == 3 or i == 8
        visual = 0.0 if failed else rng.uniform(0.2, 1.0)
        scores = {
            "reward": 0.9 * visual + 0.1 * (i % 11 != 0) + i * 1e-6,  # distinct values
            "visual": visual,
            "format": float(i % 11 != 0),
            "render": float(not failed),
            "ssim": 0.0 if failed else rng.uniform(0.0, 1.0),
        }
        if language == "python" and i % 3 == 0:
            scores.update({name: rng.uniform(0, 1) for name in ("text_f1", "type_f1", "color_f1", "layout_f1")})
        code = HOSTILE_CODE if i == 5 else (None if i % 11 == 0 else f"# sample {i}\n" + "x = 1\n" * 30)
        reference = Image.new("RGBA" if language == "svg" else "RGB", size, colour)
        out.append(
            Prediction(
                id=f"{language}-{i:03d}",
                source=f"synthetic.jsonl:row {i}" + ("\"><script>window.__injected = 3</script>" if i == 9 else ""),
                language=language,
                prompt="<image>Write the code.",
                text=f"Here is the code\n```{language}\n{code}\n```" if code else "I cannot <b>do</b> that",
                code=code,
                scores=scores,
                render_error=(HOSTILE_ERROR if i == 8 else "SyntaxError: invalid syntax (line 2)") if failed else None,
                render=None if failed else Image.new("RGB", size, tuple(255 - c for c in colour)),
                reference=reference,
            )
        )
    return out


# -- pure parts ---------------------------------------------------------------------------------
def test_mean_scores_counts_each_score_over_the_rows_that_have_it():
    summary = mean_scores([("chart", {"reward": 1.0, "text_f1": 0.5}), ("chart", {"reward": 0.0}), ("icon", {"reward": 0.5})])
    assert list(summary) == ["chart", "icon", OVERALL]
    assert summary["chart"] == {"n": 2.0, "reward": 0.5, "text_f1": 0.5}
    assert summary[OVERALL] == {"n": 3.0, "reward": 0.5, "text_f1": 0.5}
    assert mean_scores([]) == {}


def test_summarise_by_domain_in_task_order():
    predictions = synthetic_predictions(40)
    summary = summarise(predictions)
    assert list(summary) == ["chart", "icon", "web", "figure", OVERALL]
    assert summary[OVERALL]["n"] == 40 and sum(summary[d]["n"] for d in ("chart", "icon", "web", "figure")) == 40
    charts = [p for p in predictions if p.language == "python"]
    with_f1 = [p.scores["type_f1"] for p in charts if "type_f1" in p.scores]
    assert summary["chart"]["type_f1"] == pytest.approx(sum(with_f1) / len(with_f1))
    assert "type_f1" not in summary["icon"]
    assert summary[OVERALL]["render"] == pytest.approx(sum(p.scores["render"] for p in predictions) / 40)


def test_worst_first_puts_missing_rewards_last():
    a, b, c = (Prediction(i, "s", "svg", "p", "t", None, scores=s) for i, s in (("a", {"reward": 0.5}), ("b", {}), ("c", {"reward": 0.1})))
    assert [p.id for p in worst_first([a, b, c])] == ["c", "a", "b"]


def test_thumbnail_caps_width_and_keeps_the_top_of_tall_images():
    tall = thumbnail(Image.new("RGB", (1280, 6000), "red"))
    assert tall.size == (320, 400)
    small = thumbnail(Image.new("RGBA", (100, 50), (0, 0, 0, 0)))
    assert small.size == (100, 50) and small.mode == "RGB" and small.getpixel((0, 0)) == (255, 255, 255)


class Tags(HTMLParser):
    """Every (tag, attributes) of a page, as a browser's tokenizer would see them."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_escapes_model_text_and_embeds_everything(tmp_path):
    predictions = synthetic_predictions(20)
    page = write_report(predictions, tmp_path).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;/pre&gt;&lt;script&gt;alert(1)" in page
    tags = Tags(page).tags
    assert [tag for tag, _ in tags].count("script") == 1
    assert not [name for _, attrs in tags for name in attrs if name.startswith("on")]  # no event handlers
    links = [attrs[name] for _, attrs in tags for name in ("src", "href") if name in attrs]
    assert links and all(link.startswith(("data:image/", "renders/", "references/")) for link in links)
    assert "http://" not in page and "https://" not in page


def test_paths_are_read_from_disk_and_linked(tmp_path):
    predictions = synthetic_predictions(8)
    for p in predictions:
        p.save_images(tmp_path)
    assert predictions[0].render is None and (tmp_path / predictions[0].render_path).is_file()
    predictions[1].reference_path = "references/gone.png"
    page = write_report(predictions, tmp_path).read_text(encoding="utf-8")
    assert f'href="{predictions[0].render_path}"' in page
    assert "file not found: references/gone.png" in page


# -- the page in a real browser -----------------------------------------------------------------
HOOKS = """
window.__alerts = 0;
window.alert = () => { window.__alerts += 1; };
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective));
"""
CARD_IDS = "return Array.from(document.querySelectorAll('#cards > .card')).filter(c => !c.hidden).map(c => c.dataset.id)"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_tool("chromium", "chromedriver")
    from vinci.render.html import Browser
    from vinci.render.options import RenderOptions

    chrome = Browser(root=str(tmp_path_factory.mktemp("chrome")))
    chrome.start(RenderOptions(html_width=1280, html_height=900))  # fresh profile, CHROME_FLAGS
    chrome.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOKS})
    yield chrome.driver
    chrome.kill()


def test_report_in_chromium(browser, tmp_path):
    predictions = synthetic_predictions(100)
    browser.get(write_report(predictions, tmp_path, title="<b>report</b>").as_uri())
    js = browser.execute_script

    images = js("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    expected = sum((p.render is not None) + (p.reference is not None) for p in predictions)
    assert len(images) == expected and all(images)
    assert js("return document.title") == "<b>report</b>"
    assert js("return Array.from(document.querySelectorAll('#summary tbody tr')).map(r => r.dataset.domain)") == [
        "chart", "icon", "web", "figure", "all"
    ]
    headers = js("return Array.from(document.querySelectorAll('#summary thead th')).map(h => h.textContent)")
    assert "text F1" in headers and "SSIM" in headers

    ids = js(CARD_IDS)
    assert len(ids) == 100 and ids == [p.id for p in worst_first(predictions)]
    assert ids[0] == min(predictions, key=lambda p: p.scores["reward"]).id

    by_id = {p.id: p for p in predictions}
    browser.find_element("css selector", "button.sort[data-key=visual]").click()
    visual = [by_id[i].scores["visual"] for i in js(CARD_IDS)]
    assert visual == sorted(visual)
    browser.find_element("css selector", "button.sort[data-key=visual]").click()  # again: descending
    visual = [by_id[i].scores["visual"] for i in js(CARD_IDS)]
    assert visual == sorted(visual, reverse=True)
    browser.find_element("css selector", "button.sort[data-key=text_f1]").click()
    order = js(CARD_IDS)
    with_f1 = [i for i in order if "text_f1" in by_id[i].scores]
    assert order[: len(with_f1)] == with_f1  # samples without the score go last
    assert [by_id[i].scores["text_f1"] for i in with_f1] == sorted(by_id[i].scores["text_f1"] for i in with_f1)

    browser.find_element("css selector", "#domain option[value=icon]").click()
    assert sorted(js(CARD_IDS)) == sorted(p.id for p in predictions if p.language == "svg")
    assert js("return document.getElementById('shown').textContent") == "25 of 100 samples"

    hostile = js("return document.querySelector(`.card[data-id='${arguments[0]}'] pre.code`).textContent", predictions[5].id)
    assert hostile == HOSTILE_CODE
    assert js("return [window.__injected, window.__alerts, document.scripts.length, window.__csp]") == [None, 0, 1, []]
    assert js("return performance.getEntriesByType('resource').length") == 0  # nothing fetched


def test_screenshot_script(tmp_path):
    require_tool("chromium", "chromedriver")
    from benchmarks.report_screenshot import main

    lines = [p.save_images(tmp_path).to_json() + "\n" for p in synthetic_predictions(6)]
    (tmp_path / "predictions.jsonl").write_text("".join(lines), encoding="utf-8")
    out = main(["--dir", str(tmp_path), "--width", "800", "--height", "600"])
    assert (tmp_path / "report.html").is_file() and Image.open(out).size == (800, 600)


# -- PredictionWriter under a real Trainer.predict ------------------------------------------------
class Echo(L.LightningModule):
    """predict_step turns each index of the batch into a Prediction; fails at batch `fail_at`."""

    def __init__(self, fail_at: int = -1):
        super().__init__()
        self.fail_at = fail_at
        self.pool = synthetic_predictions(12)

    def predict_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise RuntimeError("the run died")
        return [self.pool[int(i)] for i in batch]


def predict(tmp_path: Path, module: Echo, **writer_args) -> PredictionWriter:
    writer = PredictionWriter(str(tmp_path / "out"), **writer_args)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, callbacks=[writer],
    )
    loader = torch.utils.data.DataLoader(list(range(12)), batch_size=4)
    trainer.predict(module, loader, return_predictions=False)
    return writer


def test_writer_writes_lines_images_and_report(tmp_path):
    predict(tmp_path, Echo())
    out = tmp_path / "out"
    written = read_predictions(out / "predictions.jsonl")
    expected = synthetic_predictions(12)
    assert [p.id for p in written] == [p.id for p in expected]
    assert [(p.code, p.scores, p.render_error) for p in written] == [(p.code, p.scores, p.render_error) for p in expected]
    for p, e in zip(written, expected):
        assert (p.render_path is not None) == (e.render is not None)
        assert Image.open(out / p.reference_path).size == e.reference.size
        if p.render_path:
            assert Image.open(out / p.render_path).size == e.render.size
    assert "python-000" in (out / "report.html").read_text(encoding="utf-8")


def test_interrupted_run_keeps_finished_batches_and_runs_never_mix(tmp_path):
    with pytest.raises(RuntimeError, match="the run died"):
        predict(tmp_path, Echo(fail_at=2))
    out = tmp_path / "out"
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and all(json.loads(line)["id"] for line in lines)
    assert not (out / "report.html").exists()
    assert len(merged_predictions(out)) == 8  # what a report of the dead run would show

    with pytest.raises(FileExistsError, match="overwrite"):
        predict(tmp_path, Echo())
    assert len((out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == 8  # untouched

    (out / "notes.txt").write_text("mine")
    predict(tmp_path, Echo(), overwrite=True)
    assert len(read_predictions(out / "predictions.jsonl")) == 12 and (out / "notes.txt").read_text() == "mine"


def test_writer_renames_repeated_ids(tmp_path):
    class Twice(Echo):
        def predict_step(self, batch, batch_idx):
            return [replace(self.pool[0]), replace(self.pool[1])] if batch_idx < 2 else []

    predict(tmp_path, Twice())
    ids = [p.id for p in read_predictions(tmp_path / "out" / "predictions.jsonl")]
    assert ids == ["python-000", "svg-001", "python-000-2", "svg-001-2"]


def test_writer_rejects_epoch_interval():
    with pytest.raises(ValueError, match="batch"):
        PredictionWriter("x", write_interval="epoch")
