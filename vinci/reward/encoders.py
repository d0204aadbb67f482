"""Crop encoders for the visual reward: a batch of crops in, one embedding per crop out.

- `PixelEncoder` ("pixel"): weight-free and deterministic; the embedded default and the offline
  fallback. Each crop becomes three L2-normalised blocks: colour layout (RGB on a 32x32 grid,
  centred per crop), edge layout (luminance gradient magnitude on a 32x32 grid, centred per crop)
  and tone (the crop's mean colour, each channel encoded by Gaussian bumps so that cosine falls
  smoothly with the colour difference). The two layout blocks also carry the tone encoding at a
  small "noise floor" scale: a flat crop is then described by its colour instead of a zero
  vector, so two flat crops match only when their colours do, and identical crops always have
  cosine 1. The cosine of two embeddings is the weighted mean of the block cosines. It simplifies
  a learned encoder to fixed low-level features: it sees layout, colour and edges, not semantics.
- `TimmEncoder` ("timm:<model name>"): any timm image model; the paper's choice is DINOv2-L,
  `vit_large_patch14_dinov2.lvd142m`, the default. The embedding is the CLS token or the mean of
  the patch tokens. Weights come from an explicit file or the local Hugging Face cache; nothing
  is downloaded unless `allow_download=True`. Normalisation and input size come from the model's
  pretrained config (the input size follows the model when `img_size` is overridden).

Both are `nn.Module`s, so `.to(device)` moves them; `embed` runs under `torch.inference_mode` on
the module's device, in bf16 autocast on CUDA.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_TIMM_MODEL = "vit_large_patch14_dinov2.lvd142m"
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class MissingWeightsError(FileNotFoundError):
    """A timm encoder's weights are neither given as a file nor in the local Hugging Face cache."""


