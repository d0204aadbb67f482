"""The tables of benchmarks.memory: each phase's allocated bytes and what a card must hold.

Every phase becomes a `memory_budget.Need` (allocated, resident, allowance, reserved on a GPU),
whose card total is checked against 16 and 24 GB cards; a second table gives the ViRL step per
chunk of P prompts x G samples (what a rollout batch sampled a chunk at a time holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from benchmarks.memory_budget import CARDS, GiB, Allowance, Need, gib, gpu_allowance, largest_fitting
from benchmarks.memory_fit import SamplingFit, StepFit, largest_tokens
from benchmarks.memory_models import ARCHS, CHUNKS, RECIPES, REWARD_DEPTH, Plan

ADAM_BYTES = 8  # AdamW's two fp32 states per LoRA parameter: in a training run's resident bytes, not eval's


@dataclass
class Row:
    """One line of the table."""

    model: str
    recipe: str
    phase: str
    need: Need
    label: str


class Projection:
    """One model's measurements carried to full size, as `Need`s per phase."""

    def __init__(self, measured: dict, reward: dict, allowance: Allowance) -> None:
        name = measured["name"]
        self.name, self.arch, self.recipe, self.allowance = name, ARCHS[name], RECIPES[name], allowance
        self.L = self.arch.layers
        meta = measured["meta"]
        self.prompt = meta["qlora"]["prompt_tokens"]
        missing = self.arch.vision_depth - measured["vision_depth"]
        self.vision_note = f"; +{missing} vision blocks by weight" if missing else ""
        self.vq = missing * meta["qlora"]["vision_block_bytes"]  # vision blocks not built, QLoRA load
        self.vb = missing * meta["bf16"]["vision_block_bytes"]  # ... bf16 load
        runs = measured["runs"]
        self.runs = runs
        self.sampling = SamplingFit.from_runs([r for r in runs["qlora"] if r["kind"] == "sampling"])
        self.update = StepFit.from_runs([r for r in runs["qlora"] if r["kind"] == "update"], self.prompt)
        self.sft_qlora = StepFit.from_runs([r for r in runs["qlora"] if r["kind"] == "sft"], self.prompt)
        self.sft_bf16 = StepFit.from_runs(runs["bf16"], self.prompt)
        self.reward = reward

    def _reserved(self, setting: str, kind: str, rows: int, new_tokens: int) -> Optional[float]:
        """The reserved peak of a GPU run at exactly this point (full depth), else None."""
        for run in self.runs[setting]:
            if (run["kind"], run["layers"], run["rows"], run["new_tokens"]) == (kind, self.L, rows, new_tokens):
                return run.get("reserved")
        return None

    def need(self, allocated: float, resident: float, reserved: Optional[float] = None) -> Need:
        return Need(allocated, resident, self.allowance, reserved)

    def sampling_need(self, rows: int, new_tokens: int) -> Need:
        reserved = self._reserved("qlora", "sampling", rows, new_tokens)
        return self.need(self.sampling.peak(self.L, rows, new_tokens) + self.vq, self.sampling.resident(self.L) + self.vq, reserved)

    def update_need(self, micro: int, new_tokens: int) -> Need:
        reserved = self._reserved("qlora", "update", micro, new_tokens)
        return self.need(self.update.peak(self.L, micro, new_tokens) + self.vq, self.update.resident(self.L) + self.vq, reserved)

    def reward_need(self) -> Need:
        return Need(self.reward["peak_full"], self.reward["weights_full"], self.allowance, self.reward.get("reserved"))

    def step_need(self, prompts: int, new_tokens: int, micro: int) -> Need:
        """One ViRL step sampling `prompts` x G rows at a time (see `rows_step_need`)."""
        return self.rows_step_need(prompts * self.recipe.group, new_tokens, micro)

    def rows_step_need(self, rows: int, new_tokens: int, micro: int) -> Need:
        """One ViRL step, DINOv2-L's weights beside the policy throughout: the largest of sampling
        `rows` rows at once, the update micro-batch, and the reward pass."""
        weights = self.reward["weights_full"]
        resident = self.sampling.resident(self.L) + self.vq + weights
        allocated = max(self.sampling.peak(self.L, rows, new_tokens) + self.vq + weights,
                        self.update.peak(self.L, micro, new_tokens) + self.vq + weights,
                        self.sampling.resident(self.L) + self.vq + self.reward["peak_full"])
        return self.need(allocated, resident)

    def sft_need(self, setting: str) -> Need:
        fit, extra = (self.sft_qlora, self.vq) if setting == "QLoRA" else (self.sft_bf16, self.vb)
        answer, rows = self.recipe.sft_tokens - self.prompt, self.recipe.sft_rows
        reserved = self._reserved("qlora" if setting == "QLoRA" else "bf16", "sft", rows, answer)
        return self.need(fit.peak(self.L, rows, answer) + extra, fit.resident(self.L) + extra, reserved)

    def eval_need(self, rows: int, new_tokens: int) -> Need:
        """The eval recipe: the bf16 base and the adapter (the LoRA-bf16 runs' resident bytes less
        AdamW's state), plus the QLoRA sampling fit's activations and KV cache for `rows` answers.
        Its reward encoder runs on the CPU (vinci.eval.scoring builds it by name), so none here."""
        resident = self.sft_bf16.resident(self.L) + self.vb - ADAM_BYTES * self.arch.lora_params(self.L)
        active = max(self.sampling.parts(self.L, rows, new_tokens).values())
        return self.need(resident + active, resident)

    def rows(self) -> list[Row]:
        B, G, N, L = self.recipe.prompts, self.recipe.group, self.recipe.new_tokens, self.L
        virl, name, note = f"ViRL QLoRA {B}x{G}x{N:,}", self.name, self.vision_note
        out = [Row(name, virl, f"sampling ({B * G} rows x {self.prompt:,}+{N:,} tokens)", self.sampling_need(B * G, N),
                   self.sampling.label(L, B * G, N) + note + f"; peak in {self.sampling.where(L, B * G, N)}")]
        for micro in self.recipe.micro_batch:
            tag = "recipe" if micro == self.recipe.micro_batch[0] else "fallback"
            out.append(Row(name, virl, f"update, micro-batch {micro} ({tag})", self.update_need(micro, N),
                           self.update.label(L, micro, N) + note + f"; peak in {self.update.where(L, micro, N)}"))
        out.append(Row(name, virl, f"reward: DINOv2-L, {self.reward['renders']} renders x 13 crops", self.reward_need(),
                       self.reward["label"]))
        for micro in self.recipe.micro_batch:
            out.append(Row(name, virl, f"step, micro-batch {micro}, + DINOv2-L", self.step_need(B, N, micro),
                           "largest phase above + the other model beside it"))
        answer, n = self.recipe.sft_tokens - self.prompt, self.recipe.sft_rows
        for setting, fit in (("QLoRA", self.sft_qlora), ("LoRA-bf16", self.sft_bf16)):
            out.append(Row(name, f"SFT {setting} {n}x{self.recipe.sft_tokens:,}", f"update ({self.prompt:,}+{answer:,} tokens)",
                           self.sft_need(setting), fit.label(L, n, answer) + note + f"; peak in {fit.where(L, n, answer)}"))
        rows = self.recipe.eval_rows
        out.append(Row(name, f"eval bf16 {rows}x{N:,}", f"greedy answers ({rows} rows x {self.prompt:,}+{N:,} tokens)",
                       self.eval_need(rows, N), "projected: LoRA-bf16 resident less AdamW state + sampling fit" + note))
        return out

    def chunk_cells(self, micro: int) -> list[Need]:
        """The ViRL step at the recipe's length, sampling P prompts x G at a time, for each P in CHUNKS."""
        return [self.step_need(p, self.recipe.new_tokens, micro) for p in CHUNKS]

    def token_lines(self) -> list[str]:
        """Per card and micro-batch: the largest max_new_tokens that fits, by prompts per chunk,
        then the most rows sampled at once that fit at the recipe's length."""
        lines, G, N = [], self.recipe.group, self.recipe.new_tokens
        for card, size in CARDS.items():
            for micro in self.recipe.micro_batch:
                cells = [f"{p} x {G}: {largest_tokens(lambda n, p=p: self.step_need(p, n, micro).total, size):>6}" for p in CHUNKS]
                most = largest_fitting(lambda rows: self.rows_step_need(rows, N, micro), card, range(1, 129)) or 0
                lines.append(f"{self.name:<14} {card:>3} GB  micro-batch {micro}  " + "  ".join(cells)
                             + f"  | at {N:,} tokens: {most}{'+' if most == 128 else ''} rows")
        return lines


