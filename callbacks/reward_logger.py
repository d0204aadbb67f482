"""RewardLogger: what a person watches in TensorBoard during ViRL (rank 0 writes, no grad).

Every step: reward mean/std (overall, visual, format), render rate per language, the share of
distinct programs (repeats render once), response length, seconds per phase (sample, render,
score on the scorer's thread, update, reference with a KL term, render_exposed: the wait for
renders left after the last chunk was sampled and the reference pass ran, and score_exposed:
the wait for the scoring after them). (The step itself
logs KL, clip fractions, entropy and frac_reward_zero_std.) Every `every_n_steps`: an image
grid of reference | best | worst render per prompt, with their rewards, and the sampled code
of the best and worst as text.

Under DDP every rank's rows are gathered first, so the scalars describe the whole global batch
(W x B prompts), not rank 0's share; phase times are the slowest rank's, since the step waits
for it. The grid and the code show rank 0's prompts. Only rank 0 logs and writes files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from vinci.tasks import LANGUAGES

CELL = 160  # pixels per image in the grid


def _cell(image: Optional[Image.Image], caption: str) -> Image.Image:
    cell = Image.new("RGB", (CELL, CELL + 16), "white")
    if image is not None:
        thumb = image.copy()
        thumb.thumbnail((CELL, CELL))
        cell.paste(thumb, ((CELL - thumb.width) // 2, (CELL - thumb.height) // 2))
    else:
        ImageDraw.Draw(cell).text((8, CELL // 2), "no render", fill=(200, 0, 0))
    ImageDraw.Draw(cell).text((4, CELL + 2), caption, fill=(0, 0, 0))
    return cell


def rollout_grid(rollout, max_prompts: int = 4) -> tuple[Image.Image, str]:
    """(grid image, markdown with the best and worst code) for the first prompts of a rollout."""
    G = rollout.group_size
    overall = rollout.rewards.overall.view(-1, G)  # [B, G]
    rows, notes = [], []
    for b in range(min(max_prompts, rollout.num_prompts)):
        best, worst = int(overall[b].argmax()), int(overall[b].argmin())
        cells = [_cell(rollout.batch.images[b], f"reference ({rollout.batch.languages[b]})")]
        for label, g in (("best", best), ("worst", worst)):
            render = rollout.renders[b * G + g]
            cells.append(_cell(render.image if render.ok else None, f"{label} r={float(overall[b, g]):.3f}"))
            code = rollout.codes[b * G + g]
            error = "" if render.ok else f"\n\nrender error ({render.kind}): {render.error}"
            notes.append(f"**prompt {b} {label}** (reward {float(overall[b, g]):.3f})\n\n```\n{code or rollout.texts[b * G + g]}\n```{error}")
        row = Image.new("RGB", (CELL * 3, CELL + 16), "white")
        for i, cell in enumerate(cells):
            row.paste(cell, (i * CELL, 0))
        rows.append(row)
    grid = Image.new("RGB", (CELL * 3, (CELL + 16) * len(rows)), "white")
    for i, row in enumerate(rows):
        grid.paste(row, (0, i * (CELL + 16)))
    return grid, "\n\n".join(notes)


def global_scalars(rollout, module) -> dict[str, float]:
    """Reward, render, length and time scalars over every rank's rows (a collective: all ranks call it)."""
    parts = rollout.rewards
    language = torch.tensor([LANGUAGES.index(lang) for lang in rollout.languages])  # [N]
    lengths = rollout.completion_mask.sum(dim=1)  # [N]
    columns = (parts.overall, parts.visual, parts.format, parts.rendered, lengths, language)
    rows = torch.stack([c.detach().cpu().float() for c in columns], dim=1)  # [N, 6]
    phases = sorted(rollout.seconds)
    counts = torch.tensor([rollout.render_jobs, len(rollout.languages)], dtype=torch.float64)  # [2]
    seconds = torch.tensor([rollout.seconds[p] for p in phases], dtype=torch.float64)  # [P]
    # one device for the collective (NCCL needs the GPU); gathered: [W, ...], or unchanged on one process
    gathered = [module.all_gather(t.to(module.device)).cpu() for t in (rows, counts, seconds)]
    rows = gathered[0].reshape(-1, rows.shape[1])  # [W*N, 6]
    counts = gathered[1].reshape(-1, 2).sum(dim=0)  # [2]
    seconds = gathered[2].reshape(-1, len(phases)).amax(dim=0)  # [P] the slowest rank's
    scalars = {}
    for column, name in enumerate(("overall", "visual", "format")):
        values = rows[:, column].contiguous()
        scalars[f"reward/{name}_mean"] = float(values.mean())
        scalars[f"reward/{name}_std"] = float(values.std()) if values.numel() > 1 else 0.0
    rendered, lengths, language = rows[:, 3].contiguous(), rows[:, 4].contiguous(), rows[:, 5].long()
    scalars["render/rate"] = float(rendered.mean())
    for index in sorted(set(language.tolist()), key=lambda i: LANGUAGES[i]):
        scalars[f"render/rate_{LANGUAGES[index]}"] = float(rendered[language == index].mean())
    scalars["render/distinct_frac"] = float(counts[0] / counts[1].clamp(min=1))  # share actually rendered
    scalars["response/length_mean"] = float(lengths.mean())
    scalars["response/length_max"] = float(lengths.max())
    for phase, value in zip(phases, seconds.tolist()):
        scalars[f"time/{phase}_s"] = value
    return scalars


class RewardLogger(L.Callback):
    def __init__(self, every_n_steps: int = 10, max_prompts: int = 4, export_dir: Optional[str] = None):
        """
        Args:
            every_n_steps: log the image grid and sampled code every this many steps.
            max_prompts: prompts shown in each grid.
            export_dir: also save each grid as PNG here (None = TensorBoard only).
        """
        self.every_n_steps = every_n_steps
        self.max_prompts = max_prompts
        self.export_dir = Path(export_dir) if export_dir else None
        self.batches_seen = 0  # the first batch of a run always gets a grid

    @torch.no_grad()
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        rollout = (outputs or {}).get("rollout")  # what ViRLModule.training_step returns
        if rollout is None or rollout.rewards is None:
            return
        scalars = global_scalars(rollout, module)  # on every rank: it gathers across them
        if not trainer.is_global_zero:
            return
        module.log_dict(scalars, on_step=True, on_epoch=False, batch_size=rollout.num_prompts)
        bar = {"reward": scalars["reward/overall_mean"], "render": scalars["render/rate"]}  # the progress bar's two
        module.log_dict(bar, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=rollout.num_prompts)

        step = trainer.global_step
        self.batches_seen += 1
        if self.every_n_steps and (self.batches_seen - 1) % self.every_n_steps == 0:
            grid, notes = rollout_grid(rollout, self.max_prompts)
            experiment = getattr(trainer.logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):
                experiment.add_image("rollouts/reference_best_worst", np.asarray(grid), step, dataformats="HWC")
                experiment.add_text("rollouts/code", notes, step)
            if self.export_dir is not None:
                self.export_dir.mkdir(parents=True, exist_ok=True)
                grid.save(self.export_dir / f"grid_step{step:05d}.png")