class CropEncoder(nn.Module):
    """Base class: `embed(crops) -> Tensor[M, D]` (float32, on the module's device)."""

    name: str = "encoder"

    def __init__(self) -> None:
        super().__init__()
        # Tracks the device for weight-free encoders; moves with .to().
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def embed(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.name


def _as_array(crops: Sequence[Image.Image], size: int | tuple[int, int], resample) -> np.ndarray:
    """Resize crops to size (w, h) and stack them as uint8 [M, H, W, 3]."""
    w, h = (size, size) if isinstance(size, int) else size
    out = []
    for crop in crops:
        if crop.mode != "RGB":
            crop = crop.convert("RGB")
        if crop.size != (w, h):
            crop = crop.resize((w, h), resample)
        out.append(np.asarray(crop, dtype=np.uint8))
    return np.stack(out)


class PixelEncoder(CropEncoder):
    """Weight-free colour + edge + tone embedding (see the module docstring)."""

    name = "pixel"

    def __init__(
        self,
        grid: int = 32,
        noise_floor: float = 0.01,
        weights: tuple[float, float, float] = (0.55, 0.35, 0.10),
        tone_bins: int = 11,
        tone_width: float = 0.1,
    ) -> None:
        super().__init__()
        if grid < 2:
            raise ValueError(f"grid must be >= 2, got {grid}")
        if noise_floor <= 0:
            raise ValueError(f"noise_floor must be > 0, got {noise_floor}")
        if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be three non-negative numbers, got {weights}")
        if tone_bins < 2 or tone_width <= 0:
            raise ValueError(f"need tone_bins >= 2 and tone_width > 0, got {tone_bins}, {tone_width}")
        self.grid = grid
        self.noise_floor = noise_floor
        self.tone_width = tone_width
        total = float(sum(weights))
        self.block_weights = tuple(w / total for w in weights)
        self.register_buffer("_luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_bins", torch.linspace(0.0, 1.0, tone_bins), persistent=False)

    def _tone(self, mean: torch.Tensor) -> torch.Tensor:
        """Unit-norm Gaussian-bump code of the mean colour [M, 3] -> [M, 3 * bins]."""
        bumps = torch.exp(-((mean[..., None] - self._bins) ** 2) / (2 * self.tone_width**2))  # [M, 3, bins]
        return (F.normalize(bumps, dim=-1) / 3**0.5).flatten(1)  # [M, 3 * bins]

    def _block(self, x: torch.Tensor, tone: torch.Tensor, weight: float) -> torch.Tensor:
        """Append the tone at noise-floor scale, L2-normalise, scale to a cosine share of `weight`."""
        floor = tone * (self.noise_floor * x.shape[1] ** 0.5)  # [M, 3 * bins]
        x = F.normalize(torch.cat([x, floor], dim=1), dim=1)  # [M, K + 3 * bins]
        return x * weight**0.5

    @torch.inference_mode()
    def embed(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        if len(crops) == 0:
            return torch.zeros(0, self.dim, device=self.device)
        fine = 2 * self.grid
        arr = _as_array(crops, fine, Image.Resampling.BOX)  # [M, 2g, 2g, 3]
        x = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # [M, 3, 2g, 2g]
        tone = self._tone(x.mean(dim=(2, 3)))  # [M, 3 * bins]
        colour = F.avg_pool2d(x, 2)  # [M, 3, g, g]
        colour = (colour - colour.mean(dim=(2, 3), keepdim=True)).flatten(1)  # [M, 3g²]
        luma = (x * self._luma).sum(dim=1, keepdim=True)  # [M, 1, 2g, 2g]
        gx = F.pad(luma[..., :, 1:] - luma[..., :, :-1], (0, 1, 0, 0))  # [M, 1, 2g, 2g]
        gy = F.pad(luma[..., 1:, :] - luma[..., :-1, :], (0, 0, 0, 1))  # [M, 1, 2g, 2g]
        edges = F.avg_pool2d(torch.sqrt(gx * gx + gy * gy), 2)  # [M, 1, g, g]
        edges = (edges - edges.mean(dim=(2, 3), keepdim=True)).flatten(1)  # [M, g²]
        wc, we, wt = self.block_weights
        blocks = [self._block(colour, tone, wc), self._block(edges, tone, we), tone * wt**0.5]
        return torch.cat(blocks, dim=1)  # [M, D]

    @property
    def dim(self) -> int:
        tone = 3 * len(self._bins)
        return 3 * self.grid**2 + tone + self.grid**2 + tone + tone


def resolve_weights(
    model_name: str, weights: str | Path | None = None, cache_dir: str | Path | None = None
) -> str | None:
    """The local weights file for a timm model: the explicit file, else the HF cache entry, else None."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights file for timm model {model_name!r} not found: {path}")
        return str(path)
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=True)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    repo, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _missing_weights_message(model_name: str) -> str:
    return (
        f"no local weights for timm model {model_name!r}: it is not in the Hugging Face cache and "
        "no weights file was given. Supply the file with TimmEncoder(..., weights='/path/to/"
        "model.safetensors') or PatchSimilarity(encoder_options={'weights': ...}), fill the cache while "
        f"online (`hf download timm/{model_name}`), pass allow_download=True, or use the "
        "weight-free 'pixel' encoder."
    )


BF16_DEVICES = ("cuda",)  # where a timm encoder holds bf16 weights and embeds under bf16 autocast


class TimmEncoder(CropEncoder):
    """A timm image model as a crop encoder: CLS token or mean-pooled patch tokens per crop."""

    def __init__(
        self,
        model_name: str = DEFAULT_TIMM_MODEL,
        pool: str = "cls",
        weights: str | Path | None = None,
        cache_dir: str | Path | None = None,
        allow_download: bool = False,
        batch_size: int = 32,
        **model_kwargs,
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import timm

        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}")
        self.name = f"timm:{model_name}"
        self.pool = pool
        self.batch_size = batch_size
        file = resolve_weights(model_name, weights, cache_dir)
        if file is None and not allow_download:
            raise MissingWeightsError(_missing_weights_message(model_name))
        overlay = {"file": file} if file is not None else None
        log.info("loading timm encoder %s from %s", model_name, file or "the hub")
        self.model = timm.create_model(
            model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **model_kwargs
        ).eval()
        self.model.requires_grad_(False)
        data_cfg = timm.data.resolve_model_data_config(self.model)
        height, width = data_cfg["input_size"][1:]
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is not None and not getattr(self.model, "dynamic_img_size", False):
            # A model built with img_size=... accepts only that size; the cfg still says the default.
            height, width = getattr(patch_embed, "img_size", (height, width))
        self.input_size = (int(width), int(height))
        self.resample = _RESAMPLE.get(data_cfg.get("interpolation", "bicubic"), Image.Resampling.BICUBIC)
        self.register_buffer("_mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)

    def place(self, device: torch.device) -> None:
        """Move to `device`. On a GPU the weights are held in bf16, the dtype the bf16 autocast
        of `embed` computes in anyway: DINOv2-L takes 0.6 GiB there instead of 1.1."""
        self.to(device)
        self.model.to(torch.bfloat16 if device.type in BF16_DEVICES else torch.float32)  # buffers outside stay fp32

    def train(self, mode: bool = True) -> TimmEncoder:
        super().train(mode)
        self.model.eval()  # an encoder never trains (no dropout / drop-path in the reward)
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)  # [m, T, D] (ViT) or [m, D, h, w] (conv)
        if tokens.ndim == 4:
            return tokens.mean(dim=(2, 3))  # [m, D]
        prefix = getattr(self.model, "num_prefix_tokens", 1)
        if self.pool == "cls" and prefix > 0:
            return tokens[:, 0]  # [m, D]
        return tokens[:, prefix:].mean(dim=1)  # [m, D]

    @torch.inference_mode()
    def embed(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        out = []
        device = self.device
        for start in range(0, len(crops), self.batch_size):
            arr = _as_array(crops[start : start + self.batch_size], self.input_size, self.resample)
            x = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float() / 255.0  # [m, 3, H, W]
            x = (x - self._mean) / self._std  # [m, 3, H, W]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type in BF16_DEVICES):
                out.append(self._features(x).float())  # [m, D]
        if not out:
            return torch.zeros(0, self.model.num_features, device=device)
        return torch.cat(out)  # [M, D]


def build_encoder(spec: str | CropEncoder = "pixel", **kwargs) -> CropEncoder:
    """An encoder from a name ("pixel", "timm", "timm:<model name>") or an encoder object."""
    if isinstance(spec, CropEncoder):
        if kwargs:
            raise ValueError("encoder options only apply when the encoder is given by name")
        return spec
    if isinstance(spec, nn.Module) and callable(getattr(spec, "embed", None)):
        return spec  # a duck-typed encoder module
    if not isinstance(spec, str):
        raise ValueError(f"encoder must be a name or an encoder object, got {type(spec).__name__}")
    kind, _, model = spec.strip().partition(":")
    if kind == "pixel" and not model:
        return PixelEncoder(**kwargs)
    if kind == "timm":
        return TimmEncoder(model or DEFAULT_TIMM_MODEL, **kwargs)
    raise ValueError(f"unknown encoder {spec!r}; use 'pixel', 'timm' or 'timm:<model name>'")


@lru_cache(maxsize=4)
def cached_encoder(spec: str) -> CropEncoder:
    """`build_encoder(spec)` built once per process, for callers that pass the encoder by name."""
    return build_encoder(spec)
