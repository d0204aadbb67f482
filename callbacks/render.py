"""RenderRollouts: the sandboxed render pool of a ViRL run, and the way answers reach it.

The pool starts once per run (`setup`) and keeps its workers warm until `teardown`. The step
(`ViRLModule.submit_renders`) hands it each chunk's answers as soon as that chunk is sampled;
`vinci.reward.programs.submit` extracts the code, renders each distinct program once and
returns without waiting, so later chunks sample while earlier ones render.
"""

from __future__ import annotations

from typing import Optional, Sequence

import lightning as L

from vinci.render import RenderOptions, RenderPool
from vinci.reward import programs


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

    def submit(self, texts: Sequence[str], languages: Sequence[str]) -> programs.ProgramRenders:
        """Start rendering the answers' programs; `.wait()` on the result gives [N] RenderResults."""
        if self.pool is None:
            raise RuntimeError("RenderRollouts has no pool: it starts in setup(), which the Trainer calls")
        return programs.submit(self.pool, texts, languages)
