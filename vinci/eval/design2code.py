"""Design2Code's low-level web page scores (github NoviScl/Design2Code, metrics/visual_score.py),
in vinci's own code; CLIP is left out (it needs weights that are not here).

The blocks of both pages come from `vinci.eval.design2code_blocks`. Blocks of one page with the
same box are merged first (texts joined by a space, colours averaged). Matching: the cost of
pairing two blocks is minus their text similarity (difflib's ratio, 2·matches / total length);
neighbouring blocks of either page are merged while a merge improves the matching (the
differences of the matched costs, as Design2Code's `difference_of_means`, exceed 0.05); the final
one-to-one matching (Hungarian, with a 0.1 bonus from the best neighbours in a ±1 window) keeps
the pairs whose text similarity is at least 0.5. Then, with S(b) = w·h of a block:

    d2c_block     Σ_matched (S(p) + S(r)) / (Σ_matched (S(p) + S(r)) + Σ_unmatched S(b))
    d2c_text      mean text similarity of the matched pairs
    d2c_position  mean of 1 - max(|Δx|, |Δy|) of the matched pairs' box centres
    d2c_color     mean of max(0, 1 - ΔE2000/100) of the matched pairs' text colours

All four are 0 when either page has no block or nothing matches, as in Design2Code.
"""

from __future__ import annotations

from copy import deepcopy
from difflib import SequenceMatcher
from typing import Optional

import numpy as np

SCORE_KEYS = ("d2c_block", "d2c_text", "d2c_position", "d2c_color")
MIN_TEXT_SIMILARITY = 0.5
MERGE_GAIN = 0.05


def _ratio(a: str, b: str, cache: dict) -> float:
    key = (a, b)
    if key not in cache:
        cache[key] = SequenceMatcher(None, a, b).ratio()
    return cache[key]


