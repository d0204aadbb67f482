"""Benchmark metrics as torchmetrics Metrics: one running mean per (domain, score).

`DomainScores` holds a `MeanMetric` for every score name of `vinci.eval.records.SCORE_NAMES`
in every domain (chart, icon, web, figure) and overall ("all"). The module updates it with
each batch's per-sample scores and logs the Metric objects themselves, so Lightning syncs them
across processes and resets them at the end of the epoch:

    test/chart/visual   test/chart/type_f1   test/all/render   ...

Chart F1 scores exist only for chart samples whose reference program is known, Design2Code
scores only for web pages whose reference page is known; a score that
a domain never received is not logged (its mean would be undefined). Under DDP "received"
means on any process: every process logs the same keys in the same order, since each logged
Metric is synced collectively at the end of the epoch, and a process that logged a key the
others did not would wait for them forever.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import MeanMetric

from vinci.eval.records import SCORE_NAMES
from vinci.tasks import TASKS

OVERALL = "all"


class DomainScores(torch.nn.Module):
    def __init__(self, score_names: Sequence[str] = SCORE_NAMES):
        super().__init__()
        self.score_names = tuple(score_names)
        self.domains = tuple(task.domain for task in TASKS.values()) + (OVERALL,)
        self.means = torch.nn.ModuleDict(
            {self.key(d, s): MeanMetric() for d in self.domains for s in self.score_names}
        )
        self.updated: set[str] = set()  # keys with at least one value since the last log

    @staticmethod
    def key(domain: str, score: str) -> str:
        return f"{domain}__{score}"  # ModuleDict keys may not contain "."/"/"

    def update(self, languages: Sequence[str], scores: Sequence[dict[str, float]]) -> None:
        """Add N samples: languages [N], scores [N] of name -> value."""
        for language, row in zip(languages, scores):
            for score, value in row.items():
                if score not in self.score_names:
                    raise KeyError(f"unknown score {score!r}; known: {', '.join(self.score_names)}")
                for domain in (TASKS[language].domain, OVERALL):
                    key = self.key(domain, score)
                    self.means[key].update(torch.tensor(float(value)))
                    self.updated.add(key)

    def updated_anywhere(self, module) -> list[str]:
        """Keys updated on this process or any other (the union over ranks), in a fixed order."""
        keys = list(self.means)
        flags = torch.tensor([float(k in self.updated) for k in keys], device=module.device)  # [K]
        if module.trainer.world_size > 1:
            flags = module.all_gather(flags).reshape(-1, len(keys)).amax(dim=0)  # [W, K] -> [K]
        return sorted(k for k, flag in zip(keys, flags.tolist()) if flag > 0)

    def log_to(self, module, stage: str, batch_size: int) -> None:
        """module.log every mean updated on any process as `{stage}/{domain}/{score}` (epoch-level)."""
        for key in self.updated_anywhere(module):
            self.updated.add(key)
            domain, score = key.split("__")
            module.log(
                f"{stage}/{domain}/{score}", self.means[key], on_step=False, on_epoch=True, batch_size=batch_size
            )

    def reset(self) -> None:
        self.updated.clear()