def reward_summary(reward: dict) -> dict:
    missing = REWARD_DEPTH - reward["depth"]
    reward["peak_full"] = reward["peak"] + missing * reward["block_bytes"]
    reward["weights_full"] = reward["weights"] + missing * reward["block_bytes"]
    reward["label"] = f"projected from {reward['depth']} measured block(s), +{missing} by weight" if missing else "measured"
    if missing:
        reward["reserved"] = None  # a cut encoder's reserved bytes say nothing of the full one
    return reward


def allowance_for(measured: list[dict], context_mib: Optional[float] = None) -> Allowance:
    """Measured on a GPU: its context (the largest seen) and no separate workspaces; else the cited ones."""
    metas = [meta for m in measured for meta in m["meta"].values()]
    contexts = [meta["context"] for meta in metas if meta.get("context") is not None]
    allowance = gpu_allowance(max(contexts), metas[0].get("device", "a GPU")) if contexts else Allowance()
    if context_mib is not None:
        allowance = Allowance(context_mib * 2**20, allowance.workspaces, allowance.margin_share, allowance.margin_bytes,
                              f"context {context_mib:g} MiB as given; " + allowance.source)
    return allowance


def measured_lines(measured: dict) -> list[str]:
    """One line per measured run of a model: what was built and run, and what it peaked at."""
    lines = []
    for setting, runs in measured["runs"].items():
        for run in runs:
            segments = run.get("segments") or {**run["prefill"], "decode steps": max(run["steps"])}
            where = max(segments, key=segments.get)
            reserved = f"  reserved {gib(run['reserved'])}" if run.get("reserved") is not None else ""
            lines.append(f"  {measured['name']:<14} {'QLoRA' if setting == 'qlora' else 'LoRA-bf16':<9} {run['layers']} layers, "
                         f"{measured['vision_depth']} vision blocks  {run['kind']:<8} {run['rows']} x {run['new_tokens']:<4} new  "
                         f"resident {run['baseline'] / GiB:5.2f}  peak {segments[where] / GiB:5.2f} GiB in {where:<15}{reserved} "
                         f"{run['seconds']:6.1f} s")
    return lines


