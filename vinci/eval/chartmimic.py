"""ChartMimic's low-level scores, as ChartMimic's evaluator defines them, from two traces.

The evidence is recorded in the sandbox (`vinci.eval.chartmimic_record`, the `chartmimic` part
of a `vinci.render.trace` trace). Each score is an F1 of a generated chart against the
reference, precision over the generated side and recall over the reference side:

    text_f1    multiset F1 of the drawn text lines, exact strings (tick labels excluded)
    type_f1    multiset F1 of the outermost drawing calls, by defining file and function
    layout_f1  multiset F1 of the axes' grid cells (twin axes and colorbars are cells too)
    color_f1   soft F1 of the colour entries: entries match only within the same drawing
               function; the summed similarity S of the best one-to-one matching (per function,
               summed over functions) gives precision S/|pred|, recall S/|ref|. Similarity of
               two hex colours is max(0, 1 - ΔE2000/100) in CIE Lab (sRGB, D65); two colormap
               names are 1 when equal, else 0; a hex colour and a name are 0. A side with more
               than 10 entries is first thinned greedily: taken in some order, an entry is
               dropped when its similarity to one already kept exceeds 0.7 (whatever drew it).

Conventions, ChartMimic's: a side with nothing (no text, no type, no colour, no laid-out axes)
scores 0, even when both sides have nothing; a missing prediction scores 0 on all four.
The best matching is found with the Hungarian algorithm (ChartMimic tries every permutation;
the optimum is the same).

The thinning order. ChartMimic thins in Python's set order of its "function--colour" strings,
which follows the interpreter's hash seed (and the strings hold matplotlib's install path), so
its colour score of a chart with more than 10 entries changes from run to run. vinci gives the
expectation instead: the mean over ORDERS simulated hash seeds, each a fixed pseudo-random
priority per (function, colour) entry. As with one seed of ChartMimic, an entry has the same
priority on both sides of a pair, so a chart against itself still scores 1. Lists of 10 or
fewer entries are not thinned and score exactly as ChartMimic's.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Hashable, Iterable, Optional

import numpy as np

SCORE_KEYS = ("text_f1", "type_f1", "color_f1", "layout_f1")
THIN_ABOVE = 10  # a colour list longer than this is thinned
THIN_SIMILARITY = 0.7  # ... dropping entries more similar than this to a kept one
ORDERS = 64  # simulated hash seeds whose thinning orders a long list's colour score averages
CLOSE_ROWS = 256  # rows of the [E, E] closeness matrix computed at a time (bounded memory)

# sRGB -> XYZ (D65) and the D65 white, as in the colour library ChartMimic uses.
RGB_TO_XYZ = np.array([[0.412424, 0.357579, 0.180464], [0.212656, 0.715158, 0.0721856], [0.0193324, 0.119193, 0.950444]])
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def f1(matched: float, n_pred: int, n_ref: int) -> float:
    """Harmonic mean of matched/n_pred and matched/n_ref; 0 when either side is empty."""
    if n_pred == 0 or n_ref == 0 or matched <= 0:
        return 0.0
    precision, recall = matched / n_pred, matched / n_ref
    return 2 * precision * recall / (precision + recall)


def multiset_f1(pred: Iterable[Hashable], ref: Iterable[Hashable]) -> float:
    pred, ref = Counter(pred), Counter(ref)
    return f1(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))


def hex_to_lab(colors: list[str]) -> np.ndarray:
    """['#rrggbb' or '#rrggbbaa'] * N -> [N, 3] CIE Lab (D65, 2°); alpha is ignored."""
    return rgb_to_lab(np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=float))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] sRGB in 0..255 -> [N, 3] CIE Lab (D65, 2°)."""
    rgb = np.asarray(rgb, dtype=float).reshape(-1, 3) / 255
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)  # [N, 3]
    t = linear @ RGB_TO_XYZ.T / WHITE_D65  # [N, 3] XYZ relative to white
    f = np.where(t > 216 / 24389, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """ΔE2000 (kL = kC = kH = 1) between [N, 3] and [M, 3] Lab colours -> [N, M].
    Sharma, Wu & Dalal (2005), 'The CIEDE2000 color-difference formula', eqs. (1)-(22)."""
    L1, a1, b1 = (lab1[:, i][:, None] for i in range(3))  # [N, 1]
    L2, a2, b2 = (lab2[:, i][None, :] for i in range(3))  # [1, M]
    c_mean7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_mean7 / (c_mean7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2  # [N, M]
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360  # atan2(0, 0) = 0, the formula's convention
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma = c1p * c2p != 0  # [N, M] hue is undefined when either chroma is zero
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)) * chroma
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(chroma, h_mean, h_sum)
    t = (
        1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )  # fmt: skip
    l_mean, c_mean = (L1 + L2) / 2, (c1p + c2p) / 2
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    r_t = -2 * np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)) * np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2))))
    dl, dc, dhh = (L2 - L1) / s_l, (c2p - c1p) / s_c, dH / s_h
    return np.sqrt(np.maximum(dl**2 + dc**2 + dhh**2 + r_t * dc * dhh, 0.0))


