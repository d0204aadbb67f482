"""report.html: one self-contained page that shows how an evaluation went.

The page has a summary table (one row per domain, then "all": sample count, format and render
rate, mean visual score, SSIM and reward, and for charts the four low-level F1 means), then
one card per sample: reference | render side by side, its scores, its render error, its code
in a scrollable block, and its id and source. Cards start worst first (by `reward`,
ascending); a few lines of inline JavaScript re-sort them by any score and filter them by
domain.

Everything is inline: CSS, script, and the images as base64 data URIs, so the one file can be
mailed or opened offline. A Content-Security-Policy meta tag allows only the page's own
script and style (by nonce) and `data:` images, so nothing is fetched from anywhere.

Everything that came from a model (code, text, render errors) or a data set (ids, sources)
is HTML-escaped; the CSP is a second line of defence, not the first.

Simplifications, to stay light for 1000 samples: images are embedded as thumbnails at most
320 px wide (JPEG, or PNG for flat images of few colours), and an image taller than 1.25
times its width (a long web page) shows only its top: about 30 KB per chart sample, so
1000 samples make a report of about 30 MB. Each thumbnail links to the full-size PNG
(`renders/ID.png`, `references/ID.png`) when the prediction has its path. Code and text longer
than 20,000 characters are cut in the page (predictions.jsonl keeps them whole).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import secrets
from pathlib import Path
from typing import Iterable, Optional, Sequence
from urllib.parse import quote

from PIL import Image

from vinci.eval.records import SCORE_NAMES, Prediction
from vinci.tasks import TASKS

OVERALL = "all"
REPORT_FILE = "report.html"
THUMB_WIDTH = 320  # px, widest embedded image
MAX_ASPECT = 1.25  # height / width beyond which a thumbnail keeps only the image's top
MAX_CHARS = 20_000  # longest code or text shown in a card
# summary columns in display order: key -> header ("n" is the sample count, the rest are means)
COLUMNS = {
    "n": "n",
    "format": "format rate",
    "render": "render rate",
    "visual": "visual",
    "ssim": "SSIM",
    "reward": "reward",
    "text_f1": "text F1",
    "type_f1": "type F1",
    "color_f1": "color F1",
    "layout_f1": "layout F1",
}
RATES = ("format", "render")  # shown as percentages
SORT_KEY = re.compile(r"[a-z0-9_]+")  # score names that can be data-* attribute names (and so sort keys)


# -- summary maths (pure) -----------------------------------------------------------------------
def domain_of(language: str) -> str:
    """The domain of a canonical language (chart, icon, web, figure); an unknown language is
    its own domain, so nothing is dropped from the table."""
    task = TASKS.get(language)
    return task.domain if task is not None else language


def mean_scores(rows: Sequence[tuple[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-group means of (group, scores) rows, plus an OVERALL group.

    Each group gets "n" (its row count) and, for every score name that at least one of its
    rows has, the mean over the rows that have it (chart F1 scores exist only for some rows).
    Groups come in first-seen order, OVERALL last."""
    sums: dict[str, dict[str, float]] = {}  # group -> score -> sum
    counts: dict[str, dict[str, int]] = {}  # group -> score (and "n") -> rows that have it
    for group, scores in rows:
        for key in (group, OVERALL):
            total, count = sums.setdefault(key, {}), counts.setdefault(key, {"n": 0})
            count["n"] += 1
            for name, value in scores.items():
                total[name] = total.get(name, 0.0) + float(value)
                count[name] = count.get(name, 0) + 1
    order = [g for g in counts if g != OVERALL] + ([OVERALL] if counts else [])
    return {g: {"n": float(counts[g]["n"])} | {k: v / counts[g][k] for k, v in sums[g].items()} for g in order}