def print_table(rows: list[Row]) -> None:
    heads = ("model", "recipe", "phase")
    widths = [max(len(h), *(len(getattr(r, h)) for r in rows)) for h in heads]
    numbers = " | alloc GiB | +ctx+ws | +margin | reserved | card GiB | 16 GB | 24 GB | measured/projected"
    print(" | ".join(h.ljust(w) for h, w in zip(heads, widths)) + numbers)
    print("-+-".join("-" * w for w in widths) + "-+-----------+---------+---------+----------+----------+-------+-------+-------------------")
    for r in rows:
        n = r.need
        extra = n.allowance.context + n.allowance.workspaces
        print(" | ".join(v.ljust(w) for v, w in zip((r.model, r.recipe, r.phase), widths))
              + f" | {n.allocated / GiB:9.2f} | {extra / GiB:7.2f} | {n.margin / GiB:7.2f} | {gib(n.reserved):>8} | {n.total / GiB:8.2f}"
              + "".join(f" | {'fits' if n.fits(card) else 'NO':<5}" for card in CARDS) + f" | {r.label}")


def print_chunks(projections: list[Projection]) -> None:
    G = RECIPES[projections[0].name].group
    print(f"\nViRL step, sampling P prompts x G = {G} at a time, 2,048 new tokens, DINOv2-L beside: card GiB, fits 16 / 24 GB")
    print(f"{'model':<14} {'micro':>5}" + "".join(f" | P={p} ({p * G} rows)      " for p in CHUNKS) + " | largest P: 16 GB, 24 GB")
    for proj in projections:
        for micro in proj.recipe.micro_batch:
            cells = proj.chunk_cells(micro)
            fit = [largest_fitting(lambda p, micro=micro: proj.step_need(p, proj.recipe.new_tokens, micro), card, CHUNKS)
                   for card in CARDS]
            print(f"{proj.name:<14} {micro:>5}" + "".join(
                f" | {c.total / GiB:6.2f} {'y' if c.fits(16) else 'n'} / {'y' if c.fits(24) else 'n'}      " for c in cells)
                + " | " + ", ".join(str(p) if p else "none" for p in fit))


