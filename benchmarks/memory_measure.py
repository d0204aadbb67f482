"""The measuring side of benchmarks.memory: peaks per segment of vinci's own sampling, update,
SFT and reward code, on a GPU (the caching allocator's counters) or on the CPU (live tensor bytes).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from PIL import ImageFilter
from safetensors.torch import save_file

from benchmarks.memory_models import PROMPT, REWARD_MODEL, chart_image
from vinci import grpo
from vinci.backbone import Backbone, Quantization, default_device, load_backbone
from vinci.data.collate import IGNORE, prompt_text
from vinci.generation import sample
from vinci.inputs import rows_of, with_completion
from vinci.logprobs import DEFAULT_CHUNK, answer_loss, sequence_logp
from vinci.reward.encoders import TimmEncoder
from vinci.reward.similarity import patch_similarity
from vinci.tensor_memory import LiveTensorBytes

log = logging.getLogger("benchmarks.memory")


class Meter:
    """Peak bytes since the last `reset`: CUDA's allocator counters, or live tensor bytes on the CPU.
    On a GPU it also keeps the highest reserved bytes across resets (`take_reserved`)."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.method = "torch.cuda.max_memory_allocated" if self.cuda else "peak live tensor bytes (LiveTensorBytes)"
        self._tracker = None
        self._reserved = 0

    @contextmanager
    def active(self):
        if self.cuda:
            yield self
            return

        with LiveTensorBytes() as self._tracker:
            yield self
        self._tracker = None

    def current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else self._tracker.current

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else self._tracker.peak

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self._reserved = max(self._reserved, torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()
        else:
            self._tracker.reset_peak()

    def take_reserved(self) -> int | None:
        """The highest `torch.cuda.max_memory_reserved` since the last call; None on the CPU."""
        if not self.cuda:
            return None
        high, self._reserved = max(self._reserved, torch.cuda.max_memory_reserved()), 0
        return high

    def context(self) -> int | None:
        """Bytes the device holds outside the caching allocator (CUDA context, loaded kernels):
        used minus reserved, on a GPU that runs this process alone; None on the CPU."""
        if not self.cuda:
            return None
        free, total = torch.cuda.mem_get_info()
        return total - free - torch.cuda.memory_reserved()


def module_bytes(module) -> int:
    """Bytes of a module's parameters, buffers and bitsandbytes quantisation constants."""
    seen: set[int] = set()

    def size(tensor) -> int:
        if not isinstance(tensor, torch.Tensor) or id(tensor.untyped_storage()) in seen:
            return 0
        seen.add(id(tensor.untyped_storage()))
        return tensor.untyped_storage().nbytes()

    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        total += size(tensor)
        state = getattr(tensor, "quant_state", None)
        while state is not None:  # absmax, code, offset; state2 under double quantisation
            total += sum(size(value) for value in vars(state).values())
            state = getattr(state, "state2", None)
    return total



def prompt_inputs(processor, image) -> dict:
    """One templated prompt with its image, as vinci.data.collate.RLCollator builds a batch of them."""
    processor.tokenizer.padding_side = "left"
    return dict(processor(text=[prompt_text(processor, PROMPT)], images=[image], padding=True, return_tensors="pt"))


def random_ids(model, rows: int, length: int, low: int):
    """[rows, length] token ids at or above `low`, the fixture tokenizer's size: never a special token."""
    vocab = model.get_output_embeddings().weight.shape[0]
    return torch.randint(low, vocab, (rows, length))


def warm_optimizer(model, lr: float, weight_decay: float):
    """AdamW over the trainable (LoRA) tensors, stepped once so that its state and the grads exist."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer, trainable


class Segments:
    """Peak bytes per segment of a run, so that each kind of moment is projected on its own.

    A segment is "<stage> <part>": the caller sets the stage (forward, backward, step, prefill),
    and the part changes when a watched module starts its forward: the vision tower, a decoder
    layer, the output head (checkpointed layers and head chunks run their forward again in the
    backward, so the backward splits the same way). A phase's peak is its largest segment's.
    """

    def __init__(self, meter: Meter, model) -> None:
        base = model.get_base_model()
        # a layer's first module, not the layer: checkpointing reruns a layer's forward without its hooks
        first = [getattr(layer, "input_layernorm", None) or next(layer.children()) for layer in base.model.language_model.layers]
        parts = {"vision": [base.model.visual], "layers": first, "head": [base.get_output_embeddings()]}
        self.meter, self.stage, self.part, self.split, self.peaks = meter, "", "", True, {}
        self.hooks = [module.register_forward_pre_hook(lambda *_, part=part: self.switch(part=part))
                      for part, modules in parts.items() for module in modules]

    def switch(self, stage: str | None = None, part: str | None = None) -> None:
        if part is not None and not self.split:
            return
        key = f"{self.stage} {self.part}".strip()
        if key:
            self.peaks[key] = max(self.peaks.get(key, 0), self.meter.peak())
        self.meter.reset()
        if stage is not None:
            self.stage, self.part = stage, ""
        if part is not None:
            self.part = part

    def close(self) -> dict[str, int]:
        self.switch(stage="")
        for hook in self.hooks:
            hook.remove()
        return self.peaks


def measure_sampling(meter: Meter, model, processor, inputs: dict, group: int, new_tokens: int) -> dict:
    """Peaks of `sample` for G rows of one prompt, each new_tokens long: per segment of the prefill
    (the first forward), then one per decode step (forwards 1 .. N-1), then what follows them."""
    base = model.get_base_model()
    segments, steps = Segments(meter, model), []

    def record(module, args, output):
        if segments.stage == "prefill":
            segments.switch(stage="decode")
            segments.split = False  # one peak per decode step
        else:
            steps.append(meter.peak())
            meter.reset()

    hook = base.register_forward_hook(record)
    baseline = meter.current()
    try:
        segments.switch(stage="prefill")
        done = sample(model, processor, inputs, num_samples=group, max_new_tokens=new_tokens, min_new_tokens=new_tokens)  # EOS masked until the end
        steps.append(meter.peak())
    finally:
        hook.remove()
        prefill = segments.close()
    if int(done.completion_mask.sum(dim=1).min()) != new_tokens:
        raise RuntimeError("a sample ended before max_new_tokens: the worst case was not measured")
    prefill.pop("decode", None)
    return {"baseline": baseline, "rows": group, "new_tokens": new_tokens, "prefill": prefill, "steps": steps}


def measure_step(meter: Meter, model, optimizer, trainable, make_batch, loss_fn) -> dict:
    """Segment peaks of one micro-batch: zero_grad, build the batch (its inputs count), the loss
    under bf16 autocast as Lightning's bf16-mixed runs it, backward, clipping, AdamW step."""
    optimizer.zero_grad()
    baseline = meter.current()
    segments = Segments(meter, model)
    segments.switch(stage="forward")
    batch = make_batch()
    with torch.autocast("cuda" if meter.cuda else "cpu", dtype=torch.bfloat16):
        loss = loss_fn(batch)
    segments.switch(stage="backward")
    loss.backward()
    segments.switch(stage="step")
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    del batch, loss
    return {"baseline": baseline, "segments": segments.close()}


def measure_update(meter: Meter, model, optimizer, trainable, inputs: dict, rows: int, new_tokens: int, low: int) -> dict:
    """One ViRL micro-batch of `rows` sequences with new_tokens completion tokens each."""
    def make_batch():
        ids = random_ids(model, rows, new_tokens, low).to(inputs["input_ids"].device)  # [n, L]
        mask = torch.ones_like(ids)  # [n, L]: no sample stopped early
        advantages = torch.randn(rows, device=ids.device)  # [n]
        return with_completion(rows_of(inputs, [0] * rows), ids, mask), ids, mask, advantages  # inputs [n, P + L]

    def loss(batch):
        model_inputs, ids, mask, advantages = batch
        logp, entropy = sequence_logp(model, model_inputs, ids, mask, 1.0, DEFAULT_CHUNK, with_entropy=True)  # [n, L]
        value, _ = grpo.policy_loss(logp, logp.detach(), advantages, mask, clip_low=0.2, clip_high=0.3,
                                    clip_dual=3.0, agg="token-mean", entropy=entropy.detach())
        return value

    return dict(measure_step(meter, model, optimizer, trainable, make_batch, loss), rows=rows, new_tokens=new_tokens)


def measure_sft(meter: Meter, model, optimizer, trainable, inputs: dict, rows: int, new_tokens: int, low: int) -> dict:
    """One SFT micro-batch of `rows` sequences: the prompt, then new_tokens answer tokens."""
    def make_batch():
        ids = random_ids(model, rows, new_tokens, low).to(inputs["input_ids"].device)  # [n, A]
        model_inputs = with_completion(rows_of(inputs, [0] * rows), ids, torch.ones_like(ids))  # [n, P + A]
        labels = model_inputs["input_ids"].clone()  # [n, P + A]
        labels[:, :-new_tokens] = IGNORE  # the prompt and its image tokens do not count
        return model_inputs, labels

    def loss(batch):
        return answer_loss(model, batch[0], batch[1], IGNORE, DEFAULT_CHUNK)[0]

    return dict(measure_step(meter, model, optimizer, trainable, make_batch, loss), rows=rows, new_tokens=new_tokens)


def reward_images(group: int):
    """A 4:3 reference chart (a 4 x 3 grid: 12 tiles + thumbnail) and G distinct near-miss renders."""
    reference = chart_image(32, 40, 30)  # 1280 x 960
    renders = [reference.rotate(2 * (i + 1), fillcolor="white").filter(ImageFilter.GaussianBlur(i % 3)) for i in range(group)]
    return reference, renders


def measure_reward(meter: Meter, out: Path, depth: int, group: int) -> dict:
    """Peak of scoring G renders against one reference with DINOv2-L cut to `depth` blocks, random
    weights loaded through vinci's TimmEncoder from a local file."""
    weights = out / f"dinov2-large-depth{depth}.safetensors"
    if not weights.is_file():
        net = timm.create_model(REWARD_MODEL, pretrained=False, num_classes=0, depth=depth)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
        del net
    encoder = TimmEncoder(REWARD_MODEL, weights=str(weights), depth=depth)
    if meter.cuda:
        encoder = encoder.cuda()
    reference, renders = reward_images(group)
    with meter.active():
        meter.reset()
        baseline = meter.current()
        patch_similarity(renders, [reference] * group, encoder, tile_size=448, max_tiles=12)
        peak = meter.peak()
    return {"baseline": baseline, "peak": peak, "weights": module_bytes(encoder), "depth": depth,
            "block_bytes": module_bytes(encoder.model.blocks[0]), "renders": group, "reserved": meter.take_reserved()}


def run_policy(task: dict) -> dict:
    """One worker: load one built model (QLoRA or LoRA on bf16) and run the task's measurements."""
    qlora = task["qlora"]
    settings = Backbone(model=task["folder"], dtype="bfloat16", gradient_checkpointing=True,
                        quantization=Quantization(load_in_4bit=qlora))
    model, processor = load_backbone(settings, trainable=True, device=default_device())  # the GPU when there is one
    if qlora:  # as ViRLModule.configure_model: only LoRA matrices train
        for n, p in model.named_parameters():
            p.requires_grad = "lora_" in n
    model.train()
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in prompt_inputs(processor, chart_image(task["token_px"], *task["image_grid"])).items()}
    low = len(processor.tokenizer)
    meter = Meter()
    optimizer, trainable = warm_optimizer(model, *((1e-6, 0.01) if qlora else (1e-4, 0.0)))
    result = {"prompt_tokens": int(inputs["input_ids"].shape[1]), "method": meter.method,
              "vision_block_bytes": module_bytes(model.get_base_model().model.visual.blocks[0]), "results": []}
    with meter.active():
        for job in task["jobs"]:
            started = time.perf_counter()
            if job["kind"] == "sampling":
                out = measure_sampling(meter, model, processor, inputs, job["rows"], job["new_tokens"])
            else:
                measure = measure_update if job["kind"] == "update" else measure_sft
                out = measure(meter, model, optimizer, trainable, inputs, job["rows"], job["new_tokens"], low)
            out.update(kind=job["kind"], layers=task["layers"], seconds=round(time.perf_counter() - started, 1),
                       reserved=meter.take_reserved())
            result["results"].append(out)
            log.info("  measured %s", {k: v for k, v in out.items() if k != "steps"})
    result.update(context=meter.context(), device=torch.cuda.get_device_name() if meter.cuda else "cpu")
    return result

