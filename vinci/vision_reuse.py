"""The vision tower once per prompt image per ViRL step, when nothing in it trains.

A ViRL step reads each prompt image G times or more: its G rollout rows are scored in the
update (once per PPO epoch, again for the KL reference and for old log-probs with several
mini-batches), and each row's forward runs the whole model, vision tower included. With the
tower frozen (LoRA on the language model only, `Lora.vision: frozen`), those runs all compute
the features that sampling already computed. (`generate` itself, in transformers 5.x, encodes
each prompt image once and expands the features for its G samples.)

`reuse_image_features(model)` memoises the inner model's `get_image_features`, the one method
every family's forward and `generate` call to encode images, while it is active:

    split the call's image inputs per image        vinci.inputs.image_parts
    look each one up (same shapes, torch.equal)    a hit costs no vision forward
    encode only the new ones, in one call          the model's own get_image_features
    answer in the structure the model expects      PER_IMAGE, PER_LEVEL_PER_IMAGE below

so a step that samples, then scores its rows, runs the tower once per distinct prompt image.
The model's forward still computes everything else itself from the same inputs: placeholder
scattering, M-RoPE positions (input_ids, image_grid_thw, attention mask), deepstack injection.
Values equal the uncached path up to float summation order (tests/test_vision_once.py: token
ids identical, log-probs to 1e-5 in fp32).

The cache lives as long as the `with` block (the step) and is emptied on exit, so features do
not pile up across steps. It is held in host memory (each image's inputs and features), so the
device holds only the micro-batch's features, whatever the rollout batch: one copy to the host of
each image's inputs per call to look it up, one copy of its features back. It refuses a model whose vision tower trains or holds adapter layers
(`blocker`): its features change with every update or with the active adapter.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from vinci.backbone import vision_parameters
from vinci.inputs import collate_rows, image_parts
from vinci.logprobs import inner_model

# Fields of get_image_features' output that the models' forward reads, by layout:
PER_IMAGE = ("pooler_output",)  # a sequence with one [tokens, H] tensor per image (every family)
PER_LEVEL_PER_IMAGE = ("deepstack_features",)  # Qwen3-VL: one such sequence per deepstack level
# Other fields (last_hidden_state: the tower's packed states before the merger) are left None.
PLAIN_KWARGS = ("return_dict", "use_cache")  # anything else asked of the encoder bypasses the cache


def blocker(model) -> Optional[str]:
    """Why image features of `model` may not be reused across a step, or None when they may."""
    _, inner = inner_model(model)
    if not callable(getattr(inner, "get_image_features", None)):
        return f"{type(inner).__name__} has no get_image_features to memoise"
    named = vision_parameters(model)
    if not named:
        return "no vision tower was found"
    training = [name for name, p in named if p.requires_grad]
    if training:
        return (f"{len(training)} vision tower parameters train (e.g. {training[0]}; Lora.vision: lora, or a "
                "vision module in modules_to_save), so its features change with every update")
    adapted = [name for name, _ in named if "lora_" in name or "modules_to_save" in name]
    if adapted:
        return f"the vision tower holds adapter layers (e.g. {adapted[0]}), so its features depend on the active adapter"
    return None


def _to(value, device):
    """A feature entry ([tokens, H], or a list of them) on `device`."""
    return [v.to(device, non_blocking=True) for v in value] if isinstance(value, list) else value.to(device, non_blocking=True)


def _signature(part: dict[str, torch.Tensor]) -> tuple:
    return tuple((key, tuple(value.shape), value.dtype) for key, value in sorted(part.items()))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return _signature(a) == _signature(b) and all(torch.equal(a[key], b[key]) for key in a)


class ImageFeatureCache:
    """A stand-in for `get_image_features` that encodes each distinct image once.

    Entries are (image inputs, features) grouped by the inputs' shapes; features are a dict of
    the `PER_IMAGE` fields ([tokens, H]) and `PER_LEVEL_PER_IMAGE` fields (a list of [tokens, H]).
    """

    def __init__(self, encode) -> None:
        self.encode = encode  # the model's own bound get_image_features
        self.parameters = list(inspect.signature(encode).parameters)
        self.entries: dict[tuple, list[tuple[dict, dict]]] = {}
        self.output_type = None  # the encoder's output class, set by its first call
        self.containers: dict[str, type] = {}  # field -> tuple or list, as the encoder returns it
        self.images_encoded = 0
        self.images_reused = 0
        functools.update_wrapper(self, encode)  # generate reads the signature to pick its arguments

    def find(self, part: dict[str, torch.Tensor]) -> Optional[dict]:
        return next((features for inputs, features in self.entries.get(_signature(part), []) if _same(inputs, part)), None)

    def __call__(self, *args, **kwargs):
        bound = dict(zip(self.parameters, args))
        images = {k: v for k, v in {**bound, **kwargs}.items() if k in self.parameters and k != "kwargs" and v is not None}
        extra = {k: v for k, v in kwargs.items() if k not in images}
        if any(k not in PLAIN_KWARGS for k in extra) or extra.get("return_dict") is False:
            return self.encode(*args, **kwargs)  # asked for more than features (attentions, a tuple, ...)
        parts = image_parts(images)
        if not parts:
            return self.encode(*args, **kwargs)
        device = next(iter(parts[0].values())).device
        parts = [{key: value.cpu() for key, value in part.items()} for part in parts]  # the cache is on the host
        features = [self.find(part) for part in parts]
        missing = [i for i, found in enumerate(features) if found is None]
        new: list[dict] = []  # distinct images not seen before, in order
        for i in missing:
            if not any(_same(seen, parts[i]) for seen in new):
                new.append(parts[i])
        if new:
            batch = {key: value.to(device) for key, value in collate_rows(new, 0).items()}
            self.store(new, self.encode(**batch, **extra))
            for i in missing:
                features[i] = self.find(parts[i])
        self.images_encoded += len(new)
        self.images_reused += len(parts) - len(new)
        features = [{name: _to(value, device) for name, value in f.items()} for f in features]
        fields = {name: self.containers[name](f[name] for f in features) for name in PER_IMAGE if name in self.containers}
        for name in PER_LEVEL_PER_IMAGE:
            if name in self.containers:
                levels = len(features[0][name]) if features else 0
                fields[name] = [tuple(f[name][level] for f in features) for level in range(levels)]
        return self.output_type(**fields)

    def store(self, parts: list[dict], out) -> None:
        """Keep each image's share of the encoder's output `out` (of `len(parts)` images)."""
        self.output_type = type(out)
        per_image = [dict() for _ in parts]
        for name in PER_IMAGE + PER_LEVEL_PER_IMAGE:
            value = getattr(out, name, None)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{type(out).__name__}.{name} is not one entry per image; set reuse_vision: false")
            self.containers[name] = type(value) if name in PER_IMAGE else list
            sequences = [value] if name in PER_IMAGE else value
            if any(len(sequence) != len(parts) for sequence in sequences):
                raise ValueError(f"get_image_features gave {name} for {[len(s) for s in sequences]} images, expected {len(parts)}")
            for i, features in enumerate(per_image):  # detached copies in host memory
                features[name] = sequences[0][i].detach().cpu() if name in PER_IMAGE else [level[i].detach().cpu() for level in sequences]
        for part, features in zip(parts, per_image):
            self.entries.setdefault(_signature(part), []).append((part, features))

    def clear(self) -> None:
        self.entries.clear()


@contextmanager
def reuse_image_features(model, enabled: bool = True) -> Iterator[Optional[ImageFeatureCache]]:
    """While active, each distinct image `model` sees is encoded once; yields the cache (None
    when not `enabled`). Refuses (ValueError) a model whose features may not be reused (`blocker`)."""
    if not enabled:
        yield None
        return
    reason = blocker(model)
    if reason:
        raise ValueError(f"cannot reuse image features: {reason}")
    _, inner = inner_model(model)
    own = inner.__dict__.get("get_image_features")  # an instance attribute to put back, if any
    cache = ImageFeatureCache(inner.get_image_features)
    inner.get_image_features = cache  # the model's forward and generate call self.get_image_features
    try:
        yield cache
    finally:
        cache.clear()
        if own is None:
            del inner.get_image_features
        else:
            inner.get_image_features = own
