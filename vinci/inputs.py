"""The one place that knows how model inputs are laid out, written as rules per input key.

Processors of different families lay the same things out differently:

    Qwen2-VL, Qwen2.5-VL, Qwen3-VL   pixel_values [sum_i t_i*h_i*w_i, D] packs every image's
                                     patches; image_grid_thw [B, 3] says how many are row i's;
                                     mm_token_type_ids [B, T] marks image tokens, and M-RoPE
                                     positions (rope deltas, deepstack's visual mask) come from it
    Idefics3 / SmolVLM               pixel_values [B, N, 3, H, W] holds each row's N tiles, padded
                                     with all-zero tiles that the model skips; pixel_attention_mask
                                     [B, N, H, W] marks real pixels
    anything else                    batch-major tensors [B, ...]

So a key is one of: a token-aligned tensor [B, T] (input_ids, attention_mask and the extras in
`PER_TOKEN`); a packed tensor (a `PACKED` key, when its size key is present); or batch-major.
The operations follow from that alone: take some rows (`rows_of`), join single-row encodings
into a batch (`collate_rows`), drop padding columns no row uses (`trim_left_padding`),
extend prompts by their completions (`with_completion`), and split the image inputs of a vision
encoder call into one entry per image (`image_parts`; `collate_rows` joins them again).
Padding tiles are data too: a batch-major key in `TILED` holds tiles [B, N, ...] whose all-zero
ones are padding the model skips, and its mask key follows it.
What a completion must never contain, the image and video special tokens, is data too:
config attributes and token-name patterns (`multimodal_token_ids`).
"""

from __future__ import annotations

import re
import torch

TOKENS = {"input_ids": None, "attention_mask": 0}  # [B, T]; None: the tokenizer's pad id
PER_TOKEN = {"mm_token_type_ids": 0, "token_type_ids": 0}  # [B, T] extras -> the value of a text token
PACKED = {"pixel_values": "image_grid_thw", "pixel_values_videos": "video_grid_thw"}  # packed key -> [B, k] size key
TILED = {"pixel_values": "pixel_attention_mask"}  # batch-major tiles [B, N, 3, H, W] -> their mask [B, N, H, W]

# Config attributes naming image/video placeholder and delimiter tokens (Qwen-VL, Idefics3, Gemma 3, LLaVA).
VISION_TOKEN_ATTRS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                      "vision_token_id", "image_token_index", "boi_token_index", "eoi_token_index")
# Tokens that processors write around images without the config naming them (Idefics3's tile markers, ...).
VISION_TOKEN_PATTERNS = tuple(re.compile(p) for p in (
    r"<\|(image|video)_pad\|>", r"<\|vision_(start|end|pad)\|>",  # Qwen-VL
    r"<image>", r"<video>", r"<fake_token_around_image>", r"<global-img>", r"<row_\d+_col_\d+>",  # Idefics3, SmolVLM
    r"<(start|end)_of_image>", r"<image_soft_token>",  # Gemma 3
))


def packed_sizes(inputs: dict, key: str) -> list[int] | None:
    """Rows of `inputs[key]` that belong to each batch row, when `key` is packed; else None."""
    sizes = inputs.get(PACKED.get(key, ""))
    return None if sizes is None else sizes.prod(dim=1).tolist()


def rows_of(inputs: dict[str, torch.Tensor], rows: list[int], batch: int | None = None) -> dict[str, torch.Tensor]:
    """The inputs of the given batch rows; images follow their rows. `batch`: the number of rows,
    when there is no input_ids to tell (image inputs alone)."""
    out = {}
    batch = inputs["input_ids"].shape[0] if batch is None else batch
    index = torch.tensor(rows)
    for key, value in inputs.items():
        sizes = packed_sizes(inputs, key)
        if sizes is not None:
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            out[key] = torch.cat([value[starts[r] : starts[r] + sizes[r]] for r in rows])  # [sum over rows, D]
        elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
            out[key] = value.index_select(0, index.to(value.device))  # [n, ...]
        else:
            out[key] = value
    return out


