"""RenderRollouts: extract each sample's code and render all B x G programs concurrently.

The jobs go to the warm, sandboxed `RenderPool` as one asynchronous submission, so the
training step computes the old log-probs while the renders run. A program sampled more than
once in the step (common for a small policy at a low temperature) is rendered once and its
result shared. A sample without a fenced block of the asked-for language is not rendered; it
fails with kind "no-output".
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Optional

import lightning as L

from vinci.reward.format import extract_code
from vinci.render import RenderJob, RenderOptions, RenderPool, RenderResult


def _combine(future: Future, slots: list[Optional[int]], missing: RenderResult, started: float, rollout) -> Future:
    """A future of [N] results: pool results where a job ran, `missing` where none did."""
    out: Future = Future()

    def finish(done: Future) -> None:
        try:
            results = done.result()
        except BaseException as err:  # a broken pool is an error of the run, not a bad answer
            out.set_exception(err)
            return
        rollout.seconds["render"] = time.perf_counter() - started
        out.set_result([missing if s is None else results[s] for s in slots])

    future.add_done_callback(finish)
    return out


class RenderRollouts(L.Callback):
    def __init__(self, workers: int = 2, timeout: float = 10.0, options: Optional[RenderOptions] = None):
        """
        Args:
            workers: concurrent render workers.
            timeout: wall-clock seconds per program.
            options: image size, dpi and pixel caps of the renderers.
        """
        self.workers = workers
        self.timeout = timeout
        self.options = options
        self.pool: Optional[RenderPool] = None

    def setup(self, trainer, module, stage: str) -> None:
        if self.pool is None:
            self.pool = RenderPool(workers=self.workers, timeout=self.timeout, options=self.options)

    def teardown(self, trainer, module, stage: str) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.start(module.rollout, batch)

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.start(module.rollout, batch)

    def start(self, rollout, batch) -> None:
        """Submit the rollout's programs to the pool; `rollout.render_future` resolves to [N] results."""
        if rollout is None or rollout.batch is not batch:
            raise RuntimeError("RenderRollouts found no rollout for this batch: RolloutSampler must come first")
        started = time.perf_counter()
        languages = rollout.languages
        rollout.codes = [extract_code(text, lang) for text, lang in zip(rollout.completions.texts, languages)]
        jobs, slots, first = [], [], {}
        for code, language in zip(rollout.codes, languages):
            if code is None:
                slots.append(None)
                continue
            key = (language, code)  # a renderer is deterministic: the same program renders once
            if key not in first:
                first[key] = len(jobs)
                jobs.append(RenderJob(language, code))
            slots.append(first[key])
        rollout.render_jobs = len(jobs)
        missing = RenderResult.failure("no-output", "no fenced code block in the asked-for language")
        rollout.render_future = _combine(self.pool.submit(jobs), slots, missing, started, rollout)
