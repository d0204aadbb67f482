"""ViRL: GRPO whose reward is how much the rendered program looks like the prompt image.

One optimizer update per rollout batch of B prompts (`data.batch_size`), in five phases that
`training_step` calls in order, each a method here:

    sample          G answers per prompt, `sampler.prompts_per_generation` prompts per
                    generate call (that chunk sets the KV cache)           -> Rollout [N = B*G]
    submit_renders  each chunk's programs go to the render pool as soon as it is sampled;
                    a scorer thread runs the reward encoder on them as they come back, while
                    later chunks sample
    score           waits for the last chunks: reward = 0.9 visual + 0.1 format  -> [N]
    advantages      group-normalised over every rank's groups                     -> [N]
    update          ppo_epochs x mini_batches optimizer steps, each over micro-batches of the
                    clipped loss (+ optional KL), normalised by the tokens (or sequences) of
                    the whole mini-batch, so the micro-batch size changes memory, never the
                    gradient

The rollout waits in host memory; each micro-batch's inputs reach the device alone. The three
callbacks hold what the phases need: `RolloutSampler` the sampling settings, `RenderRollouts`
the render pool, `RewardLogger` the TensorBoard output (from the step's returned rollout).

Optimisation is manual (several updates per batch), so gradient clipping is `max_grad_norm`
here rather than the Trainer's `gradient_clip_val`; it runs in `on_before_optimizer_step`,
after a 16-mixed gradient scaler has unscaled the gradients. The reference policy for the KL
term is the frozen starting adapter loaded a second time as another peft adapter on the same
backbone.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Literal, Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from vinci import grpo, vision_reuse
from vinci.backbone import Backbone, resolve_adapter, tie_output_head
from vinci.data.collate import RLBatch
from vinci.inputs import multimodal_token_ids
from vinci.logprobs import DEFAULT_CHUNK, sequence_logp
from vinci.mismatch import SamplerMismatch
from vinci.module import BackboneModule
from vinci.reward import programs
from vinci.reward.format import RewardParts
from vinci.reward.metric import PatchSimilarity
from vinci.rollout import Rollout, join_completions, prompt_chunk

REFERENCE = "reference"  # name of the frozen adapter used by the KL term
ROLLOUT_STATS = ("logp_gap_mean", "logp_gap_max", "is_weight_mean", "is_clipped_frac")  # logged as rollout/<name>


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
        mini_batches: int = 1,
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
        reuse_vision: bool = True,
        importance_correction: bool = False,
        importance_cap: float = 3.0,
    ):
        """
        Args:
            backbone: model and adapter; `backbone.adapter` is the SFT adapter to start from.
            optimizer: optimizer over the LoRA parameters (VinciCoder: AdamW, lr 1e-6).
            scheduler: learning-rate scheduler; default: warmup_ratio/min_lr_ratio schedule.
            warmup_ratio: linear warmup share of all steps (0 = constant after step 0).
            min_lr_ratio: final learning rate as a share of the peak (1 = constant).
            vision_lr_scale: the vision tower's learning rate as a share of the optimizer's.
            ppo_epochs: passes over the same rollouts, each against the sampling-time log-probs.
            mini_batches: optimizer steps per pass, each over 1/mini_batches of the rollout rows
                (verl's mini-batch); 1 = one update per rollout batch (VinciCoder).
            micro_batch_size: rollout rows per forward/backward; memory only: the loss is
                normalised over the whole mini-batch, so the gradient does not depend on it.
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
            reuse_vision: run the vision tower once per prompt image per step, and reuse its features
                for the image's G rows in the update (vinci.vision_reuse); on only while the vision
                tower is frozen (Lora.vision: frozen), else off with a warning. Same values, less compute.
            importance_correction: weight each token's loss by min(exp(old - sampler log-prob), cap),
                correcting for a sampler that is not exactly the trainer (vLLM; TRL's token-level
                truncated IS). Off: the loss is unchanged; the rollout/ gap metrics are logged either way.
            importance_cap: the cap of those weights (TRL: 3.0).
        """
        super().__init__(backbone, optimizer, scheduler, warmup_ratio, min_lr_ratio, vision_lr_scale)
        self.save_hyperparameters()
        self.automatic_optimization = False
        if ppo_epochs < 1 or mini_batches < 1 or micro_batch_size < 1:
            raise ValueError(f"ppo_epochs, mini_batches and micro_batch_size must be >= 1, got "
                             f"{ppo_epochs}, {mini_batches}, {micro_batch_size}")
        self.ppo_epochs = ppo_epochs
        self.mini_batches = mini_batches
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
        self.reuse_vision = reuse_vision
        if importance_cap < 1.0:
            raise ValueError(f"importance_cap must be >= 1, got {importance_cap}")
        self.importance_correction = importance_correction
        self.importance_cap = importance_cap
        self.banned_tokens: list[int] = []  # vision placeholder ids: sampling suppresses them (configure_model)
        self.vision_once = False  # reuse_vision, where the model allows it: set in configure_model
        self.pipeline = None  # callbacks.pipeline.Pipeline, found at fit start
        self.grad_norms: list[float] = []  # of this step's optimizer steps, after unscaling
        self.policy_version = 0  # optimizer steps taken in this process: a rollout engine reloads the policy when it changes

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
        self.banned_tokens = multimodal_token_ids(self.model, self.processor.tokenizer)  # never sampled: out of the softmax too
        why_not = vision_reuse.blocker(self.model) if self.reuse_vision else None
        if why_not:
            warnings.warn(f"reuse_vision is on, but {why_not}: the vision tower runs for every rollout row")
        self.vision_once = self.reuse_vision and why_not is None

    def on_fit_start(self) -> None:
        from callbacks.pipeline import find_pipeline

        self.pipeline = find_pipeline(self.trainer.callbacks)
        if self.drop_zero_std_groups and self.trainer.world_size > 1:
            # DDP all-reduces gradients at every manual_backward: a rank that drops more groups runs
            # fewer micro-batches (none when every group ties) and the other ranks wait forever.
            raise ValueError("drop_zero_std_groups does not work with more than one process yet; "
                             "set model.init_args.drop_zero_std_groups: false")

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """A rollout batch stays in host memory: `sample` moves one chunk at a time to the device,
        `update` one micro-batch, so device memory does not grow with the batch."""
        if isinstance(batch, RLBatch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ---- the step, top to bottom ------------------------------------------------------------
    def training_step(self, batch: RLBatch, batch_idx: int) -> dict:
        # Image features computed in sampling serve every later pass of the step; freed at its end.
        with vision_reuse.reuse_image_features(self.model, enabled=self.vision_once):
            rollout = self.sample(batch)  # also submits each chunk's renders and scores those back
            ref_logp = self.reference_logp(rollout) if self.kl_coef > 0 else None  # [N, L] host, while renders finish
            rewards = self.score(rollout)  # [N] each part
            advantages, rows, group_stats = self.advantages(rewards, rollout.num_prompts, rollout.group_size)  # [N]
            started = time.perf_counter()
            stats = self.update(rollout, rows, advantages, ref_logp)
            rollout.seconds["update"] = time.perf_counter() - started
        stats.update(group_stats)
        B = rollout.num_prompts
        self.log("train/visual_epoch", self.visual, on_step=False, on_epoch=True, batch_size=B)  # Lightning syncs + resets it
        for name, value in stats.items():
            prefix = "rollout" if name in ROLLOUT_STATS else "train"
            self.log(f"{prefix}/{name}", value, on_step=True, on_epoch=False, batch_size=B)
        return {"rollout": rollout}  # for the RewardLogger's on_train_batch_end

    def validation_step(self, batch: RLBatch, batch_idx: int) -> None:
        """Held-out check during fit: one greedy answer per prompt, rendered and scored as in
        training; logs val/ means (trainer val_check_interval sets how often, limit_val_batches
        how many prompts)."""
        rollout = self.sample(batch, greedy=True)
        parts = self.score(rollout)
        B = rollout.num_prompts
        for name, value in (("reward", parts.overall), ("format", parts.format), ("render", parts.rendered)):
            # on the module's device: NCCL cannot reduce a host tensor (sync_dist)
            mean = value.float().mean().to(self.device)
            self.log(f"val/{name}", mean, on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        self.log("val/visual", self.val_visual, on_step=False, on_epoch=True, batch_size=B)  # Lightning syncs + resets it

    # ---- 1. sample ------------------------------------------------------------------------
    def sample(self, batch: RLBatch, greedy: bool = False) -> Rollout:
        """G answers per prompt (one greedy answer with `greedy`), chunk by chunk; each chunk's
        programs go to the render pool at once, and are scored on the scorer's thread as they
        come back while later chunks sample."""
        sampler = self.pipeline.sampler
        metric = self.val_visual if greedy else self.visual
        rollout = Rollout(batch=batch, group_size=1 if greedy else sampler.num_samples,
                          scorer=programs.Scorer(metric, self.format_weight))
        rollout.seconds.update(sample=0.0)
        chunks = []
        try:
            for start, stop in sampler.chunks(len(batch.images)):
                began = time.perf_counter()
                chunk = prompt_chunk(batch, start, stop)
                done = sampler.answer(self, chunk) if greedy else sampler.sample_chunk(self, chunk)  # host tensors
                rollout.seconds["sample"] += time.perf_counter() - began
                chunks.append((done.completion_ids, done.completion_mask, done.logp))  # [n, L_chunk] each
                rollout.texts += done.texts
                self.submit_renders(rollout, start * rollout.group_size, done.texts)
        except BaseException:
            rollout.scorer.close()
            raise
        sampler.rollout_done()  # a GPU vLLM worker sleeps while the trainer scores and updates
        rollout.completion_ids, rollout.completion_mask, rollout.sampler_logp = join_completions(
            chunks, self.processor.tokenizer.pad_token_id)
        return rollout

    # ---- 2. submit renders ----------------------------------------------------------------
    def submit_renders(self, rollout: Rollout, first_row: int, texts: list[str]) -> None:
        """Send rows [first_row, first_row + len(texts)) to the render pool, and queue their
        scoring for when the renders are back, without waiting for either."""
        rows = slice(first_row, first_row + len(texts))
        renders = self.pipeline.render.submit(texts, rollout.languages[rows])
        scored = rollout.scorer.submit(texts, rollout.languages[rows], rollout.references[rows], renders)
        rollout.pending.append((first_row, renders, scored))
        if rollout.render_started is None:
            rollout.render_started = renders.submitted
        rollout.render_jobs += len(renders.jobs)

    # ---- 3. score -------------------------------------------------------------------------
    def score(self, rollout: Rollout) -> RewardParts:
        """The rollout's RewardParts ([N] each), once every chunk is scored.

        The scorer's thread has scored the chunks whose renders came back while later ones
        sampled; the wait here is what sampling did not hide: `render_exposed` until the last
        render is back, `score_exposed` for the scoring after it. `score` is the scorer's own time.
        """
        if rollout.rewards is not None:
            return rollout.rewards
        began = time.perf_counter()
        try:
            done = [scored.result() for _, _, scored in rollout.pending]  # [chunks] Scored, row order
        finally:
            rollout.scorer.close()
        ended = time.perf_counter()
        rendered = max([d.rendered for d in done], default=began)
        rollout.seconds["render_exposed"] = max(0.0, min(rendered, ended) - began)
        rollout.seconds["score_exposed"] = ended - began - rollout.seconds["render_exposed"]
        rollout.seconds["score"] = sum(d.seconds for d in done)
        rollout.seconds["render"] = rendered - rollout.render_started if done else 0.0  # first submit -> last result
        rollout.renders = [result for d in done for result in d.results]  # [N]
        rollout.codes = [code for _, renders, _ in rollout.pending for code in renders.codes]  # [N]
        rollout.pending = []
        rollout.rewards = programs.cat_parts([d.parts for d in done])  # [N] each
        return rollout.rewards

    # ---- 4. advantages --------------------------------------------------------------------
    def advantages(self, rewards, B: int, G: int) -> tuple[torch.Tensor, list[int], dict[str, float]]:
        """(advantages [N] on the device, the rows that enter the loss, group statistics)."""
        overall = rewards.overall.to(self.device).view(B, G)  # [B, G]
        # Gather every rank's groups before the group statistics, so frac_zero_std and any
        # batch-level normalisation see the whole global batch, not one rank's share.
        everyone = self.all_gather(overall).reshape(-1, G)  # [W*B, G]
        advantages_all = grpo.group_advantages(everyone, scale_by_std=self.scale_advantages)  # [W*B, G]
        start = self.global_rank * B if everyone.shape[0] > B else 0
        advantages = advantages_all[start : start + B].reshape(-1)  # [N]
        keep = torch.ones(B, dtype=torch.bool, device=self.device)  # [B]
        if self.drop_zero_std_groups:
            keep = overall.std(dim=1, unbiased=False) > 0  # [B]
        rows = [n for n in range(B * G) if keep[n // G]]
        stats = dict(frac_reward_zero_std=grpo.frac_zero_std(everyone), groups_kept=float(keep.float().mean()))
        return advantages, rows, stats

    # ---- 5. update ------------------------------------------------------------------------
    def completion_logp(self, rollout: Rollout, rows: list[int], with_entropy: bool = False):
        """Log-probs of the sampled tokens of `rows` under the current policy: ([n, L], entropy [n, L] | None).

        Memory-lean (vinci.logprobs): only completion positions reach the LM head, in chunks of
        `head_chunk`, and no full-vocabulary tensor is kept for the backward.
        """
        inputs, ids, mask = rollout.inputs(rows, self.device)
        return sequence_logp(self.model, inputs, ids, mask, self.temperature, self.head_chunk, with_entropy, self.banned_tokens)

    @torch.no_grad()
    def policy_logp(self, rollout: Rollout, adapter: Optional[str] = None) -> torch.Tensor:
        """[N, L] log-probs of every row under the policy (or another adapter), in host memory."""
        n = rollout.completion_ids.shape[0]
        chunks = []
        trainable = {p: p.requires_grad for p in self.model.parameters()} if adapter else {}  # set_adapter changes these
        if adapter:
            self.model.set_adapter(adapter)
        try:
            for start in range(0, n, self.micro_batch_size):
                rows = list(range(start, min(n, start + self.micro_batch_size)))
                chunks.append(self.completion_logp(rollout, rows)[0].cpu())
        finally:
            if adapter:
                self.model.set_adapter("default")
                for parameter, flag in trainable.items():
                    parameter.requires_grad_(flag)
        return torch.cat(chunks)  # [N, L]

    def reference_logp(self, rollout: Rollout) -> torch.Tensor:
        """[N, L] log-probs under the frozen reference adapter (the KL term's), in host memory;
        it runs while the last renders finish, so `render_exposed` is what it did not hide."""
        began = time.perf_counter()
        logp = self.policy_logp(rollout, REFERENCE)
        rollout.seconds["reference"] = time.perf_counter() - began
        return logp

    def update(self, rollout: Rollout, rows: list[int], advantages: torch.Tensor, ref_logp) -> dict[str, float]:
        """ppo_epochs x mini_batches optimizer steps over `rows`.

        With one mini-batch, the weights do not change before the first epoch's step, so that
        epoch's log-probs are the sampling policy's: detached, they are the old log-probs of
        every epoch, and no separate pass is needed. With several, a no-grad pass computes them
        first. Each mini-batch's loss is normalised by that mini-batch's tokens (or sequences),
        so its micro-batches add up to exactly one mean.
        """
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        mask_all = rollout.completion_mask  # [N, L] host
        old_all = self.policy_logp(rollout) if self.mini_batches > 1 and rows else None  # [N, L] host
        first_epoch: dict[int, torch.Tensor] = {}  # row -> [L] log-probs of the first pass, host
        size = -(-len(rows) // self.mini_batches) if rows else 1
        minis = [rows[i : i + size] for i in range(0, len(rows), size)]
        totals: dict[str, float] = {}  # per-micro-batch statistics, averaged
        sums: dict[str, float] = {}  # shares of each mini-batch's mean, which add up to it
        n_micro = 0
        self.grad_norms = []
        mismatch = SamplerMismatch(self.importance_cap) if rollout.sampler_logp is not None else None
        for epoch in range(self.ppo_epochs):
            for mini in minis:
                optimizer.zero_grad()
                denominator = grpo.batch_denominator(mask_all[mini], self.clip["agg"])
                for start in range(0, len(mini), self.micro_batch_size):
                    micro = mini[start : start + self.micro_batch_size]
                    index = torch.tensor(micro, device=self.device)
                    logp, entropy = self.completion_logp(rollout, micro, with_entropy=True)  # [n, L]
                    if old_all is not None:
                        old = old_all[micro].to(self.device)  # [n, L]
                    else:
                        for row, values in zip(micro, logp.detach().cpu()):
                            first_epoch.setdefault(row, values)
                        old = torch.stack([first_epoch[row] for row in micro]).to(self.device)  # [n, L]
                    mask = mask_all[micro].to(self.device)  # [n, L]
                    weights = None
                    if mismatch is not None:  # the sampler's log-probs against the trainer's old ones
                        weights = mismatch.observe(old, rollout.sampler_logp[micro].to(self.device), mask, record=epoch == 0)
                    loss, pstats = grpo.policy_loss(
                        logp, old, advantages.index_select(0, index), mask, entropy=entropy.detach(),
                        denominator=denominator, weights=weights if self.importance_correction else None, **self.clip,
                    )
                    if ref_logp is not None:
                        kl = grpo.kl_penalty(logp, ref_logp[micro].to(self.device), kind=self.kl_estimator)  # [n, L]
                        kl_term = grpo.aggregate(kl, mask, self.clip["agg"], denominator)
                        loss = loss + self.kl_coef * kl_term
                        sums["kl"] = sums.get("kl", 0.0) + float(kl_term.detach())
                    self.manual_backward(loss)
                    for name, value in pstats.as_dict().items():
                        totals[name] = totals.get(name, 0.0) + float(value)
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                    n_micro += 1
                optimizer.step()  # clips first: on_before_optimizer_step
                self.policy_version += 1
                if scheduler is not None:  # per optimizer step, as max_steps counts them
                    scheduler.step()
        steps = max(1, self.ppo_epochs * len(minis))
        result = {k: v / max(1, n_micro) for k, v in totals.items()}
        result.update({k: v / steps for k, v in sums.items()})  # mean over optimizer steps
        if self.grad_norms:
            result["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        if mismatch is not None and mismatch.tokens:  # no rows updated: nothing to report
            result.update(mismatch.as_dict())
        return result

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip the policy's gradient norm. Lightning calls this after a 16-mixed gradient scaler
        has unscaled the gradients, so the norm is the true one, not x65,536."""
        if not self.automatic_optimization:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.max_grad_norm)
            self.grad_norms.append(float(norm))