def similarity(pred: list[str], ref: list[str]) -> np.ndarray:
    """[P, R] colour similarity: hex-hex 1 - ΔE2000/100 (floored at 0), name-name equality."""
    out = np.zeros((len(pred), len(ref)))
    hp = [i for i, c in enumerate(pred) if c.startswith("#")]
    hr = [j for j, c in enumerate(ref) if c.startswith("#")]
    if hp and hr:
        distance = ciede2000(hex_to_lab([pred[i] for i in hp]), hex_to_lab([ref[j] for j in hr]))
        out[np.ix_(hp, hr)] = np.clip(1 - distance / 100, 0.0, None)
    for i, c in enumerate(pred):
        if not c.startswith("#"):
            out[i] = [float(c == r) for r in ref]
    return out


def close_matrix(colours: list[str]) -> np.ndarray:
    """[E, E] bool: similarity above THIN_SIMILARITY (each colour is close to itself)."""
    out = np.zeros((len(colours), len(colours)), dtype=bool)
    for start in range(0, len(colours), CLOSE_ROWS):
        out[start : start + CLOSE_ROWS] = similarity(colours[start : start + CLOSE_ROWS], colours) > THIN_SIMILARITY
    return out


def thin_in(order: Iterable[int], close: np.ndarray) -> tuple[int, ...]:
    """Greedy thinning: the indices kept when entries are taken in `order`, ascending."""
    blocked = np.zeros(len(close), dtype=bool)
    kept = []
    for i in order:
        if not blocked[i]:
            kept.append(int(i))
            blocked |= close[i]
    return tuple(sorted(kept))


def thin(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A long list thinned in its own order (one of the orders ChartMimic's set may take)."""
    if len(entries) <= THIN_ABOVE:
        return entries
    return [entries[i] for i in thin_in(range(len(entries)), close_matrix([c for _, c in entries]))]


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64s: a well-spread hash of each value."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as a hash's should
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def seed_orders(entries: list[tuple[str, str]]) -> np.ndarray:
    """[ORDERS, E] entry indices: row k is the order under simulated hash seed k, by a
    priority that depends only on the seed and the entry's (function, colour)."""
    digest = lambda g, c: int.from_bytes(hashlib.blake2b(f"{g}--{c}".encode(), digest_size=8).digest(), "little")  # noqa: E731
    base = np.array([digest(g, c) for g, c in entries], dtype=np.uint64)  # [E]
    seeds = _mix64(np.arange(1, ORDERS + 1, dtype=np.uint64))  # [ORDERS]
    return np.argsort(_mix64(base[None, :] ^ seeds[:, None]), axis=1, kind="stable")


def thinnings(entries: list[tuple[str, str]]) -> list[tuple[int, ...]]:
    """The kept indices under each of the ORDERS simulated seeds (all, for 10 or fewer)."""
    if len(entries) <= THIN_ABOVE:
        return [tuple(range(len(entries)))] * ORDERS
    close = close_matrix([c for _, c in entries])
    return [thin_in(order, close) for order in seed_orders(entries)]


def matched_f1(pred: list[tuple[str, str]], ref: list[tuple[str, str]]) -> float:
    """Colour F1 of two already-thinned lists: the best one-to-one match per function."""
    from scipy.optimize import linear_sum_assignment

    total = 0.0
    for group in {g for g, _ in pred} & {g for g, _ in ref}:
        sim = similarity([c for g, c in pred if g == group], [c for g, c in ref if g == group])  # [P, R]
        rows, cols = linear_sum_assignment(sim, maximize=True)
        total += float(sim[rows, cols].sum())
    return f1(total, len(pred), len(ref))


def color_f1(pred: list[tuple[str, str]], ref: list[tuple[str, str]]) -> float:
    """ChartMimic's colour F1 of two [(drawing function, colour)] lists; with a list longer
    than 10, its expectation over the thinning orders (see the module docstring)."""
    if len(pred) <= THIN_ABOVE and len(ref) <= THIN_ABOVE:
        return matched_f1(pred, ref)
    memo: dict[tuple, float] = {}
    scores = []
    for kept in zip(thinnings(pred), thinnings(ref)):
        if kept not in memo:
            memo[kept] = matched_f1([pred[i] for i in kept[0]], [ref[j] for j in kept[1]])
        scores.append(memo[kept])
    return float(np.mean(scores))


def chartmimic_scores(pred: Optional[dict], ref: dict) -> dict[str, float]:
    """{text_f1, type_f1, color_f1, layout_f1} of two `chartmimic` trace parts (already
    checked by `vinci.render.trace.clean_trace`); all 0 when `pred` is None."""
    if pred is None:
        return dict.fromkeys(SCORE_KEYS, 0.0)
    return {
        "text_f1": multiset_f1(pred["texts"], ref["texts"]),
        "type_f1": multiset_f1(pred["types"], ref["types"]),
        "color_f1": color_f1([tuple(c) for c in pred["colors"]], [tuple(c) for c in ref["colors"]]),
        "layout_f1": multiset_f1(map(tuple, pred["layout"]), map(tuple, ref["layout"])),
    }
