"""The ViRL reward: coarse-to-fine visual similarity of a render to its reference, plus format.

- `tiling`: InternVL's dynamic tiles + thumbnail.
- `encoders`: crop encoders ("pixel", weight-free; "timm:<model>", DINOv2-L by default).
- `similarity`: `patch_similarity` / `visual_reward`, the functional per-sample scores.
- `metric`: `PatchSimilarity`, the torchmetrics Metric around them.
- `format`: `extract_code`, `format_reward`, `composite_reward` -> `RewardParts`.

Importing this package loads no model.
"""

from vinci.reward.encoders import CropEncoder, MissingWeightsError, PixelEncoder, TimmEncoder, build_encoder
from vinci.reward.format import RewardParts, composite_reward, extract_code, format_reward
from vinci.reward.metric import PatchSimilarity
from vinci.reward.similarity import patch_similarity, visual_reward
from vinci.reward.tiling import crops, tile_grid

__all__ = [
    "CropEncoder",
    "MissingWeightsError",
    "PatchSimilarity",
    "PixelEncoder",
    "RewardParts",
    "TimmEncoder",
    "build_encoder",
    "composite_reward",
    "crops",
    "extract_code",
    "format_reward",
    "patch_similarity",
    "tile_grid",
    "visual_reward",
]