def image_parts(images: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The image inputs of one vision encoder call, one dict per image, without padding.

    Packed patches split by their sizes (Qwen-VL: pixel_values [t*h*w, D] with image_grid_thw
    [1, 3]); batch-major keys by row, a `TILED` key keeping only its real tiles (Idefics3:
    pixel_values [1, n, 3, H, W] with pixel_attention_mask [1, n, H, W]), so one image padded to
    different tile counts in two batches is the same dict. `collate_rows(parts, 0)` joins them.
    """
    count = next((images[PACKED[k]].shape[0] for k in images if packed_sizes(images, k) is not None), None)
    count = next(iter(images.values())).shape[0] if count is None else count  # batch-major: rows
    parts = [rows_of(images, [i], batch=count) for i in range(count)]
    for part in parts:
        for key, mask_key in TILED.items():
            tiles = part.get(key)  # [1, N, ...]
            if tiles is None or packed_sizes(part, key) is not None or tiles.dim() < 3:
                continue
            real = tiles[0].flatten(1).ne(0).any(dim=1)  # [N]: all-zero tiles are padding
            part[key] = tiles[:, real]  # [1, n, ...]
            if mask_key in part:
                part[mask_key] = part[mask_key][:, real]  # [1, n, H, W]
    return parts


def _pad_to(value: torch.Tensor, shape: list[int], fill) -> torch.Tensor:
    """`value` [1, ...] grown to [1, *shape] with `fill` after its own entries in every dim."""
    if list(value.shape[1:]) == shape:
        return value
    out = value.new_full([value.shape[0], *shape], fill)
    out[(slice(None), *(slice(0, n) for n in value.shape[1:]))] = value
    return out


def collate_rows(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Single-row processor outputs (batch dim 1) -> one right-padded batch.

    Token-aligned keys are padded to the longest row (pad id, attention 0, text-token value);
    packed keys are concatenated; batch-major keys are zero-padded to the largest shape in every
    dim, which for Idefics3 adds all-zero tiles and zero pixel masks: padding the model skips.
    """
    batch = {}
    for key in encoded[0]:
        values = [e[key] for e in encoded]  # each [1, ...]
        if key in TOKENS or key in PER_TOKEN:
            fill = pad_id if key == "input_ids" else TOKENS.get(key, PER_TOKEN.get(key))
            shape = [max(v.shape[1] for v in values)]
            batch[key] = torch.cat([_pad_to(v, shape, fill) for v in values])  # [B, T]
        elif packed_sizes(encoded[0], key) is not None:
            batch[key] = torch.cat(values)  # [sum over rows, D]
        else:
            shape = [max(sizes) for sizes in zip(*(v.shape[1:] for v in values))]
            batch[key] = torch.cat([_pad_to(v, shape, 0) for v in values])  # [B, ...]
    return batch


def with_completion(inputs: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Prompt inputs [n, P] followed by completions ids [n, L] with their mask [n, L] -> [n, P + L]."""
    out = dict(inputs)
    prompt_mask = inputs["attention_mask"]  # [n, P]
    out["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)  # [n, P + L]
    out["attention_mask"] = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)  # [n, P + L]
    for key, text_value in PER_TOKEN.items():
        if key in inputs:  # completion tokens are text
            value = inputs[key]  # [n, P]
            out[key] = torch.cat([value, value.new_full((value.shape[0], ids.shape[1]), text_value)], dim=1)
    return out


def trim_left_padding(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the leading columns that are padding in every row (left-padded prompts taken out of
    a larger batch keep the padding only its longest prompt needed). Attention ignores those
    columns, so what the model computes does not change; the KV cache and activations shrink."""
    attention = inputs["attention_mask"]  # [n, T]
    real = attention.bool().any(dim=0).nonzero()  # [k, 1] columns where some row has a token
    first = int(real[0, 0]) if real.numel() else 0
    if first == 0:
        return inputs
    out = dict(inputs)
    for key in (*TOKENS, *PER_TOKEN):
        if key in out:
            out[key] = out[key][:, first:]  # [n, T - first]
    return out


def multimodal_token_ids(model, tokenizer=None) -> list[int]:
    """Ids of the image/video placeholder and marker tokens, which a completion must never contain.

    Re-running prompt + completion through the model would count an extra image placeholder and
    fail ("image features and image tokens do not match"), or read a tile marker as structure;
    a barely trained policy does sample them, so generation suppresses them. The config names
    some (Qwen-VL: image_token_id, ...); the tokenizer's added tokens matching
    `VISION_TOKEN_PATTERNS` give the ones it does not (Idefics3's <row_1_col_1>, <global-img>, ...).
    """
    config = getattr(model, "config", None)
    ids = {getattr(config, name, None) for name in VISION_TOKEN_ATTRS}
    if tokenizer is not None:
        for token, token_id in tokenizer.get_added_vocab().items():
            if any(pattern.fullmatch(token) for pattern in VISION_TOKEN_PATTERNS):
                ids.add(token_id)
    return sorted(i for i in ids if isinstance(i, int))
