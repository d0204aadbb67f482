"""DomainScores under two real DDP processes (gloo on the CPU): ranks that saw different
domains still log the same keys, so the epoch-end sync completes with the right means."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from vinci.eval.metrics import DomainScores

# rank -> (languages, visual scores) of its one test batch; only rank 1 sees charts
RANK_ROWS = {0: (["svg", "svg"], [0.2, 0.4]), 1: (["python", "svg"], [0.9, 0.6])}


class ScoresOnly(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.scores = DomainScores()

    def test_step(self, batch, batch_idx):
        languages, visual = RANK_ROWS[self.global_rank]
        self.scores.update(languages, [{"visual": v} for v in visual])
        self.scores.log_to(self, "test", batch_size=len(languages))


@pytest.mark.timeout(240)  # a key logged on one rank only used to hang the sync for ever
def test_ranks_that_saw_different_domains_log_the_same_keys(tmp_path):
    data = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)  # one batch per rank
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    (metrics,) = trainer.test(ScoresOnly(), dataloaders=data)
    assert metrics["test/chart/visual"] == pytest.approx(0.9)  # rank 1's chart only
    assert metrics["test/icon/visual"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    assert metrics["test/all/visual"] == pytest.approx((0.2 + 0.4 + 0.9 + 0.6) / 4)
    assert "test/web/visual" not in metrics and "test/chart/render" not in metrics


def test_a_single_process_logs_only_what_it_saw(tmp_path):
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    (metrics,) = trainer.test(ScoresOnly(), dataloaders=torch.utils.data.DataLoader(torch.zeros(1, 1)))
    assert set(metrics) == {"test/icon/visual", "test/all/visual"}
    assert metrics["test/icon/visual"] == pytest.approx(0.3)
