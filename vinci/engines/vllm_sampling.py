"""Sampling a chunk of prompts with the vLLM worker, in the shape `generate` gives (Completions).

    prompts [B] templated as the collator did (chat template, one image placeholder) + images
        -> worker: vLLM tokenises them, expands the image placeholders, samples G answers per prompt
        -> the prompt ids vLLM built must equal vinci's [B, P] (unpadded; else an error naming the row)
        -> completion ids / mask / sampler log-probs [N, L], texts [N]

Before each chunk the worker gets the current policy: after every optimizer step (the
module's `policy_version` changes) rank 0's LoRA matrices go to a fresh folder, the last two
kept, and the worker loads it as a new `LoRARequest`.
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from vinci.engines import policy
from vinci.engines.vllm_client import VLLMEngine, VLLMSettings
from vinci.data.collate import prompt_text
from vinci.generation import Completions, eos_token_ids
from vinci.inputs import multimodal_token_ids

KEEP_POLICIES = 2  # adapter folders kept on disk: the one in use and the one before


def free_share(device_index: Optional[int]) -> Optional[float]:
    """On a card the trainer already holds, vLLM refuses to start unless the share of the card it
    may use (gpu_memory_utilization, default 0.9) is free, measured after its own CUDA context
    exists; its KV cache is set in bytes instead, so the share is only that check's bound: what
    is free now less 1.5 GiB, rounded down."""
    if device_index is None:
        return None
    free, total = torch.cuda.mem_get_info(device_index)
    return max(0.05, math.floor(1000 * (free - 1.5 * 2**30) / total) / 1000)


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
PROMPT_BUDGET = 8192  # prompt tokens the engine admits beside the answer, unless sampler.vllm.max_model_len says


def lora_rank_bound(rank: int) -> int:
    """vLLM's smallest accepted max_lora_rank that holds `rank`."""
    for bound in LORA_RANKS:
        if bound >= rank:
            return bound
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest, {LORA_RANKS[-1]}: use sampler.engine: hf")


def model_length(module, max_new_tokens: int, settings: VLLMSettings) -> int:
    """max_model_len: vLLM checks at start that its KV cache holds one sequence this long, and the
    model's own limit (128k for Qwen2.5-VL) would not fit a few GiB; prompt budget + answers does."""
    if settings.max_model_len:
        return settings.max_model_len
    limit = getattr(module.model.config.get_text_config(), "max_position_embeddings", None)
    wanted = PROMPT_BUDGET + max_new_tokens
    return min(wanted, limit) if limit else wanted


