"""From answers to rewards, the one path that training, validation and evaluation share.

    texts [N] -> extract_code -> distinct (language, code, trace) jobs -> RenderPool (async)
              -> renders [N]       (a repeat shares its first copy's result; no fenced block: "no-output")
              -> RewardParts [N]   visual = the reward encoder on the renders (0 where none),
                                   format = fenced block in the asked language,
                                   overall = (1 - w) visual + w format

`submit` returns at once with a `ProgramRenders` whose `.wait()` gives the [N] results, so the
caller samples or scores something else while the pool works. `reward` is the composite
reward of VinciCoder's ViRL stage, computed by the caller's `PatchSimilarity` child (so it runs on
the module's device and is accumulated into that metric). A `Scorer` runs `reward` on a thread of
its own, each batch of answers as soon as its renders are back, so the caller's thread goes on
sampling while the reward encoder works.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from vinci.render import RenderJob, RenderResult
from vinci.reward.format import RewardParts, composite_reward, extract_code, format_reward


def no_output(language: str) -> RenderResult:
    """The result of an answer with nothing to render."""
    return RenderResult.failure("no-output", f"no fenced {language} block", language=language)


@dataclass
class ProgramRenders:
    """N answers on their way through the render pool."""

    languages: list[str]  # [N] the language each answer was asked for
    codes: list[Optional[str]]  # [N] extracted code, None without a fenced block
    jobs: list[RenderJob]  # the distinct programs sent to the pool
    slots: list[Optional[int]]  # [N] index into jobs (None: nothing rendered)
    future: Future  # -> list[RenderResult] [len(jobs)]
    submitted: float = field(default_factory=time.perf_counter)
    finished: Optional[float] = None  # perf_counter when the pool's last job ended
    results: Optional[list[RenderResult]] = None  # [N] once waited for

    def done(self) -> bool:
        return self.future.done()

    def wait(self) -> list[RenderResult]:
        """[N] results; a broken pool raises, it is never a bad answer."""
        if self.results is None:
            done = self.future.result()
            self.results = [no_output(lang) if s is None else done[s] for s, lang in zip(self.slots, self.languages)]
        return self.results


def submit(pool, texts: Sequence[str], languages: Sequence[str], trace: Optional[Sequence[bool]] = None) -> ProgramRenders:
    """Extract each answer's code and send the distinct programs to `pool` without waiting.

    A renderer is deterministic, so a program written twice (common for a small policy at a low
    temperature) renders once and every row that wrote it gets the same result.
    `trace[i]`: also record row i's matplotlib calls (chart F1 scores).
    """
    codes = [extract_code(text, language) for text, language in zip(texts, languages)]
    jobs, slots, first = [], [], {}
    for i, (code, language) in enumerate(zip(codes, languages)):
        if code is None:
            slots.append(None)
            continue
        traced = bool(trace and trace[i] and language == "python")
        key = (language, code, traced)
        if key not in first:
            first[key] = len(jobs)
            jobs.append(RenderJob(language, code, trace=traced))
        slots.append(first[key])
    renders = ProgramRenders(list(languages), codes, jobs, slots, pool.submit(jobs))
    renders.future.add_done_callback(lambda _: setattr(renders, "finished", time.perf_counter()))
    return renders


def reward(
    texts: Sequence[str],
    languages: Sequence[str],
    references: Sequence,
    renders: Sequence[RenderResult],
    visual_metric,
    format_weight: float = 0.1,
) -> RewardParts:
    """The composite reward of N answers, each part [N] on the host.

    `visual_metric` is a `vinci.reward.metric.PatchSimilarity`: it scores the renders against
    their references (0 for a failed render) and accumulates them for its epoch value.
    """
    images = [r.image if r.ok else None for r in renders]  # [N]
    visual = visual_metric.score(images, list(references), list(languages)).float().cpu()  # [N]
    rendered = torch.tensor([r.ok for r in renders], dtype=torch.bool)  # [N]
    return composite_reward(visual, format_reward(list(texts), list(languages)), rendered, format_weight)


def cat_parts(parts: Sequence[RewardParts]) -> RewardParts:
    """Row-wise concatenation of reward parts scored in pieces."""
    return RewardParts(*(torch.cat([getattr(p, name) for p in parts]) for name in ("overall", "visual", "format", "rendered")))


@dataclass
class Scored:
    """One batch of answers scored by a `Scorer`."""

    parts: RewardParts  # [n] each
    results: list[RenderResult]  # [n] the renders, one per answer
    rendered: float  # perf_counter when its last render was back
    seconds: float  # spent scoring it, on the scorer's thread


class Scorer:
    """`reward` on one background thread: each submitted batch is scored as soon as its renders
    are back, in the order submitted, and accumulated into `metric`, which nothing else touches
    until `close`. A broken render pool's error comes out of the batch's future."""

    def __init__(self, visual_metric, format_weight: float = 0.1):
        self.metric = visual_metric
        self.format_weight = format_weight
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vinci-score")

    def submit(self, texts: Sequence[str], languages: Sequence[str], references: Sequence,
               renders: ProgramRenders) -> "Future[Scored]":
        return self._thread.submit(self._score, list(texts), list(languages), list(references), renders)

    def _score(self, texts, languages, references, renders: ProgramRenders) -> Scored:
        results = renders.wait()  # [n]
        rendered = renders.finished or time.perf_counter()
        began = time.perf_counter()
        device = self.metric.device
        # a thread starts on CUDA device 0, whatever device the trainer's rank set for its own
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            parts = reward(texts, languages, references, results, self.metric, self.format_weight)  # [n] each
        return Scored(parts, results, rendered, time.perf_counter() - began)

    def close(self) -> None:
        """Stop the thread; batches not started are dropped (a step that failed needs none)."""
        self._thread.shutdown(wait=False, cancel_futures=True)
