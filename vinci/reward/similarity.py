"""Coarse-to-fine patch similarity (VinciCoder's visual reward), as pure functions.

For each (render, reference) pair: the render is resized to the reference's size (bicubic), both
are cut into the same InternVL crops (tiles + thumbnail, `vinci.reward.tiling`), every crop is
embedded, and the score is the weighted mean over crops of (cos + 1) / 2, so it lies in [0, 1].
The paper weights all crops uniformly (`global_weight=None`). `global_weight=w` gives the
thumbnail weight w and the tiles 1 - w between them: w=1 is the coarse-only ablation (thumbnail
only), w=0 the fine-only one (tiles only). Crops with weight 0 are not encoded.

Speed: each distinct prepared image is cut and encoded once per call. Images are identified by
object identity, then by a hash of their pixels, so the reference shared by a GRPO group (G
renders of one prompt), identical renders, and a render identical to its reference are encoded
once. Distinct images are cut on a few threads, and all crops of the call go through the
encoder in batched passes under inference mode.

`visual_reward` is the GRPO-facing form: a failed render (None) scores 0 and is not encoded.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from vinci.reward.encoders import CropEncoder, build_encoder, cached_encoder
from vinci.reward.tiling import crops as tile_crops
from vinci.reward.tiling import tile_grid, to_rgb

CUT_THREADS = 4  # most threads that cut images for one call (never more than the CPUs)


def check_options(tile_size: int, max_tiles: int, global_weight: float | None, batch_size: int) -> None:
    """ValueError unless the similarity options are usable."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    if global_weight is not None and not 0.0 <= global_weight <= 1.0:
        raise ValueError(f"global_weight must be None or in [0, 1], got {global_weight}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def resolve_encoder(encoder: str | CropEncoder) -> CropEncoder:
    """Encoder objects pass through; names are built once per process."""
    return cached_encoder(encoder) if isinstance(encoder, str) else build_encoder(encoder)


def content_key(image: Image.Image) -> bytes:
    """A digest of the image's mode, size and pixels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode}|{image.size}".encode())
    digest.update(image.tobytes())
    return digest.digest()


def crop_weights(cols: int, rows: int, global_weight: float | None) -> list[float]:
    """Per-crop weights in `tiling.crops` order (tiles, then thumbnail when the grid is not 1x1)."""
    n = cols * rows
    if n == 1:
        return [1.0]  # the single tile is the whole image: coarse and fine at once
    if global_weight is None:
        return [1.0 / (n + 1)] * (n + 1)
    return [(1.0 - global_weight) / n] * n + [global_weight]


@dataclass
class _Plan:
    """Distinct prepared images of one call and the crops they contribute."""

    tile_size: int
    max_tiles: int
    global_weight: float | None
    pending: list[tuple[Image.Image, tuple[int, int]]] = field(default_factory=list)  # images to cut, in crop order
    n_crops: int = 0
    first_crop: dict[tuple[bytes, tuple[int, int]], int] = field(default_factory=dict)
    keys: dict[int, bytes] = field(default_factory=dict)  # id(image) -> content key

    def key(self, image: Image.Image) -> bytes:
        ident = id(image)
        if ident not in self.keys:
            self.keys[ident] = content_key(image)
        return self.keys[ident]

    def add(self, image: Image.Image, size: tuple[int, int]) -> int:
        """Index of the first crop of `image` prepared at `size`; on first sight its crops are
        reserved (as many as `layout` has weights) and it is queued for `cut_all`."""
        slot = (self.key(image), size)
        if slot not in self.first_crop:
            self.first_crop[slot] = self.n_crops
            self.pending.append((image, size))
            self.n_crops += len(self.layout(size))
        return self.first_crop[slot]

    def cut_all(self) -> list[Image.Image]:
        """Every reserved crop, in index order. Pillow releases the GIL while it resizes (most
        of the cost: a small image is upscaled to its whole tile grid), so images are cut on
        a few threads; the crops are the same as cut one by one."""
        threads = min(CUT_THREADS, os.cpu_count() or 1, len(self.pending))
        if threads <= 1:
            parts = [self._cut(image, size) for image, size in self.pending]
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="reward-cut") as pool:
                parts = list(pool.map(lambda job: self._cut(*job), self.pending))
        crops = [crop for part in parts for crop in part]
        if len(crops) != self.n_crops:  # layout and _cut disagree: a bug, never a bad input
            raise RuntimeError(f"cut {len(crops)} crops but reserved {self.n_crops}")
        return crops

    def _cut(self, image: Image.Image, size: tuple[int, int]) -> list[Image.Image]:
        image = to_rgb(image)
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        s = self.tile_size
        cols, rows = tile_grid(*size, tile_size=s, max_tiles=self.max_tiles)
        if self.global_weight == 1.0 or cols * rows == 1:
            return [image.resize((s, s), Image.Resampling.BICUBIC)]  # thumbnail (= the 1x1 tile)
        return tile_crops(image, s, self.max_tiles, thumbnail=self.global_weight != 0.0)

    def layout(self, size: tuple[int, int]) -> list[float]:
        """Weights of the crops that `_cut` produces for this size."""
        cols, rows = tile_grid(*size, tile_size=self.tile_size, max_tiles=self.max_tiles)
        weights = crop_weights(cols, rows, self.global_weight)
        if cols * rows > 1 and self.global_weight == 1.0:
            return [1.0]
        if cols * rows > 1 and self.global_weight == 0.0:
            return weights[:-1]
        return weights


def embed_all(encoder: CropEncoder, crops: list[Image.Image], batch_size: int) -> torch.Tensor:
    """Embeddings of all crops in passes of at most batch_size crops."""
    chunks = [encoder.embed(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    return torch.cat(chunks).float()  # [M, D]


def patch_similarity(
    preds: Sequence[Image.Image],
    targets: Sequence[Image.Image],
    encoder: str | CropEncoder = "pixel",
    *,
    tile_size: int = 448,
    max_tiles: int = 12,
    global_weight: float | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Per-pair coarse-to-fine similarity in [0, 1] of renders `preds` to references `targets`."""
    check_options(tile_size, max_tiles, global_weight, batch_size)
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} preds but {len(targets)} targets")
    for name, images in (("preds", preds), ("targets", targets)):
        for i, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise ValueError(f"{name}[{i}] is {type(image).__name__}, not a PIL image")
    if not preds:
        return torch.zeros(0)
    enc = resolve_encoder(encoder)
    plan = _Plan(tile_size, max_tiles, global_weight)
    pred_idx, target_idx, weights, owner = [], [], [], []
    for i, (pred, target) in enumerate(zip(preds, targets)):
        size = target.size
        t0, p0 = plan.add(target, size), plan.add(pred, size)
        for k, w in enumerate(plan.layout(size)):
            if w > 0:
                pred_idx.append(p0 + k)
                target_idx.append(t0 + k)
                weights.append(w)
                owner.append(i)
    emb = embed_all(enc, plan.cut_all(), batch_size)  # [M, D]
    device = emb.device
    p = torch.tensor(pred_idx, device=device)  # [K]
    t = torch.tensor(target_idx, device=device)  # [K]
    cos = F.cosine_similarity(emb[p], emb[t], dim=-1)  # [K]
    per_crop = (cos + 1.0) / 2.0 * torch.tensor(weights, device=device)  # [K]
    scores = torch.zeros(len(preds), device=device).index_add_(
        0, torch.tensor(owner, device=device), per_crop
    )  # [N]
    return scores.clamp_(0.0, 1.0).cpu()


def visual_reward(
    renders: Sequence[Image.Image | None],
    references: Sequence[Image.Image],
    encoder: str | CropEncoder = "pixel",
    **options,
) -> torch.Tensor:
    """`patch_similarity` where a failed render (None) scores 0 and is not encoded. -> [N]"""
    if len(renders) != len(references):
        raise ValueError(f"got {len(renders)} renders but {len(references)} references")
    ok = [i for i, image in enumerate(renders) if image is not None]
    scores = torch.zeros(len(renders))  # [N]
    if ok:
        scores[ok] = patch_similarity(
            [renders[i] for i in ok], [references[i] for i in ok], encoder, **options
        )
    return scores