class VLLMRollouts:
    def __init__(self, settings: VLLMSettings, work_dir: str | Path):
        self.settings = settings
        self.work_dir = Path(work_dir)
        self.engine: Optional[VLLMEngine] = None
        self.version: Optional[int] = None  # the policy version the worker holds
        self.lora: Optional[dict] = None  # the LoRARequest fields of that policy
        self.folders: list[Path] = []

    @classmethod
    def for_module(cls, settings: VLLMSettings, module, max_new_tokens: int) -> "VLLMRollouts":
        """A started worker for `module` (after configure_model), on its device, working in
        settings.work_dir or <trainer.default_root_dir>/vllm/rank<r>."""
        trainer = getattr(module, "_trainer", None)
        root = settings.work_dir or (os.path.join(trainer.default_root_dir, "vllm") if trainer else tempfile.mkdtemp(prefix="vinci-vllm-"))
        rollouts = cls(settings, os.path.join(root, f"rank{trainer.global_rank if trainer else 0}"))
        device = (module.device.index or 0) if module.device.type == "cuda" else None
        rollouts.start(module, device, max_new_tokens)
        return rollouts

    def start(self, module, device_index: Optional[int] = None, max_new_tokens: int = 1024) -> None:
        """Build the rollout base and start the worker on this rank's device."""
        quant = module.backbone.quantization
        if quant.load_in_4bit and device_index is None:
            raise ValueError("sampler.engine vllm samples a QLoRA run from an NF4 base, and vLLM's bitsandbytes runs "
                             "on CUDA only: on a CPU use sampler.engine: hf, or a base without 4-bit loading")
        if quant.load_in_4bit and quant.quant_type != "nf4":
            raise ValueError("sampler.engine vllm samples a QLoRA run from an NF4 base; this run's base is "
                             f"{quant.quant_type}: set model.init_args.backbone.quantization.quant_type: nf4")
        model = module.model
        config = model.peft_config.get("default") if hasattr(model, "peft_config") else None
        if config is not None:
            refused = policy.refusals(config)
            if refused:
                raise ValueError(f"sampler.engine vllm cannot apply this adapter's {', '.join(refused)}: "
                                 "use sampler.engine: hf, or train a plain LoRA")
        backbone = module.backbone
        base = policy.rollout_base(model, backbone.model, self.work_dir / "rollout_base") if config else policy.base_folder(backbone.model)
        dtype = "float32" if backbone.dtype == "auto" and device_index is None else backbone.dtype
        worker = dict(
            model=str(base),
            dtype="bfloat16" if dtype == "auto" else dtype,
            seed=int(torch.initial_seed() % (2**31)),
            max_model_len=model_length(module, max_new_tokens, self.settings),
            kv_cache_bytes=int(self.settings.kv_cache_gb * 2**30) if device_index is not None else None,
            lora_rank=lora_rank_bound(int(config.r)) if config else None,
            tower_lora=policy.has_vision_lora(model) if config else False,
            quantization="bitsandbytes" if quant.load_in_4bit else None,
            sleep=self.settings.sleep and device_index is not None,
            gpu_memory_utilization=self.settings.gpu_memory_utilization or free_share(device_index),
            enforce_eager=self.settings.enforce_eager,
        )
        self.engine = VLLMEngine(self.settings, worker, self.work_dir / "worker.log", device_index).start()
        self.asleep = False
        if worker["sleep"]:
            self.sleep()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def sleep(self) -> None:
        """GPU: give the card back to the trainer (weights to host memory, KV cache freed)."""
        if self.engine is not None and self.engine.worker_settings.get("sleep") and not self.asleep:
            self.engine.sleep()
            self.asleep = True

    def sync(self, module) -> None:
        """Hand the worker the current policy if an optimizer step changed it."""
        if not hasattr(module.model, "peft_config"):
            return
        version = module.policy_version
        if version == self.version:
            return
        folder = self.work_dir / "policy" / f"v{version}"
        if folder.exists():
            shutil.rmtree(folder)
        policy.write_policy(module.model, folder)
        self.folders.append(folder)
        while len(self.folders) > KEEP_POLICIES:
            shutil.rmtree(self.folders.pop(0), ignore_errors=True)
        self.lora = {"name": f"policy-v{version}", "id": version + 1, "path": str(folder.resolve())}
        self.version = version

    @torch.no_grad()
    def sample(self, module, chunk, num_samples: int, max_new_tokens: int, min_new_tokens: int,
               do_sample: bool, temperature: float, top_p: float) -> Completions:
        """G answers per prompt of `chunk` (rows prompt-major), on the host, with the sampler's log-probs."""
        if self.engine is None:
            raise RuntimeError("the vLLM worker is not started (RolloutSampler.setup starts it)")
        self.sync(module)
        if self.asleep:  # GPU: the weights come back, the KV cache is allocated again
            gc.collect()
            torch.cuda.empty_cache()  # what the update's peak left in the trainer's cache, for the worker
            self.engine.wake_up()
            self.asleep = False
        tokenizer = module.processor.tokenizer
        ids, attention = chunk.inputs["input_ids"].cpu(), chunk.inputs["attention_mask"].cpu()  # [B, P]
        prompts = [row[keep.bool()].tolist() for row, keep in zip(ids, attention)]
        seeds = [int(torch.randint(0, 2**31 - 1, ())) if do_sample else None for _ in prompts]
        eos = sorted(eos_token_ids(module.model, module.processor))
        params = dict(
            n=num_samples, max_tokens=max_new_tokens, min_tokens=min_new_tokens, stop_token_ids=eos,
            temperature=temperature if do_sample else 0.0, top_p=top_p if do_sample else 1.0, top_k=0,
            banned_token_ids=multimodal_token_ids(module.model, tokenizer),
        )
        texts = [prompt_text(module.processor, prompt) for prompt in chunk.prompts]  # as the collator templated them
        results = self.engine.generate(texts, [[image] for image in chunk.images], seeds, params, self.lora)
        for row, (mine, result) in enumerate(zip(prompts, results)):
            if result["prompt_token_ids"] != mine:
                where = chunk.sources[row] if chunk.sources else f"row {row}"
                raise ValueError(f"vLLM built other prompt ids for {where} than vinci's processor "
                                 f"({len(result['prompt_token_ids'])} tokens against {len(mine)}), so the update would score "
                                 "other inputs than were sampled; sample this model with sampler.engine: hf")
        samples = [s for result in results for s in result["samples"]]  # [N] prompt-major
        return completions(samples, ids, tokenizer, set(eos))


def completions(samples: list[dict], prompt_ids: torch.Tensor, tokenizer, eos: set[int]) -> Completions:
    """The worker's samples as Completions: ids [N, L] (pad after the end), mask [N, L] (1 up to
    and including EOS), sampler log-probs [N, L] (0 outside the mask)."""
    length = max([len(s["token_ids"]) for s in samples] + [1])
    n = len(samples)
    ids = torch.full((n, length), tokenizer.pad_token_id, dtype=torch.long)  # [N, L]
    mask = torch.zeros(n, length, dtype=torch.long)  # [N, L]
    logp = torch.zeros(n, length, dtype=torch.float32)  # [N, L]
    for i, s in enumerate(samples):
        tokens = s["token_ids"]
        end = next((k + 1 for k, t in enumerate(tokens) if t in eos), len(tokens))  # up to and including EOS
        ids[i, :end] = torch.tensor(tokens[:end], dtype=torch.long)
        mask[i, :end] = 1
        if s["logprobs"]:
            logp[i, :end] = torch.tensor(s["logprobs"][:end], dtype=torch.float32)
    group = n // max(1, len(prompt_ids))
    sequences = torch.cat([prompt_ids.repeat_interleave(group, dim=0), ids], dim=1)  # [N, P + L]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Completions(sequences, ids, mask, texts, prompt_ids.shape[1], logp)
