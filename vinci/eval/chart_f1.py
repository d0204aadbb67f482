"""Low-level chart scores from two call traces (see `vinci.render.trace`): ChartMimic's four,
as ChartMimic defines them (`vinci.eval.chartmimic`), and two of vinci's own.

A chart program is traced while it renders in the sandbox. A generated program is scored
against the reference program, no LLM:

    text_f1, type_f1, color_f1, layout_f1
               ChartMimic's low-level F1s (`vinci.eval.chartmimic`): tick labels excluded,
               ΔE2000 colours matched within each drawing function, colormaps by name,
               twin axes and colorbars as grid cells, nothing-vs-nothing = 0
    vinci_text_f1
               vinci's own: multiset F1 of every drawn, non-empty text, tick labels included
               (whitespace collapsed, otherwise exact), so two charts that differ only in
               their ticks differ here
    vinci_color_f1
               vinci's own: soft multiset F1 of the colours of every drawn element, whichever
               call drew it; a colour-mapped image contributes its colormap sampled at 8
               points, so Greys against Blues is partly alike rather than 0. Colours are
               matched one-to-one to maximise the summed similarity
               s(a, b) = max(0, 1 - ΔE(a, b) / 100), ΔE the CIE76 distance in Lab (D65);
               identical colours are paired first (always optimal, since ΔE is a metric), the
               rest by the Hungarian algorithm. With S the summed similarity of the matching,
               F1 = 2S / (|pred| + |ref|).

vinci's own use multiset F1 2·|pred ∩ ref| / (|pred| + |ref|) with multiplicities, both sides
empty scoring 1.0. A missing prediction trace (the program did not render, or was not traced)
scores 0.0 on all six.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Iterable, Optional

import numpy as np

from vinci.eval.chartmimic import SCORE_KEYS as CHARTMIMIC_KEYS
from vinci.eval.chartmimic import chartmimic_scores
from vinci.render.trace import clean_trace

VINCI_KEYS = ("vinci_text_f1", "vinci_color_f1")
SCORE_KEYS = CHARTMIMIC_KEYS + VINCI_KEYS
DELTA_E_SCALE = 100.0  # a CIE76 distance this large (black vs white) counts as no similarity


def multiset_f1(pred: Iterable[Hashable], ref: Iterable[Hashable]) -> float:
    """2·|pred ∩ ref| / (|pred| + |ref|) over multisets; 1.0 when both are empty."""
    pred, ref = Counter(pred), Counter(ref)
    total = sum(pred.values()) + sum(ref.values())
    if total == 0:
        return 1.0
    return 2.0 * sum((pred & ref).values()) / total


def hex_to_lab(colors: list[str]) -> np.ndarray:
    """['#rrggbb'] * N -> [N, 3] CIE Lab (sRGB, D65 white)."""
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=float).reshape(-1, 3) / 255.0
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)  # [N, 3]
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])  # [N, 3], relative to white
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def color_similarity(pred: list[str], ref: list[str]) -> np.ndarray:
    """[P, R] similarity max(0, 1 - ΔE76 / 100) between hex colours."""
    a, b = hex_to_lab(pred), hex_to_lab(ref)
    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)  # [P, R]
    return np.clip(1.0 - distance / DELTA_E_SCALE, 0.0, 1.0)


def matched_similarity(pred: list[str], ref: list[str]) -> float:
    """Largest summed similarity of a one-to-one matching of pred to ref colours."""
    from scipy.optimize import linear_sum_assignment

    exact = Counter(pred) & Counter(ref)
    rest_pred = list((Counter(pred) - exact).elements())
    rest_ref = list((Counter(ref) - exact).elements())
    total = float(sum(exact.values()))
    if rest_pred and rest_ref:
        similarity = color_similarity(rest_pred, rest_ref)  # [P', R']
        rows, cols = linear_sum_assignment(similarity, maximize=True)
        total += float(similarity[rows, cols].sum())
    return total


def element_color_f1(pred: list[str], ref: list[str]) -> float:
    """Soft F1 of two colour multisets: 2S / (|pred| + |ref|); 1.0 when both are empty."""
    if not pred and not ref:
        return 1.0
    if not pred or not ref:
        return 0.0
    return 2.0 * matched_similarity(pred, ref) / (len(pred) + len(ref))


def _parts(trace: dict) -> tuple[list[str], list[str], dict]:
    """(vinci's texts, vinci's element colours, the ChartMimic part) of a trace, checked by
    `clean_trace`."""
    clean = clean_trace(trace)
    if clean is None:
        raise TypeError(f"a trace is a dict, got {type(trace).__name__}")
    texts = [" ".join(t.split()) for t in clean["texts"]]
    colors = [c for call in clean["calls"] for c in call["colors"]]
    return [t for t in texts if t], colors, clean["chartmimic"]


def chart_scores(pred_trace: Optional[dict], ref_trace: dict) -> dict[str, float]:
    """{text_f1, type_f1, color_f1, layout_f1, vinci_text_f1, vinci_color_f1} of a predicted
    chart's trace against the reference's, each in [0, 1]; all 0.0 when `pred_trace` is None."""
    if ref_trace is None:
        raise ValueError("chart_scores needs the reference trace; got None")
    ref = _parts(ref_trace)
    if pred_trace is None:
        return dict.fromkeys(SCORE_KEYS, 0.0)
    pred = _parts(pred_trace)
    return {
        **chartmimic_scores(pred[2], ref[2]),
        "vinci_text_f1": multiset_f1(pred[0], ref[0]),
        "vinci_color_f1": element_color_f1(pred[1], ref[1]),
    }
