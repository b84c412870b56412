"""Dilated DenseNet backbones and the DenseASPP / CutDenseASPP heads."""
from __future__ import annotations

import torch
import torchvision
from torch import nn


class DilatedDenseNet(nn.Module):
    """torchvision DenseNet features at output stride 8: later blocks dilate instead of pooling."""

    def __init__(self, depth: int):
        super().__init__()
        self.features = getattr(torchvision.models, f"densenet{depth}")(weights=None).features
        self.out_channels = self.features.norm5.num_features
        # transition1 keeps its pooling (stride 8); the two later ones lose it, and the blocks
        # after them dilate by the stride they lost so their receptive fields are unchanged.
        self.features.transition2.pool = nn.Identity()
        self.features.transition3.pool = nn.Identity()
        for block, dilation in ((self.features.denseblock3, 2), (self.features.denseblock4, 4)):
            for layer in block.children():
                layer.conv2.dilation = (dilation, dilation)
                layer.conv2.padding = (dilation, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps [N, C, H/8, W/8] straight from the final BatchNorm (norm5).

        No ReLU follows norm5: the public DenseASPP code feeds its head DenseNet's `features`,
        which ends at norm5 (torchvision applies the ReLU only in its classifier's forward).
        """
        return self.features(x)


class DenseASPPConv(nn.Sequential):
    """One atrous unit: 1x1 conv to 256, BN, ReLU, dilated 3x3 conv to 64, BN, ReLU, dropout."""

    def __init__(self, in_channels: int, rate: int, inter_channels: int = 256, out_channels: int = 64,
                 drop_rate: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inter_channels, 1)
        self.bn1 = nn.BatchNorm2d(inter_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inter_channels, out_channels, 3, padding=rate, dilation=rate)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate)


class DenseASPPBlock(nn.Module):
    """Atrous units whose outputs are densely concatenated onto their input, one rate each."""

    def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int = 64):
        super().__init__()
        self.rates = tuple(rates)
        for index, rate in enumerate(self.rates):
            self.add_module(f"aspp_{rate}", DenseASPPConv(in_channels + index * out_channels, rate))
        self.out_channels = in_channels + len(self.rates) * out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input with every unit's output appended along channels."""
        for rate in self.rates:
            x = torch.cat([getattr(self, f"aspp_{rate}")(x), x], dim=1)
        return x


class DenseASPPHead(nn.Module):
    """DenseASPP block, dropout 0.1 and a 1x1 classifier (named as the public DenseASPP code)."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...]):
        super().__init__()
        self.dense_aspp_block = DenseASPPBlock(in_channels, rates)
        self.block = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(self.dense_aspp_block.out_channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Low-resolution class logits."""
        return self.block(self.dense_aspp_block(x))
