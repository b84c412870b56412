"""A segmentation model made of a frozen backbone and a trainable head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A backbone's output: one feature map, or named maps of a backbone with several outputs (LR-ASPP's "low", "high").
Features = torch.Tensor | dict[str, torch.Tensor]


def map_features(function, features: Features) -> Features:
    """`function` applied to a backbone's output: the tensor, or each named tensor of a multi-output backbone."""
    return {name: function(tensor) for name, tensor in features.items()} if isinstance(features, dict) \
        else function(features)


class FrozenBackboneSegmenter(nn.Module):
    """backbone -> head -> logits upsampled to the input size; the backbone never trains."""

    def __init__(self, backbone: nn.Module, head: nn.Module, align_corners: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        # The reference implementations differ: torchvision's FCN / DeepLabV3 upsample with
        # align_corners=False, the public DenseASPP code with align_corners=True.
        self.align_corners = align_corners
        # The LoadReport of a head file loaded into the head (what was loaded, whether its backbone was
        # checked against this one), or None when the head started from its builder's weights.
        self.head_load = None
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "FrozenBackboneSegmenter":
        """Set the head's mode; the backbone stays in eval so its BatchNorm statistics never move."""
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> Features:
        """The frozen backbone's output for `images`: a tensor, or a dict of named ones (no autograd graph is kept)."""
        with torch.no_grad():
            return self.backbone(images)

    def decode(self, features: Features, size: tuple[int, int]) -> torch.Tensor:
        """Head logits for backbone `features`, bilinearly upsampled to `size` (H, W) as the reference does."""
        logits = self.head(features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits [N, classes, H, W] at the input's size, or at `size` (one upsampling of the head's logits,
        as the variant's reference upsamples them, rather than resizing input-size logits again)."""
        return self.decode(self.features(images), size or images.shape[-2:])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update (the head's)."""
        return [p for p in self.parameters() if p.requires_grad]
