"""Projections of benchmarks.memory: lines through measured peaks, per segment of a phase.

A CPU cannot run 36 layers over 32 x 3,000 tokens, so each model is measured at 2 and 3
decoder layers, 1 and 2 rows and two short lengths, and these fits carry the measurements to
the full depth, rows and lengths (see benchmarks.memory's docstring for what each term is).
"""

from __future__ import annotations

from dataclasses import dataclass


def linear(x: float, x0: float, y0: float, x1: float | None, y1: float | None) -> float:
    """The line through (x0, y0) and (x1, y1) at x; constant y0 when there is no second point."""
    if x1 is None or x1 == x0:
        return y0
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - slope * mx, slope


@dataclass
class SamplingFit:
    """Sampling memory measured at one or two depths, G rows of one prompt, above the resident bytes:
    each prefill segment linear in depth, and the decode-step peaks a line in the step (per depth)."""

    layers: list[int]  # measured depths
    rows: int  # measured rows (G of one prompt)
    steps: list[int]  # measured new tokens, per depth
    baseline: list[float]  # resident bytes (weights, LoRA, its grads, AdamW state) per depth
    prefill: list[dict[str, float]]  # segment -> bytes above the baseline, per depth
    intercept: list[float]  # decode step k peaks at intercept + slope * k above the baseline, per depth
    slope: list[float]

    @classmethod
    def from_runs(cls, runs: list[dict]) -> "SamplingFit":
        fit = cls([], runs[0]["rows"], [], [], [], [], [])
        for run in sorted(runs, key=lambda r: r["layers"]):
            decode = [peak - run["baseline"] for peak in run["steps"][:-1]]  # steps 1 .. N-1
            skip = max(2, len(decode) // 4)  # the first steps still settle the cache's layout
            intercept, slope = line_fit([float(k) for k in range(1 + skip, 1 + len(decode))], decode[skip:])
            fit.layers.append(run["layers"])
            fit.steps.append(run["new_tokens"])
            fit.baseline.append(run["baseline"])
            fit.prefill.append({key: peak - run["baseline"] for key, peak in run["prefill"].items()})
            fit.intercept.append(intercept)
            fit.slope.append(slope)
        return fit

    def at(self, values: list[float], layers: int) -> float:
        second = (self.layers[1], values[1]) if len(self.layers) > 1 else (None, None)
        return linear(layers, self.layers[0], values[0], *second)

    def parts(self, layers: int, rows: int, new_tokens: int) -> dict[str, float]:
        """Projected bytes above the resident ones, per segment ("decode": the last step)."""
        out = {key: self.at([p[key] for p in self.prefill], layers) for key in self.prefill[0]}
        out["decode"] = self.at(self.intercept, layers) + self.at(self.slope, layers) * (new_tokens - 1)
        return {key: value * rows / self.rows for key, value in out.items()}

    def peak(self, layers: int, rows: int, new_tokens: int) -> float:
        return self.resident(layers) + max(self.parts(layers, rows, new_tokens).values())

    def where(self, layers: int, rows: int, new_tokens: int) -> str:
        parts = self.parts(layers, rows, new_tokens)
        return max(parts, key=parts.get)

    def resident(self, layers: int) -> float:
        return self.at(self.baseline, layers)

    def label(self, layers: int, rows: int, new_tokens: int) -> str:
        return _label(self.layers, layers, [self.rows], rows, self.steps, new_tokens,
                      tokens_note=f"a line through {'+'.join(map(str, self.steps))} decode steps")


@dataclass
class StepFit:
    """Update (or SFT) micro-batch memory above the resident bytes, per segment of the step:

        act(L, n, N) = T0 + n * (r + q (N - N0) + (L - L0) k (P + N) / (P + N0))

    T0: what does not grow with rows (LM-head chunks, optimizer temporaries); r: one row at
    (L0, N0); q: one row's growth per completion token; k: one row's growth per decoder layer,
    its checkpointed input [tokens, hidden], hence in proportion to prompt + completion tokens.
    Four runs determine it: (L0, n0, N0), (L0, n0, N1), (L0, n1, N0), (L1, n0, N0).
    """

    prompt: int  # P
    layers: list[int]
    rows: list[int]
    tokens: list[int]
    baseline: list[float]  # resident bytes at each measured depth
    terms: dict[str, tuple[float, float, float, float]]  # segment -> (T0, r, q, k)

    @classmethod
    def from_runs(cls, runs: list[dict], prompt: int) -> "StepFit":
        L0, n0, N0 = (min(r[key] for r in runs) for key in ("layers", "rows", "new_tokens"))
        (n1,), (N1,), (L1,) = ({r[key] for r in runs if r[key] != low} or {None}
                               for key, low in (("rows", n0), ("new_tokens", N0), ("layers", L0)))
        point = {(r["layers"], r["rows"], r["new_tokens"]): r for r in runs}
        base = {L: point[(L, n0, N0)]["baseline"] for L in sorted({L0, L1} - {None})}

        def act(key, L, n, N):
            run = point[(L, n, N)]
            return run["segments"].get(key, 0) - run["baseline"]

        terms = {}
        for key in point[(L0, n0, N0)]["segments"]:
            a = act(key, L0, n0, N0)
            r = (act(key, L0, n1, N0) - a) / (n1 - n0) if n1 else a / n0  # one row's share
            q = (act(key, L0, n0, N1) - a) / (n0 * (N1 - N0)) if N1 else 0.0
            k = (act(key, L1, n0, N0) - a) / (n0 * (L1 - L0)) if L1 else 0.0
            terms[key] = (a - n0 * r, r, q, k)
        return cls(prompt, list(base), sorted({r["rows"] for r in runs}), sorted({r["new_tokens"] for r in runs}),
                   list(base.values()), terms)

    def parts(self, layers: int, rows: int, new_tokens: int) -> dict[str, float]:
        L0, N0, P = self.layers[0], self.tokens[0], self.prompt
        return {key: T0 + rows * (r + q * (new_tokens - N0) + (layers - L0) * k * (P + new_tokens) / (P + N0))
                for key, (T0, r, q, k) in self.terms.items()}

    def resident(self, layers: int) -> float:
        """Bytes before the micro-batch (weights, LoRA, AdamW state), linear in depth."""
        second = (self.layers[1], self.baseline[1]) if len(self.layers) > 1 else (None, None)
        return linear(layers, self.layers[0], self.baseline[0], *second)

    def peak(self, layers: int, rows: int, new_tokens: int) -> float:
        return self.resident(layers) + max(self.parts(layers, rows, new_tokens).values())

    def where(self, layers: int, rows: int, new_tokens: int) -> str:
        parts = self.parts(layers, rows, new_tokens)
        return max(parts, key=parts.get)

    def label(self, layers: int, rows: int, new_tokens: int) -> str:
        return _label(self.layers, layers, self.rows, rows, self.tokens, new_tokens, tokens_note="")


def _label(layers_m, layers, rows_m, rows, tokens_m, tokens, tokens_note: str) -> str:
    """'measured', or 'projected from ...' naming every dimension that was extrapolated."""
    parts = []
    if layers not in layers_m:
        parts.append(f"{'+'.join(map(str, layers_m))} measured layers")
    if rows not in rows_m:
        parts.append(f"{'+'.join(map(str, rows_m))} rows")
    if tokens not in tokens_m:
        parts.append(tokens_note or f"{'+'.join(map(str, tokens_m))} tokens")
    return "projected from " + ", ".join(parts) if parts else "measured"



def largest_tokens(total, usable: float, limit: int = 65536) -> str:
    """The largest max_new_tokens with total(n) <= usable (total grows with n), as text."""
    if total(1) > usable:
        return "none"
    lo, hi = 1, limit
    if total(hi) <= usable:
        return f">{limit:,}"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total(mid) <= usable else (lo, mid)
    return f"{lo:,}"