def summarise(predictions: Iterable[Prediction]) -> dict[str, dict[str, float]]:
    """domain -> metric -> value: "n" and the mean of every score, per domain (in the order of
    `vinci.tasks.TASKS`, then unknown languages) and over all samples ("all", last)."""
    rank = {task.domain: i for i, task in enumerate(TASKS.values())}
    rows = sorted(
        ((domain_of(p.language), p.scores) for p in predictions),
        key=lambda row: (rank.get(row[0], len(rank)), row[0]),
    )
    return mean_scores(rows)


def worst_first(predictions: Iterable[Prediction]) -> list[Prediction]:
    """Ascending reward; samples without a reward last; ties by id."""
    def key(p: Prediction):
        reward = p.scores.get("reward")
        missing = reward is None or not math.isfinite(reward)
        return (missing, 0.0 if missing else reward, p.id)

    return sorted(predictions, key=key)


# -- images ---------------------------------------------------------------------------------------
def thumbnail(image: Image.Image, width: int = THUMB_WIDTH, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """RGB on white, at most `width` wide, cut to its top when taller than max_aspect × its width
    (the input itself when it already fits; never modified)."""
    w, h = image.size
    if h > max_aspect * w:
        image = image.crop((0, 0, w, max(1, int(max_aspect * w))))  # crop first: a tall page is big
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA")
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS, reducing_gap=3.0)
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    return image


def data_uri(image: Image.Image) -> str:
    """A base64 data URI: PNG for a flat image of at most 256 colours (icons, simple figures),
    JPEG (quality 75) otherwise, which is 3x smaller and 10x faster to encode for a chart."""
    flat = image.getcolors(256) is not None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if flat else "JPEG", **({} if flat else {"quality": 75}))
    kind = "png" if flat else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def load_image(image: Optional[Image.Image], path: Optional[str], out_dir: Path) -> tuple[Optional[Image.Image], str]:
    """(image, why it is missing): the in-memory image, else the file at `path` under out_dir."""
    if image is not None:
        return image, ""
    if not path:
        return None, ""
    file = out_dir / path
    if not file.is_file():
        return None, f"file not found: {path}"
    with Image.open(file) as opened:
        opened.load()
        return opened.copy(), ""


# -- HTML pieces ----------------------------------------------------------------------------------
def esc(text) -> str:
    return html.escape(str(text), quote=True)


def fmt(metric: str, value: Optional[float]) -> str:
    if value is None:
        return "–"
    if metric == "n":
        return str(int(value))
    if metric in RATES:
        return f"{100 * value:.1f}%"
    return f"{value:.3f}"


def summary_table(summary: dict[str, dict[str, float]]) -> str:
    """The per-domain table; a column appears only when some row has that metric."""
    present = set().union(*summary.values()) if summary else set()
    columns = [c for c in COLUMNS if c in present] + sorted(present - set(COLUMNS))
    language = {task.domain: task.language for task in TASKS.values()}
    head = "".join(f"<th>{esc(COLUMNS.get(c, c))}</th>" for c in columns)
    body = []
    for domain, row in summary.items():
        label = esc(domain) + (f" <span class=lang>({esc(language[domain])})</span>" if domain in language else "")
        cells = "".join(f"<td>{fmt(c, row.get(c))}</td>" for c in columns)
        body.append(f'<tr data-domain="{esc(domain)}"><th scope=row>{label}</th>{cells}</tr>')
    return f'<table id=summary><thead><tr><th>domain</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def figure(label: str, image: Optional[Image.Image], path: Optional[str], missing: str) -> str:
    """One side of a card: a linked thumbnail, or a box saying why there is none."""
    if image is None:
        return f"<figure><div class=missing>{esc(missing or 'no image')}</div><figcaption>{esc(label)}</figcaption></figure>"
    thumb = thumbnail(image)
    cut = " (top)" if image.height > MAX_ASPECT * image.width else ""
    img = f'<img src="{data_uri(thumb)}" width={thumb.width} height={thumb.height} alt="{esc(label)}">'
    if path:
        img = f'<a href="{esc(quote(path, safe="/"))}" target=_blank>{img}</a>'
    return f"<figure>{img}<figcaption>{esc(label)}{cut}, {image.width}×{image.height}</figcaption></figure>"


