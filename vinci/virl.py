"""ViRL: GRPO whose reward is how much the rendered program looks like the prompt image.

One training step per batch of B prompts (the callbacks do the first two stages):

    RolloutSampler    G samples per prompt, no grad            -> rollout.completions [N = B*G]
    RenderRollouts    code -> image in the sandboxed pool       -> rollout.render_future
    training_step     reward = 0.9 visual + 0.1 format          -> [B, G]
                      advantages, group-normalised              -> [B, G]
                      ppo_epochs x micro-batches of the clipped loss (+ optional KL), one update each epoch;
                      the first epoch's log-probs, detached, are the old log-probs [N, L]
    RewardLogger      scalars, image grids and code to TensorBoard

Optimisation is manual (several updates per batch), so gradient clipping is `max_grad_norm`
here rather than the Trainer's `gradient_clip_val`. The reference policy for the KL term is
the frozen starting adapter loaded a second time as another peft adapter on the same backbone.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Literal, Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from vinci import grpo
from vinci.backbone import Backbone, resolve_adapter, tie_output_head
from vinci.logprobs import DEFAULT_CHUNK, sequence_logp
from vinci.module import BackboneModule
from vinci.reward.format import composite_reward, format_reward
from vinci.reward.metric import PatchSimilarity
from vinci.rollout import Rollout, sequence_inputs

REFERENCE = "reference"  # name of the frozen adapter used by the KL term


class ViRLModule(BackboneModule):
    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Optional[LRSchedulerCallable] = None,
        warmup_ratio: float = 0.0,
        min_lr_ratio: float = 1.0,
        vision_lr_scale: float = 1.0,
        ppo_epochs: int = 1,
        micro_batch_size: int = 8,
        max_grad_norm: float = 1.0,
        clip_low: float = 0.2,
        clip_high: float = 0.3,
        clip_dual: float = 3.0,
        loss_agg: Literal["token-mean", "seq-mean-token-mean"] = "token-mean",
        kl_coef: float = 0.0,
        kl_estimator: Literal["k1", "low_var_kl"] = "low_var_kl",
        format_weight: float = 0.1,
        encoder: str = "pixel",
        tile_size: int = 448,
        max_tiles: int = 12,
        global_weight: Optional[float] = None,
        drop_zero_std_groups: bool = False,
        scale_advantages: bool = True,
        head_chunk: int = DEFAULT_CHUNK,
        temperature: float = 1.0,
    ):
        """
        Args:
            backbone: model and adapter; `backbone.adapter` is the SFT adapter to start from.
            optimizer: optimizer over the LoRA parameters (VinciCoder: AdamW, lr 1e-6).
            scheduler: learning-rate scheduler; default: warmup_ratio/min_lr_ratio schedule.
            warmup_ratio: linear warmup share of all steps (0 = constant after step 0).
            min_lr_ratio: final learning rate as a share of the peak (1 = constant).
            vision_lr_scale: the vision tower's learning rate as a share of the optimizer's.
            ppo_epochs: updates over the same rollouts, each against the sampling-time log-probs.
            micro_batch_size: rollout rows per forward/backward; the update covers all N rows.
            max_grad_norm: gradient-norm clip per update.
            clip_low: PPO ratio clip below 1.
            clip_high: PPO ratio clip above 1 (DAPO clip-higher when > clip_low).
            clip_dual: dual-clip cap for negative advantages.
            loss_agg: token-mean (DAPO) or seq-mean-token-mean (GRPO).
            kl_coef: weight of the KL to the frozen starting adapter; 0 turns the term off.
            kl_estimator: k1 or low_var_kl (k3).
            format_weight: share of the format reward: reward = (1 - w) visual + w format.
            encoder: vision encoder of the visual reward: "pixel" or "timm:<model name>".
            tile_size: crop size of the coarse-to-fine tiling.
            max_tiles: most local tiles per image.
            global_weight: share of the thumbnail in the visual score; None = uniform over crops (paper).
            drop_zero_std_groups: leave groups whose rewards all match out of the loss (DAPO dynamic sampling).
            scale_advantages: divide each group's centred rewards by its std (GRPO, VinciCoder);
                False keeps r - mean (Dr. GRPO), so near-identical samples pull weakly.
            head_chunk: completion positions per LM-head call when scoring tokens; peak head
                memory is a few [head_chunk, vocab] float32 tensors.
            temperature: the sampling temperature the log-probs divide by; the command line links
                it from `sampler.temperature`, so it is set in one place.
        """
        super().__init__(backbone, optimizer, scheduler, warmup_ratio, min_lr_ratio, vision_lr_scale)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.ppo_epochs = ppo_epochs
        self.micro_batch_size = micro_batch_size
        self.max_grad_norm = max_grad_norm
        self.clip = dict(clip_low=clip_low, clip_high=clip_high, clip_dual=clip_dual, agg=loss_agg)
        self.kl_coef = kl_coef
        self.kl_estimator = kl_estimator
        self.format_weight = format_weight
        self.similarity = dict(tile_size=tile_size, max_tiles=max_tiles, global_weight=global_weight)
        self.visual = PatchSimilarity(encoder=encoder, per_language=True, **self.similarity)
        self.val_visual = PatchSimilarity(encoder=self.visual.encoder, per_language=True, **self.similarity)  # same encoder
        self.drop_zero_std_groups = drop_zero_std_groups
        self.scale_advantages = scale_advantages
        self.head_chunk = head_chunk
        self.temperature = temperature  # the sampler's: log-probs use the sampling distribution
        self.rollout: Optional[Rollout] = None  # filled by the callbacks for the current batch

    def prepare_data(self) -> None:
        super().prepare_data()
        adapter = self.backbone.adapter
        if adapter and not any((Path(adapter) / sub / "adapter_config.json").is_file() for sub in ("", "last")):
            raise FileNotFoundError(
                f"ViRL starts from the SFT adapter, and there is none at {adapter!r}: run "
                "`python main.py fit --config configs/sft.yaml` first (or set model.init_args.backbone.adapter)"
            )

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        if self.kl_coef > 0:
            if not self.backbone.adapter:
                raise ValueError("kl_coef > 0 needs backbone.adapter: the frozen SFT adapter is the reference policy")
            with warnings.catch_warnings():
                # peft looks for tied modules again for the second adapter; the output head's copy
                # is tied by tie_output_head below, so its "no tied modules" note does not apply.
                warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*no tied modules")
                self.model.load_adapter(str(resolve_adapter(self.backbone.adapter)), adapter_name=REFERENCE, is_trainable=False)
            tie_output_head(self.model, REFERENCE)
            self.model.set_adapter("default")
            self.model.train()  # load_adapter of an inference adapter puts the whole model in eval mode
        # The update scores tokens under the policy that sampled them (and the reference with it),
        # so dropout, which sampling never applies, is off; train mode stays for checkpointing.
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        # RL moves the policy's LoRA matrices only: not modules the SFT adapter saved whole, and
        # not the reference adapter (set_adapter above makes the policy's saved modules trainable).
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad = "lora_" in name and f".{REFERENCE}." not in name

    def on_fit_start(self) -> None:
        from callbacks.pipeline import check_pipeline

        check_pipeline(self.trainer.callbacks)
        if self.drop_zero_std_groups and self.trainer.world_size > 1:
            # DDP all-reduces gradients at every manual_backward: a rank that drops more groups runs
            # fewer micro-batches (none when every group ties) and the other ranks wait forever.
            raise ValueError("drop_zero_std_groups does not work with more than one process yet; "
                             "set model.init_args.drop_zero_std_groups: false")

    # ---- log-probabilities ------------------------------------------------------------
    def completion_logp(self, rollout: Rollout, rows: list[int], with_entropy: bool = False):
        """Log-probs of the sampled tokens under the current policy: ([n, L], entropy [n, L] | None).

        Memory-lean (vinci.logprobs): only completion positions reach the LM head, in chunks of
        `head_chunk`, and no full-vocabulary tensor is kept for the backward.
        """
        inputs, ids, mask = sequence_inputs(rollout, rows)
        return sequence_logp(self.model, inputs, ids, mask, self.temperature, self.head_chunk, with_entropy)

    @torch.no_grad()
    def _logp_no_grad(self, rollout: Rollout, adapter: Optional[str] = None) -> torch.Tensor:
        n = rollout.completions.completion_ids.shape[0]
        chunks = []
        trainable = {p: p.requires_grad for p in self.model.parameters()} if adapter else {}  # set_adapter changes these
        if adapter:
            self.model.set_adapter(adapter)
        try:
            for start in range(0, n, self.micro_batch_size):
                rows = list(range(start, min(n, start + self.micro_batch_size)))
                chunks.append(self.completion_logp(rollout, rows)[0])
        finally:
            if adapter:
                self.model.set_adapter("default")
                for parameter, flag in trainable.items():
                    parameter.requires_grad_(flag)
        return torch.cat(chunks)  # [N, L]

    # ---- reward -----------------------------------------------------------------------
    def score(self, rollout: Rollout, metric: Optional[PatchSimilarity] = None):
        """Composite reward parts, each [N]; also feeds `metric` (default: the training one)."""
        renders = rollout.wait_renders()
        images = [r.image if r.ok else None for r in renders]  # [N], None scores 0
        # one encoder pass: per-sample scores, also accumulated into the epoch metric
        metric = self.visual if metric is None else metric
        visual = metric.score(images, rollout.references, rollout.languages).float().cpu()  # [N]
        formats = format_reward(rollout.completions.texts, rollout.languages)  # [N]
        rendered = torch.tensor([float(r.ok) for r in renders])  # [N]
        return composite_reward(visual, formats, rendered, format_weight=self.format_weight)

    # ---- the step -----------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        rollout = self.rollout
        if rollout is None or rollout.batch is not batch:
            raise RuntimeError("no rollout for this batch: the RolloutSampler callback must run before the step")
        started = time.perf_counter()
        ref_logp = self._logp_no_grad(rollout, REFERENCE) if self.kl_coef > 0 else None  # [N, L] while the renders run
        scored = time.perf_counter()
        parts = self.score(rollout)
        rollout.rewards = parts
        rollout.seconds["score"] = time.perf_counter() - scored
        B, G = rollout.num_prompts, rollout.group_size
        rewards = parts.overall.to(self.device).view(B, G)  # [B, G]
        # Gather every rank's groups before the group statistics, so frac_zero_std and any
        # batch-level normalisation see the whole global batch, not one rank's share.
        everyone = self.all_gather(rewards).reshape(-1, G)  # [W*B, G]
        advantages_all = grpo.group_advantages(everyone, scale_by_std=self.scale_advantages)  # [W*B, G]
        start = self.global_rank * B if everyone.shape[0] > B else 0
        advantages = advantages_all[start : start + B].reshape(-1)  # [N]
        keep = torch.ones(B, dtype=torch.bool, device=self.device)  # [B]
        if self.drop_zero_std_groups:
            keep = rewards.std(dim=1, unbiased=False) > 0  # [B]
        rows = [n for n in range(B * G) if keep[n // G]]
        stats = self._update(rollout, rows, advantages, ref_logp)
        rollout.seconds["update"] = time.perf_counter() - started - rollout.seconds["score"]
        stats.update(
            frac_reward_zero_std=grpo.frac_zero_std(everyone),
            groups_kept=float(keep.float().mean()),
        )
        self.log("train/visual_epoch", self.visual, on_step=False, on_epoch=True, batch_size=B)  # Lightning syncs + resets it
        for name, value in stats.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=B)

    def validation_step(self, batch, batch_idx: int) -> None:
        """Held-out check during fit: the sampler answered each prompt once, greedily, and the
        render callback drew it; score it as training does and log val/ means (trainer
        val_check_interval sets how often, limit_val_batches how many prompts)."""
        rollout = self.rollout
        if rollout is None or rollout.batch is not batch:
            raise RuntimeError("no rollout for this validation batch: the RolloutSampler callback must run first")
        parts = self.score(rollout, self.val_visual)
        B = len(batch.images)
        for name, value in (("reward", parts.overall), ("format", parts.format), ("render", parts.rendered)):
            self.log(f"val/{name}", value.float().mean(), on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        self.log("val/visual", self.val_visual, on_step=False, on_epoch=True, batch_size=B)  # Lightning syncs + resets it

    def _update(self, rollout, rows, advantages, ref_logp) -> dict[str, float]:
        """ppo_epochs optimizer steps over `rows`. The weights do not change before the first
        epoch's step, so that epoch's log-probs are the sampling policy's: detached, they are the
        old log-probs of every epoch, and no separate no-grad pass is needed."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        totals: dict[str, float] = {}
        mask_all = rollout.completions.completion_mask.float().to(advantages.device)  # [N, L]
        old_logp: dict[int, torch.Tensor] = {}  # micro-batch start -> [n, L], filled in epoch 0
        n_micro, norms = 0, []
        for _ in range(self.ppo_epochs):
            optimizer.zero_grad()
            for start in range(0, len(rows), self.micro_batch_size):
                micro = rows[start : start + self.micro_batch_size]
                index = torch.tensor(micro, device=advantages.device)
                logp, entropy = self.completion_logp(rollout, micro, with_entropy=True)  # [n, L]
                old = old_logp.setdefault(start, logp.detach())  # [n, L]
                mask = mask_all.index_select(0, index)  # [n, L]
                loss, pstats = grpo.policy_loss(
                    logp, old, advantages.index_select(0, index), mask,
                    entropy=entropy.detach(), **self.clip,
                )
                if ref_logp is not None:
                    kl = grpo.kl_penalty(logp, ref_logp.index_select(0, index), kind=self.kl_estimator)  # [n, L]
                    kl_term = grpo.masked_mean(kl, mask)
                    loss = loss + self.kl_coef * kl_term
                    totals["kl"] = totals.get("kl", 0.0) + float(kl_term.detach())
                self.manual_backward(loss * len(micro) / max(1, len(rows)))
                for name, value in pstats.as_dict().items():
                    totals[name] = totals.get(name, 0.0) + float(value)
                totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
                n_micro += 1
            if rows:
                norms.append(float(torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.max_grad_norm)))
                optimizer.step()
                if scheduler is not None:  # per optimizer step, as max_steps counts them
                    scheduler.step()
        result = {k: v / max(1, n_micro) for k, v in totals.items()}
        if norms:
            result["grad_norm"] = sum(norms) / len(norms)
        return result