def report(data: dict, context_mib: Optional[float] = None) -> None:
    """Print the tables, the fits and the measured points behind them."""
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.get("plan", {}).items()})
    reward, measured = data["reward"], data["models"]
    allowance = allowance_for(measured, context_mib)
    projections = [Projection(m, reward, allowance) for m in measured]
    print_table([row for p in projections for row in p.rows()])
    print(f"\ncard GiB = alloc + ctx+ws (context {allowance.context / 2**20:.0f} MiB, workspaces {allowance.workspaces / 2**20:.0f} MiB)"
          f" + margin ({allowance.margin_bytes / 2**20:.0f} MiB + {allowance.margin_share:.0%} of the bytes above the resident ones),"
          f" or reserved + context where measured on a GPU; {allowance.source}.")
    print("Cards: " + ", ".join(f"{card} GB = {size / GiB:.2f} GiB as CUDA reports it" for card, size in CARDS.items())
          + "; a card that also drives a display holds less.")
    print_chunks(projections)
    print("\nLargest max_new_tokens whose step fits, by prompts per chunk (x G), then the most rows sampled at once at the"
          " recipe's length:")
    print("\n".join("  " + line for p in projections for line in p.token_lines()))
    print("\nMeasured points (resident: weights, LoRA, its gradients and AdamW state, inputs; peak: the largest segment):")
    print("\n".join(line for m in measured for line in measured_lines(m)))
    print(f"  reward: DINOv2-L cut to {reward['depth']} block(s), {reward['renders']} renders + reference: "
          f"resident {reward['baseline'] / GiB:.2f}  peak {reward['peak'] / GiB:.2f} GiB; one block's weights "
          f"{reward['block_bytes'] / 2**20:.0f} MiB")
    prompts = ", ".join(f"{m['name']} {m['meta']['qlora']['prompt_tokens']:,}" for m in measured)
    depth = (f"{'+'.join(map(str, plan.layers))} decoder layers and 1 (Qwen2.5-VL) / 3 (Qwen3-VL: one per deepstack "
             "feature) vision blocks" if plan.layers else "at full depth")
    print(f"""
Memory: {measured[0]['meta']['qlora']['method']}; 1 GiB = 2**30 bytes.
Prompt: one chart of 40 x 25 = 1,000 image tokens (28 px per token for Qwen2.5-VL, 32 px for Qwen3-VL), the chat
  template and the instruction; tokens: {prompts}. The ViRL recipes' max_pixels keep up to 1,024 image
  tokens (802,816 px at 28 px, 1,048,576 px at 32 px), so 1,000 stands for a full-size chart.
Built {depth}; update/SFT measured at {' and '.join(map(str, plan.rows))} rows x {' and '.join(map(str, plan.tokens))}
  new tokens; sampling at G = 8 rows of one prompt, {' and '.join(map(str, plan.sample_tokens))} new tokens per depth.
Sampling runs outside autocast, as the RolloutSampler callback does; update and SFT run under bf16 autocast.
On the CPU DINOv2-L computes in fp32 (vinci autocasts it to bf16 on CUDA only): its activations read high.
Wall time of the measurements: {data.get('seconds', float('nan')):,.0f} s.""")
