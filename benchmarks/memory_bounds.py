"""Lower bounds of what each recipe needs, from arithmetic alone: which card/model pairings cannot fit.

    python -m benchmarks.memory_bounds                  # every model, seconds, no weights built

benchmarks.memory projects peaks from measurements, which take hours per model on a loaded CPU.
These bounds need none: each model is built on the meta device from its released config
(`memory_models.ARCHS`) to count its parameters, and only bytes that must exist are added:

    QLoRA resident   NF4 linear weights at 0.5 byte/parameter (language and vision; the
                     quantisation constants left out), bf16 embeddings and untied output head,
                     LoRA r = 16 in fp32 with AdamW's two states (12 bytes/parameter)
    eval resident    the same NF4 base and bf16 rest, the LoRA in fp32 without optimizer state
                     (the eval recipes load the base as training did)
    DINOv2-L         its bf16 weights (a timm encoder holds bf16 on a GPU), beside the policy
    KV cache         rows x tokens x layers x 2 (K, V) x KV heads x head_dim x 2 bytes (bf16),
                     tokens = 1,000 image tokens + 2,048 new ones (the template left out)
    SFT              resident + one bf16 [rows, tokens, hidden] checkpoint per decoder layer

No activations, no workspaces, no fragmentation: a card total below a card's size says nothing,
one above it (bound + the cited CUDA context, memory_budget.CONTEXT_BYTES) means that pairing
cannot run as configured.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from benchmarks.memory_budget import CARDS, CONTEXT_BYTES, GiB
from benchmarks.memory_models import ARCHS, CHUNKS, IMAGE_TOKENS, RECIPES, REWARD_MODEL, Arch

ADAM_LORA_BYTES = 12  # fp32 LoRA weight + AdamW exp_avg + exp_avg_sq (its gradient left out)


@dataclass(frozen=True)
class Counts:
    """Parameters of one model by how they are stored under QLoRA."""

    linear: int  # nn.Linear weights of the language model and vision tower (NF4 under QLoRA)
    unquantised: int  # embeddings, untied output head, norms, convolutions, biases (bf16)
    lora: int  # LoRA r = 16 on the language model's linear layers

    @property
    def total(self) -> int:
        return self.linear + self.unquantised


def count(arch: Arch) -> Counts:
    """Parameters of `arch`, built on the meta device (no memory, no weights)."""
    import torch
    import transformers

    from vinci.families import FAMILIES

    config = transformers.AutoConfig.for_model(arch.family, text_config=dict(arch.text), vision_config=dict(arch.vision),
                                               tie_word_embeddings=arch.tied)
    with torch.device("meta"):
        model = getattr(transformers, FAMILIES[arch.family].model_class)(config)
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    total = sum(p.numel() for p in model.parameters())
    return Counts(linear=linear, unquantised=total - linear, lora=arch.lora_params(arch.layers))


def reward_bytes() -> int:
    """DINOv2-L's fp32 weights (TimmEncoder keeps the checkpoint's dtype)."""
    import timm
    import torch

    with torch.device("meta"):
        net = timm.create_model(REWARD_MODEL, pretrained=False, num_classes=0)
    return 2 * sum(p.numel() for p in net.parameters())  # bf16 on a GPU (vinci.reward.encoders.BF16_DEVICES)


def kv_bytes(arch: Arch, rows: int, tokens: int) -> int:
    """The bf16 KV cache of `rows` sequences of `tokens` tokens."""
    t = arch.text
    head_dim = t.get("head_dim", t["hidden_size"] // t["num_attention_heads"])
    return rows * tokens * arch.layers * 2 * t["num_key_value_heads"] * head_dim * 2


def qlora_resident(counts: Counts) -> int:
    return counts.linear // 2 + 2 * counts.unquantised + ADAM_LORA_BYTES * counts.lora


def bounds(name: str, counts: Counts, reward: int) -> list[tuple[str, int]]:
    """(phase, lower bound of allocated bytes) for one model's recipes."""
    arch, recipe = ARCHS[name], RECIPES[name]
    tokens = IMAGE_TOKENS + recipe.new_tokens
    resident = qlora_resident(counts)
    out = [(f"ViRL sampling {p} x {recipe.group} at once, + DINOv2-L", resident + reward + kv_bytes(arch, p * recipe.group, tokens))
           for p in CHUNKS]
    checkpoints = recipe.sft_rows * recipe.sft_tokens * arch.text["hidden_size"] * 2 * arch.layers
    out.append((f"SFT QLoRA {recipe.sft_rows} x {recipe.sft_tokens:,}", resident + checkpoints))
    scoring = counts.linear // 2 + 2 * counts.unquantised + 4 * counts.lora  # NF4 base + fp32 LoRA, no AdamW
    out.append((f"eval NF4 {recipe.eval_rows} x {tokens:,}, + DINOv2-L", scoring + reward + kv_bytes(arch, recipe.eval_rows, tokens)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHS), default=list(ARCHS))
    args = parser.parse_args(argv)
    reward = reward_bytes()
    print(f"{'model':<14} | {'phase':<38} | bound GiB | + context | " + " | ".join(f"{c} GB ".ljust(6) for c in CARDS))
    print("-" * 100)
    for name in args.models:
        counts = count(ARCHS[name])
        for phase, low in bounds(name, counts, reward):
            card = low + CONTEXT_BYTES
            verdicts = " | ".join(f"{'CANNOT' if card > size else 'open':<6}" for size in CARDS.values())
            print(f"{name:<14} | {phase:<38} | {low / GiB:9.2f} | {card / GiB:9.2f} | {verdicts}")
    print(f"\nCANNOT: the bound + the cited context ({CONTEXT_BYTES / GiB:.1f} GiB) exceeds what CUDA reports for the card "
          f"({', '.join(f'{c} GB = {s / GiB:.2f} GiB' for c, s in CARDS.items())}); open: not excluded, see benchmarks.memory.")


if __name__ == "__main__":
    main()
