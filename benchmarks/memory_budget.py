"""What a card must hold for one phase: the allocator's bytes and what it does not count.

    card total = allocated + context + workspaces + fragmentation margin     (measured or projected)
               = reserved + context                                          (measured on a GPU)

(1) allocated: `torch.cuda.max_memory_allocated` on a GPU, or benchmarks.memory's projection
    from live tensor bytes on the CPU. It leaves out (2) and (3).

(2) allowance, outside the tensors a CPU run sees:
    - CUDA context, with the kernels the run loads: CONTEXT_BYTES = 0.5 GiB. The context alone is
      287 MB with lazy module loading (666 MB without; pytorch/pytorch#86509, PyTorch 1.13),
      "around 400MB if CUDA >= 11.7 is used and lazy module loading enabled" (ptrblck,
      pytorch/pytorch#109888), 426 MiB on an RTX 6000 Ada with PyTorch 2.10 + CUDA 13
      (unslothai/unsloth-zoo#1053). Lazy loading adds each kernel when first called, so a run
      holds more: out-of-memory reports give the "non-PyTorch memory" of real runs (in use minus
      reserved) as 0.20 GiB (RTX A4000, DengKaiCQ/VGGT-Long#6), 0.34 GiB (a 15.70 GiB card,
      qingze-bai/VSmTrans#3), 0.46 GiB (RTX 4090, pinokiofactory/flux-webui#11) and 0.50 GiB
      (RTX 4090, a LoRA run with bitsandbytes, huggingface/lora-fast#1). The largest is used.
      Outside the allocator: also there on a GPU, where gpu_check measures it (used - reserved).
    - cuBLAS workspaces: WORKSPACE_BYTES = 128 MiB. PyTorch gives each (cuBLAS handle, stream)
      a workspace of 4096 KiB x 2 + 16 KiB x 8 = 8.125 MiB (CUBLAS_WORKSPACE_CONFIG's default
      :4096:2:16:8), 32 MiB on compute capability 9, 10 and 12 (H100, B200, RTX 50xx)
      (aten/src/ATen/cuda/CublasHandlePool.cpp, parseChosenWorkspaceSize). Handles are per
      thread: the forward's and autograd's backward thread, each with a cuBLASLt workspace of
      up to the same size: 4 x 32 MiB, the most. They come from the caching allocator, so on a
      GPU they are inside the measured allocated bytes (8,519,680 bytes stay allocated after one
      Linear on an A10G, pytorch/pytorch#95668) and are not added again. cuDNN's workspace (the
      patch-embedding convolutions) also comes from the allocator: counted on a GPU, in (3) here.

(3) fragmentation margin = 64 MiB + 15% of the phase's transient bytes (peak minus the resident
    weights, adapter and optimizer state, which are allocated once at load). vinci sets
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (`vinci.cli.default_allocator`): one
    segment per stream grows by 20 MiB pages (2 MiB for small blocks), adjacent free blocks
    always merge, and what is left is free space pinned between live blocks ("When does
    fragmentation occur in the CUDA caching allocator?", pytorch/devlogs, 2026-06-01). The
    KV cache is the case that leaves such space: transformers' DynamicCache grows each layer by
    torch.cat, a block one token longer than the one it frees, with the other layers' caches
    live around it, so the holes hold about one to two layers' cache (K and V): 2-4/L of it,
    7-14% at L = 28, the fewest layers here; 15% of all transient bytes covers it, and 64 MiB
    the pages being filled (20 + 2 MiB) and small-block leftovers. This is reasoned, not
    measured: on a GPU the margin is replaced by what was reserved.

(4) reserved: `torch.cuda.max_memory_reserved`, on a GPU only: allocated + (3) as it happened.

A card holds less than its name: CUDA reports 15.61 GiB on a 16 GB RTX A4000
(DengKaiCQ/VGGT-Long#6; 16,376 MiB in nvidia-smi) and 23.55 GiB on a 24 GB RTX 4090
(huggingface/lora-fast#1; 24,564 MiB in nvidia-smi, RLinf/RLinf#255): CARDS. A card that also
drives the desktop holds less again (1,909 MiB in use on an RTX 4080 with a display is one
sighting); these budgets assume a card that runs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

MiB = 2**20
GiB = 2**30
CARDS = {16: 15.61 * GiB, 24: 23.55 * GiB}  # card name (GB) -> bytes CUDA reports (see above)
CONTEXT_BYTES = 0.5 * GiB
WORKSPACE_BYTES = 4 * 32 * MiB
MARGIN_BYTES = 64 * MiB
MARGIN_SHARE = 0.15


@dataclass(frozen=True)
class Allowance:
    """What a card holds beyond the allocated bytes, and where each figure comes from."""

    context: float = CONTEXT_BYTES  # outside the allocator: CUDA context and loaded kernels
    workspaces: float = WORKSPACE_BYTES  # cuBLAS(Lt): 0 where the allocator counted them (a GPU)
    margin_share: float = MARGIN_SHARE  # fragmentation, as a share of the transient bytes
    margin_bytes: float = MARGIN_BYTES
    source: str = "cited (context, workspaces) and reasoned (margin): benchmarks/memory_budget.py"

    def margin(self, transient: float) -> float:
        return self.margin_bytes + self.margin_share * max(0.0, transient)


def gpu_allowance(context: float, device: str) -> Allowance:
    """On a GPU: the context as measured (used minus reserved); the workspaces are inside the
    allocated bytes, and a phase measured there brings its reserved bytes instead of a margin."""
    return Allowance(context=context, workspaces=0.0,
                     source=f"measured on {device}: context = used - reserved; workspaces in allocated")


@dataclass(frozen=True)
class Need:
    """One phase's memory: its allocated peak, the resident part of it, and the card total."""

    allocated: float  # peak allocated (or projected) bytes
    resident: float  # of which weights, adapter, its gradients and optimizer state
    allowance: Allowance = Allowance()
    reserved: Optional[float] = None  # peak reserved bytes, when measured on a GPU

    @property
    def margin(self) -> float:
        return 0.0 if self.reserved is not None else self.allowance.margin(self.allocated - self.resident)

    @property
    def total(self) -> float:
        """Bytes the card must hold."""
        if self.reserved is not None:
            return self.reserved + self.allowance.context
        return self.allocated + self.allowance.context + self.allowance.workspaces + self.margin

    def fits(self, card: int) -> bool:
        return self.total <= CARDS[card]

    def verdicts(self) -> str:
        """'16 GB: no   24 GB: fits' style cells."""
        return "  ".join(f"{card} GB: {'fits' if self.fits(card) else 'no':<4}" for card in CARDS)


def largest_fitting(need: Callable[[int], Need], card: int, candidates) -> Optional[int]:
    """The largest candidate x (tried in the order given, growing) whose need(x) fits the card."""
    best = None
    for x in candidates:
        if need(x).fits(card):
            best = x
    return best


def gib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"
