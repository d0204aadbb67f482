"""Per-sample scores of generated programs against their references: pure functions.

    texts [N] -> extract_code -> render in the pool -> per sample:
      format   1 when the answer has a fenced block in the asked language
      render   1 when that block rendered to an image
      visual   coarse-to-fine patch similarity to the reference image (0 when not rendered)
      ssim     structural similarity of the render, resized to the reference's size (0 when not rendered)
      reward   0.9 visual + 0.1 format, the ViRL training reward
      text_f1, type_f1, color_f1, layout_f1
               charts only, when the reference program is known: ChartMimic's low-level F1s,
               as ChartMimic defines them, from the matplotlib calls both programs make
      vinci_text_f1, vinci_color_f1
               alongside them: vinci's own variants (tick labels counted; every element's
               colour, colormaps sampled) (`vinci.eval.chart_f1`)
      d2c_block, d2c_text, d2c_position, d2c_color
               web pages only, when the reference page is known: Design2Code's low-level
               scores, as Design2Code defines them, from the text blocks of both pages
               (`vinci.eval.design2code`; the generated page is rendered three more times)

Simplification: SSIM is computed on the RGB images at the reference's resolution with
torchmetrics' default 11x11 Gaussian window; no LLM-judged high-level score is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from vinci.reward import programs
from vinci.reward.format import extract_code


@dataclass
class SampleScores:
    """Scores of N samples, row-aligned with the batch."""

    codes: list[Optional[str]]  # [N] extracted code
    renders: list[Optional[Image.Image]]  # [N] rendered image or None
    errors: list[Optional[str]]  # [N] why there is no render, None when rendered
    scores: list[dict[str, float]] = field(default_factory=list)  # [N] name -> value


def to_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] float in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def ssim(render: Optional[Image.Image], reference: Image.Image) -> float:
    """SSIM of the render resized to the reference's size; 0 for a failed render."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if render is None:
        return 0.0
    if render.size != reference.size:
        render = render.convert("RGB").resize(reference.size, Image.BICUBIC)
    value = structural_similarity_index_measure(to_tensor(render)[None], to_tensor(reference)[None], data_range=1.0)
    return float(value.clamp(0.0, 1.0))


def reference_program(answer, language: str) -> Optional[str]:
    """The reference program of a row: its fenced block, or the answer itself when unfenced."""
    if not isinstance(answer, str) or not answer.strip():
        return None
    return extract_code(answer, language) or answer


def score_samples(
    texts: Sequence[str],
    languages: Sequence[str],
    references: Sequence[Image.Image],
    pool,
    visual_metric,
    reference_traces: Optional[Sequence[Optional[dict]]] = None,
    reference_blocks: Optional[Sequence[Optional[list]]] = None,
    format_weight: float = 0.1,
) -> SampleScores:
    """Render and score N generated answers against their reference images (and, for charts
    with a known reference program, its call trace; for web pages with a known reference
    page, its Design2Code blocks).

    Rendering and the reward go through `vinci.reward.programs`, as in training: the same code
    extraction, deduplication, failure kinds and composite reward. `visual_metric` is the
    caller's `PatchSimilarity` child, so the encoder runs on the module's device.
    """
    from vinci.eval.chart_f1 import chart_scores
    from vinci.eval.design2code import design2code_scores, page_blocks

    traced = [bool(reference_traces) and reference_traces[i] is not None for i in range(len(texts))]  # [N] F1 needs both traces
    sent = programs.submit(pool, texts, languages, trace=traced)
    results = sent.wait()  # [N] RenderResult
    parts = programs.reward(texts, languages, references, results, visual_metric, format_weight)  # [N] each
    codes = sent.codes
    renders = [r.image if r.ok else None for r in results]
    errors = [None if r.ok else r.error for r in results]
    paged = [bool(reference_blocks) and languages[i] == "html" and reference_blocks[i] is not None for i in range(len(texts))]
    drawn = [i for i in range(len(texts)) if paged[i] and renders[i] is not None]  # a page that did not render has no blocks
    blocks = dict(zip(drawn, page_blocks([codes[i] for i in drawn], pool, prediction=True)))
    out = SampleScores(codes, renders, errors)
    for i in range(len(texts)):
        row = {
            "reward": float(parts.overall[i]),
            "visual": float(parts.visual[i]),
            "format": float(parts.format[i]),
            "render": float(parts.rendered[i]),
            "ssim": ssim(renders[i], references[i]),
        }
        reference_trace = reference_traces[i] if reference_traces else None
        if languages[i] == "python" and reference_trace is not None:
            row.update(chart_scores(results[i].trace if results[i].ok else None, reference_trace))
        if paged[i]:
            row.update(design2code_scores(blocks.get(i), reference_blocks[i]))
        out.scores.append(row)
    return out