def clipped(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return esc(text)
    return esc(text[:MAX_CHARS]) + f"\n<span class=cut>… {len(text) - MAX_CHARS} more characters in predictions.jsonl</span>"


def card(p: Prediction, out_dir: Path) -> str:
    """One sample: header, reference | render, scores, render error, code (or the raw answer)."""
    domain = domain_of(p.language)
    reference, reference_missing = load_image(p.reference, p.reference_path, out_dir)
    render, render_missing = load_image(p.render, p.render_path, out_dir)
    sortable = {k: v for k, v in p.scores.items() if SORT_KEY.fullmatch(k) and math.isfinite(v)}
    data = "".join(f' data-s-{k}="{v:.6g}"' for k, v in sortable.items())
    scores = "".join(f"<span>{esc(k)} <b>{fmt('', v)}</b></span>" for k, v in p.scores.items())
    error = f"<div class=error><b>render error</b> {esc(p.render_error)}</div>" if p.render_error else ""
    if p.code is not None:
        body = f"<pre class=code>{clipped(p.code)}</pre>"
    else:
        body = f"<div class=note>no code block extracted; the model's answer:</div><pre class=code>{clipped(p.text)}</pre>"
    return (
        f'<article class=card data-domain="{esc(domain)}" data-id="{esc(p.id)}"{data}>'
        f"<header><b class=id>{esc(p.id)}</b> <span class=tag>{esc(domain)} · {esc(p.language)}</span>"
        f" <span class=source>{esc(p.source)}</span></header>"
        f"<div class=body><div class=pair>"
        f"{figure('reference', reference, p.reference_path, reference_missing)}"
        f"{figure('render', render, p.render_path, render_missing or 'no render')}"
        f"</div><div class=detail><div class=scores>{scores}</div>{error}{body}</div></div></article>"
    )


def controls(score_keys: Sequence[str], domains: Sequence[str]) -> str:
    buttons = "".join(
        f'<button type=button class=sort data-key="{esc(k)}" aria-pressed="{str(k == "reward").lower()}">{esc(k)}</button>'
        for k in score_keys
    )
    options = "".join(f'<option value="{esc(d)}">{esc(d)}</option>' for d in (OVERALL, *domains))
    return (
        f"<nav id=controls>sort by {buttons} <span id=direction>ascending</span>"
        f" · domain <select id=domain>{options}</select> · <span id=shown></span></nav>"
    )


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 8px; }
table#summary { border-collapse: collapse; margin: 8px 0 16px; background: #fff; }
#summary th, #summary td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
#summary th[scope=row], #summary thead th:first-child { text-align: left; }
#summary tr[data-domain="all"] { font-weight: bold; background: #f0f0f0; }
.lang { color: #777; font-weight: normal; }
nav#controls { position: sticky; top: 0; background: #fafafa; padding: 6px 0; border-bottom: 1px solid #ddd; z-index: 1; }
button.sort { font: inherit; border: 1px solid #bbb; background: #fff; border-radius: 4px; padding: 1px 8px; cursor: pointer; }
button.sort[aria-pressed=true] { background: #2b6cb0; color: #fff; border-color: #2b6cb0; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 12px 0; padding: 8px 12px; }
.card header { margin-bottom: 6px; }
.tag { background: #eef; border-radius: 4px; padding: 0 6px; }
.source { color: #777; font-size: 12px; overflow-wrap: anywhere; }
.body { display: flex; gap: 12px; align-items: flex-start; }
.pair { display: flex; gap: 8px; flex: none; }
figure { margin: 0; width: 320px; }
figure img { display: block; max-width: 320px; height: auto; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #777; }
.missing { width: 318px; height: 120px; display: flex; align-items: center; justify-content: center; text-align: center;
  border: 1px dashed #c66; color: #a33; background: #fff6f6; overflow: hidden; }
.detail { flex: 1; min-width: 0; }
.scores span { display: inline-block; margin: 0 12px 4px 0; }
.error { color: #a33; background: #fff6f6; border-left: 3px solid #c66; padding: 2px 6px; margin: 4px 0;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 8em; overflow: auto; }
.note { color: #777; font-size: 12px; }
pre.code { background: #f6f6f6; border: 1px solid #eee; padding: 6px; margin: 4px 0 0; max-height: 300px;
  overflow: auto; font-size: 12px; white-space: pre; }
.cut { color: #a33; }
"""

# Sorting reads only data-* attributes that the page writer put there; it never builds HTML.
SCRIPT = """
(() => {
  const list = document.getElementById("cards");
  const cards = Array.from(list.children);
  cards.forEach((card, i) => { card.dataset.rank = i; });
  const buttons = Array.from(document.querySelectorAll("button.sort"));
  const domain = document.getElementById("domain");
  let key = "reward", ascending = true;
  const score = (card) => {
    const v = parseFloat(card.getAttribute("data-s-" + key));
    return Number.isFinite(v) ? v : null;
  };
  function sort() {
    const sorted = cards.slice().sort((a, b) => {
      const x = score(a), y = score(b);
      if (x === null || y === null) {
        if (x !== y) return x === null ? 1 : -1;  // samples without the score go last
      } else if (x !== y) {
        return ascending ? x - y : y - x;
      }
      return a.dataset.rank - b.dataset.rank;
    });
    sorted.forEach((card) => list.appendChild(card));
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.key === key)));
    document.getElementById("direction").textContent = ascending ? "ascending" : "descending";
  }
  function filter() {
    let shown = 0;
    for (const card of cards) {
      card.hidden = domain.value !== "all" && card.dataset.domain !== domain.value;
      if (!card.hidden) shown += 1;
    }
    document.getElementById("shown").textContent = shown + " of " + cards.length + " samples";
  }
  buttons.forEach((b) => b.addEventListener("click", () => {
    ascending = b.dataset.key === key ? !ascending : true;  // a second click flips the order
    key = b.dataset.key;
    sort();
  }));
  domain.addEventListener("change", filter);
  filter();
})();
"""


def page(predictions: Sequence[Prediction], out_dir: Path, title: str) -> str:
    """The whole report as one HTML string."""
    nonce = secrets.token_urlsafe(16)
    summary = summarise(predictions)
    present = {k for p in predictions for k in p.scores if SORT_KEY.fullmatch(k)}
    score_keys = [k for k in SCORE_NAMES if k in present] + sorted(present - set(SCORE_NAMES))
    domains = [d for d in summary if d != OVERALL]
    cards = "".join(card(p, out_dir) for p in worst_first(predictions))
    policy = f"default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        f'<meta name=viewport content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f'<style nonce="{nonce}">{STYLE}</style></head><body>'
        f"<h1>{esc(title)}</h1><p>{len(predictions)} samples, worst reward first. "
        "Thumbnails link to the saved PNGs.</p>"
        f"{summary_table(summary)}{controls(score_keys, domains)}"
        f"<main id=cards>{cards}</main>"
        f'<script nonce="{nonce}">{SCRIPT}</script></body></html>'
    )


def write_report(predictions: Sequence[Prediction], out_dir: Path, title: str = "vinci evaluation report") -> Path:
    """Write out_dir/report.html and return its path. Images come from each prediction's
    in-memory `render`/`reference`, else from `render_path`/`reference_path` under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    # errors="replace": a lone surrogate in model text must not lose the whole report
    path.write_text(page(list(predictions), out_dir, title), encoding="utf-8", errors="replace")
    return path
