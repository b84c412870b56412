"""A user's own variant, registered from outside petseg as `tests.user_variant:tiny` (README shows the same)."""
from torch import nn

from petseg.models import BackboneSpec, VariantSpec


def backbone() -> nn.Module:
    """Three strided convs: 16 channels at output stride 8."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=2, padding=1))


def head(channels: dict[str, int], num_classes: int, state: dict | None) -> nn.Module:
    """A 3x3 conv and a 1x1 classifier on the backbone's only output ("out"); no pretrained head (state is None)."""
    return nn.Sequential(nn.Conv2d(channels["out"], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, num_classes, 1))


def tiny() -> VariantSpec:
    """The registry entry: random-init backbone (no weights file), head trained with Adam (the "denseaspp" recipe)."""
    return VariantSpec(key="tiny", paper_name="Tiny", backbone_name="TinyConv", backbone_weights="random init",
                       backbone_id="tinyconv_random", head_pretraining="none",
                       encoder=BackboneSpec(backbone, channels={"out": 16}, strides={"out": 8}),
                       head=head, recipe="denseaspp")