def merge_two(a: dict, b: dict) -> dict:
    x0, y0 = min(a["bbox"][0], b["bbox"][0]), min(a["bbox"][1], b["bbox"][1])
    x1 = max(a["bbox"][0] + a["bbox"][2], b["bbox"][0] + b["bbox"][2])
    y1 = max(a["bbox"][1] + a["bbox"][3], b["bbox"][1] + b["bbox"][3])
    colour = tuple((p + q) // 2 for p, q in zip(a["color"], b["color"]))
    return {"text": a["text"] + " " + b["text"], "bbox": (x0, y0, x1 - x0, y1 - y0), "color": colour}


def merge_same_box(blocks: list[dict]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for block in blocks:
        key = tuple(block["bbox"])
        if key in merged:
            kept = merged[key]
            kept["text"] += " " + block["text"]
            kept["color"] = [(p + q) / 2 for p, q in zip(kept["color"], block["color"])]
        else:
            merged[key] = dict(block)
    return list(merged.values())


def _context(cost: np.ndarray, bonus: float, window: int) -> np.ndarray:
    """The cost of a good pair (< -0.5) lowered by `bonus` times its best neighbours' costs."""
    if bonus == 0:
        return cost  # adds nothing
    out = cost.copy()
    n, m = cost.shape
    for i in range(n):
        for j in range(m):
            if out[i, j] >= -0.5:
                continue
            near = np.sort(cost[max(0, i - window) : i + window + 1, max(0, j - window) : j + window + 1].ravel())[::-1]
            near = np.delete(near, np.where(near == cost[i, j])[0][0])
            out[i, j] += bonus * near[-window * 2 :].sum()
    return out


def match(a: list[dict], b: list[dict], bonus: float, window: int, cache: dict):
    """(pairs [(i, j)], their costs, cost matrix) of the best one-to-one matching."""
    from scipy.optimize import linear_sum_assignment

    cost = np.array([[-_ratio(p["text"], q["text"], cache) for q in b] for p in a]).reshape(len(a), len(b))
    cost = _context(cost, bonus, window) if window > 0 else cost
    rows, cols = linear_sum_assignment(cost)
    return list(zip(rows, cols)), cost[rows, cols].tolist()


def mean_gain(before: list[float], after: list[float]) -> float:
    """Design2Code's `difference_of_means` of two lists of matched costs."""
    from collections import Counter

    left, right = Counter(before), Counter(after)
    for value in set(before) & set(after):
        common = min(left[value], right[value])
        left[value] -= common
        right[value] -= common
    rest_l, rest_r = list(left.elements()), list(right.elements())
    mean_l = sum(rest_l) / len(rest_l) if rest_l else 0
    mean_r = sum(rest_r) / len(rest_r) if rest_r else 0
    if mean_l - mean_r > 0:
        return mean_l - mean_r if min(rest_l) > min(rest_r) else 0.0
    return mean_l - mean_r


def _merge_listed(blocks: list[dict], merges: list[list]) -> list[dict]:
    dropped = []
    while merges:
        i, j = merges[0][0], merges[0][1]
        blocks[i] = merge_two(blocks[i], blocks[j])
        dropped.append(j)
        merges = [m for m in merges[1:] if i not in m[:2] and j not in m[:2]]
    for index in sorted(dropped, reverse=True):
        if index < len(blocks):
            blocks.pop(index)
    return blocks


def merge_neighbours(a: list[dict], b: list[dict], cache: dict):
    """(a, b, final matching) after merging neighbouring blocks while it pays."""
    while True:
        changed = False
        for side in (0, 1):
            blocks = a if side == 0 else b
            _, current = match(a, b, 0.0, 1, cache)
            if len(blocks) < 2:
                continue
            merges = []
            for i in range(len(blocks) - 1):
                trial = deepcopy(blocks)
                trial[i] = merge_two(trial[i], trial[i + 1])
                trial.pop(i + 1)
                _, cost = match(trial, b, 0.0, 1, cache) if side == 0 else match(a, trial, 0.0, 1, cache)
                gain = mean_gain(current, cost)
                if gain > MERGE_GAIN:
                    merges.append([i, i + 1, gain])
            merges.sort(key=lambda m: m[2], reverse=True)
            if merges:
                changed = True
                if side == 0:
                    a = _merge_listed(a, merges)
                else:
                    b = _merge_listed(b, merges)
        if not changed:
            break
    pairs, _ = match(a, b, 0.1, 1, cache)
    return a, b, pairs


def design2code_scores(pred: Optional[list[dict]], ref: Optional[list[dict]]) -> dict[str, float]:
    """{d2c_block, d2c_text, d2c_position, d2c_color} of a generated page's blocks against the
    reference page's (see the module docstring); None (a page that did not render) has none."""
    from vinci.eval.chartmimic import ciede2000, rgb_to_lab

    if not pred or not ref:
        return dict.fromkeys(SCORE_KEYS, 0.0)
    cache: dict = {}
    a, b, pairs = merge_neighbours(merge_same_box(pred), deepcopy(merge_same_box(ref)), cache)
    kept = [(i, j, _ratio(a[i]["text"], b[j]["text"], cache)) for i, j in pairs]
    kept = [(i, j, s) for i, j, s in kept if s >= MIN_TEXT_SIMILARITY]
    if not kept:
        return dict.fromkeys(SCORE_KEYS, 0.0)
    area = lambda block: block["bbox"][2] * block["bbox"][3]  # noqa: E731
    matched_a, matched_b = {i for i, _, _ in kept}, {j for _, j, _ in kept}
    unmatched = sum(area(x) for k, x in enumerate(a) if k not in matched_a) + sum(area(x) for k, x in enumerate(b) if k not in matched_b)
    matched = [area(a[i]) + area(b[j]) for i, j, _ in kept]
    centre = lambda block: (block["bbox"][0] + block["bbox"][2] / 2, block["bbox"][1] + block["bbox"][3] / 2)  # noqa: E731
    position = [1 - max(abs(centre(a[i])[0] - centre(b[j])[0]), abs(centre(a[i])[1] - centre(b[j])[1])) for i, j, _ in kept]
    labs_a = rgb_to_lab(np.array([a[i]["color"] for i, _, _ in kept], dtype=float))  # [K, 3]
    labs_b = rgb_to_lab(np.array([b[j]["color"] for _, j, _ in kept], dtype=float))
    colour = np.clip(1 - np.diag(ciede2000(labs_a, labs_b)) / 100, 0.0, None)  # [K]
    return {
        "d2c_block": float(sum(matched) / (sum(matched) + unmatched)),
        "d2c_text": float(np.mean([s for _, _, s in kept])),
        "d2c_position": float(np.mean(position)),
        "d2c_color": float(np.mean(colour)),
    }


def page_blocks(pages: list[str], pool, prediction: bool, timeout: Optional[float] = None) -> list[Optional[list[dict]]]:
    """Blocks of N pages, rendered (each as is and in its two recoloured variants) in a vinci
    `RenderPool`; a generated page (`prediction`) is cleaned up first, as Design2Code does. A
    page whose renders fail gets None (it scores as a page with no blocks)."""
    from vinci.eval.design2code_blocks import find_blocks, prepare_prediction, recoloured, text_items
    from vinci.render import RenderJob

    pages = [prepare_prediction(p) if prediction else p for p in pages]
    variants = [(p, recoloured(p, 0), recoloured(p, 50)) for p in pages]  # [N] x 3
    shots = pool.render_many([RenderJob("html", code, timeout=timeout) for trio in variants for code in trio])  # [3N]
    out: list[Optional[list[dict]]] = []
    for k, (_, coloured, _) in enumerate(variants):
        plain, a, b = shots[3 * k : 3 * k + 3]
        out.append(find_blocks(plain.image, a.image, b.image, text_items(coloured)) if plain.ok and a.ok and b.ok else None)
    return out


def page_scores(generated: list[str], references: list[str], pool) -> list[dict[str, float]]:
    """Design2Code's four low-level scores of N generated pages against their reference pages."""
    pred, ref = page_blocks(generated, pool, prediction=True), page_blocks(references, pool, prediction=False)
    return [design2code_scores(p, r) for p, r in zip(pred, ref)]
