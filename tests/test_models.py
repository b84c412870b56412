"""Variants: exact Table 1 counts, forward/backward, freezing, offline weights, head checkpoints."""
import contextlib
import re
import urllib.error

import pytest
import torch
import torchvision

from petseg.models import (VARIANTS, HeadWeightsError, WeightsUnavailableError, build_model,
                           count_parameters, default_variants, hub_checkpoint_path, list_variants)
from petseg.models.denseaspp import DenseASPPHead

TABLE1_TRAINABLE = {
    "fcn_resnet50": 9_439_747,
    "deeplabv3_resnet50": 16_126_211,
    "denseaspp_voc": 2_220_675,
    "denseaspp_ade20k": 2_220_675,
    "cutdenseaspp_voc": 2_197_347,
    "cutdenseaspp_ade20k": 2_197_347,
}
# The paper gives totals to one decimal (33.0M, 39.6M, 9.2M, 28.7M; FCN 32.95M rounds up there);
# these are the exact values.
TOTAL = {"fcn_resnet50": 32_947_779, "deeplabv3_resnet50": 39_634_243, "denseaspp_voc": 9_174_531,
         "denseaspp_ade20k": 9_174_531, "cutdenseaspp_voc": 28_669_347, "cutdenseaspp_ade20k": 28_669_347}
# The torchvision or DenseNet architecture each variant's published file comes from, and DenseASPP's rates.
ARCH = {"fcn_resnet50": "fcn_resnet50", "deeplabv3_resnet50": "deeplabv3_resnet50", "denseaspp_voc": "densenet121",
        "denseaspp_ade20k": "densenet121", "cutdenseaspp_voc": "densenet161", "cutdenseaspp_ade20k": "densenet161"}
RATES = {"denseaspp_voc": (3, 6, 12, 18, 24), "cutdenseaspp_voc": (3, 6, 12), "cutdenseaspp_ade20k": (3, 6, 12)}
PAPER_TOTAL_MILLIONS = {"fcn_resnet50": 33.0, "deeplabv3_resnet50": 39.6, "denseaspp_voc": 9.2,
                        "denseaspp_ade20k": 9.2, "cutdenseaspp_voc": 28.7, "cutdenseaspp_ade20k": 28.7}

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised:UserWarning")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torchvision cache and no network: any download attempt fails like it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_registry_order_and_filter():
    assert default_variants() == list(TABLE1_TRAINABLE)
    assert list(VARIANTS)[:6] == list(TABLE1_TRAINABLE)
    assert list_variants("cut") == ["cutdenseaspp_voc", "cutdenseaspp_ade20k"]
    with pytest.raises(KeyError, match="valid variants: fcn_resnet50"):
        build_model("unet")


@pytest.mark.parametrize("key", list(TABLE1_TRAINABLE))
def test_counts_forward_backward_and_freezing(key):
    torch.manual_seed(0)
    model = build_model(key, pretrained=False)
    trainable, total = count_parameters(model)
    assert trainable == TABLE1_TRAINABLE[key]
    assert total == TOTAL[key]
    assert total / 1e6 == pytest.approx(PAPER_TOTAL_MILLIONS[key], abs=0.06)

    model.train()
    assert model.head.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    images, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    logits = model(images)
    assert logits.shape == (2, 3, 64, 64) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, target).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    optimizer.step()

    for name, value in model.backbone.state_dict().items():  # includes BatchNorm running stats
        assert torch.equal(value, backbone_before[name]), name
    changed = {n for n, v in model.head.state_dict().items() if not torch.equal(v, head_before[n])}
    classifier = [n for n, _ in model.head.named_parameters()][-2]  # the last conv's weight
    assert classifier in changed
    assert any("running_mean" in n for n in changed)  # the head's own BatchNorm does train


def test_dilated_densenet_has_output_stride_8():
    model = build_model("denseaspp_voc", pretrained=False).eval()
    assert model.features(torch.randn(1, 3, 96, 64)).shape == (1, 1024, 12, 8)


@pytest.mark.parametrize("key", ["denseaspp_voc", "cutdenseaspp_voc"])
def test_denseaspp_head_sees_norm5_directly_and_upsamples_with_aligned_corners(key):
    """What the public DenseASPP code computes: head(features ending at norm5), bilinear, align_corners=True."""
    torch.manual_seed(0)
    model = build_model(key, pretrained=False).eval()
    features = model.backbone.features
    assert list(features.named_children())[-1][0] == "norm5"
    assert isinstance(features.norm5, torch.nn.BatchNorm2d)
    images = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        norm5 = features(images)
        assert torch.equal(model.features(images), norm5), "nothing may act between norm5 and the head"
        assert (norm5 < 0).any(), "a ReLU would have removed these"
        logits = model.head(norm5)
        expected = torch.nn.functional.interpolate(logits, (40, 56), mode="bilinear", align_corners=True)
        torch.testing.assert_close(model(images), expected, rtol=0, atol=0)
        other = torch.nn.functional.interpolate(logits, (40, 56), mode="bilinear", align_corners=False)
        assert not torch.allclose(model(images), other)


@pytest.mark.parametrize("key", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_variants_equal_torchvision_models(key):
    """Given the same weights, FCN / DeepLabV3 compute exactly torchvision's model (align_corners=False)."""
    torch.manual_seed(0)
    model = build_model(key, pretrained=False).eval()
    builder = getattr(torchvision.models.segmentation, ARCH[key])
    reference = builder(weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()
    reference.backbone.load_state_dict(model.backbone.body.state_dict())
    reference.classifier.load_state_dict(model.head.state_dict())
    images = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images)["out"], rtol=0, atol=0)


def _published_state_dict(arch):
    """A random state dict in the published file's layout (DenseNet files: 'norm.1' keys, no BN counters)."""
    if arch.startswith("densenet"):
        state = getattr(torchvision.models, arch)(weights=None).state_dict()
        legacy = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")
        state = {legacy.sub(r"\1.\2.", k): v for k, v in state.items() if "num_batches_tracked" not in k}
    else:
        builder = getattr(torchvision.models.segmentation, arch)
        state = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).state_dict()
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.parametrize("key", ["fcn_resnet50", "deeplabv3_resnet50", "denseaspp_voc", "cutdenseaspp_ade20k"])
def test_pretrained_weights_load_offline_from_torch_cache(key, offline_hub):
    arch = ARCH[key]
    path = hub_checkpoint_path(VARIANTS[key].encoder.weights)
    assert path.parent == offline_hub
    path.parent.mkdir(parents=True)
    published = _published_state_dict(arch)
    torch.save(published, path)

    head_warning = pytest.warns(UserWarning, match="no head_weights")
    with head_warning if VARIANTS[key].head_dataset else contextlib.nullcontext():
        model = build_model(key)
    if arch.startswith("densenet"):
        published = {re.sub(r"\.(norm|relu|conv)\.([12])\.", r".\1\2.", k): v for k, v in published.items()}
        expected = {k.removeprefix("features."): v for k, v in published.items() if k.startswith("features.")}
        loaded = {k: v for k, v in model.backbone.features.state_dict().items() if "num_batches_tracked" not in k}
        assert loaded.keys() == expected.keys()
        for name, value in loaded.items():
            assert torch.equal(value, expected[name]), name
    else:
        for name, value in model.backbone.body.state_dict().items():
            assert torch.equal(value, published[f"backbone.{name}"]), name
        head = model.head.state_dict()
        last = max(int(k.split(".")[0]) for k in head)
        for name, value in head.items():
            if not name.startswith(f"{last}."):
                assert torch.equal(value, published[f"classifier.{name}"]), name
        assert head[f"{last}.weight"].shape[0] == 3
        assert not any("aux" in name for name in model.state_dict())


def test_missing_weights_offline_names_file_and_place(offline_hub):
    with pytest.raises(WeightsUnavailableError) as err:
        build_model("denseaspp_voc")
    message = str(err.value)
    assert "densenet121-a639ec97.pth" in message and str(offline_hub) in message


def _public_head_checkpoint(key, classes, prefix="features.", backbone=None):
    """A checkpoint in the public DenseASPP layout: a backbone under `prefix`, a random head under head.*.

    The backbone is variant `key`'s own random-init one (as build_model(key, pretrained=False) builds it
    under seed 0) unless `backbone` (a state dict) is given.
    """
    torch.manual_seed(0)
    own = build_model(key, pretrained=False).backbone.features.state_dict()
    head = DenseASPPHead(own["norm5.weight"].numel(), classes, RATES[key])
    for p in head.parameters():
        torch.nn.init.normal_(p)
    state = {f"head.{k}": v for k, v in head.state_dict().items()}
    state.update({f"{prefix}{k}": v for k, v in (backbone if backbone is not None else own).items()})
    return state


def _seeded(key, **kwargs):
    torch.manual_seed(0)
    return build_model(key, pretrained=False, **kwargs)


@pytest.mark.parametrize("key,prefix", [("denseaspp_voc", "features."),
                                        ("cutdenseaspp_ade20k", "pretrained.features.")])
def test_head_checkpoint_loads_all_but_classifier(key, prefix, tmp_path, capsys):
    state = _public_head_checkpoint(key, classes=21, prefix=prefix)
    path = tmp_path / "head.pth"
    torch.save({"state_dict": state}, path)

    model = _seeded(key, head_weights=path)
    report = capsys.readouterr().out
    head = model.head.state_dict()
    for name, value in head.items():
        if name.startswith("block.1."):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, state[f"head.{name}"]), name
    assert f"loaded {len(head) - 2} tensors, skipped 2" in report
    assert "skipped head.block.1.weight: shape (21," in report
    assert "the file's backbone: the same as this model's (random init)" in report


def test_classifier_weight_and_bias_load_together_or_not_at_all(tmp_path, capsys):
    # A DenseASPP head file for 3 classes read by CutDenseASPP: the classifier's bias (3,) fits but its
    # weight (3 x 1344 inputs, not 2400) does not; loading the bias alone would pair it with a random weight.
    state = _public_head_checkpoint("denseaspp_voc", classes=3)
    state = {k: v for k, v in state.items() if k.startswith("head.")}
    state["head.dense_aspp_block.aspp_3.conv1.weight"] = torch.randn(256, 2208, 1, 1)  # fits CutDenseASPP
    path = tmp_path / "head.pth"
    torch.save(state, path)
    before = _seeded("cutdenseaspp_voc").head.state_dict()
    model = _seeded("cutdenseaspp_voc", head_weights=path)
    report = capsys.readouterr().out
    after = model.head.state_dict()
    assert torch.equal(after["block.1.bias"], before["block.1.bias"]), "the bias must not load without its weight"
    assert torch.equal(after["block.1.weight"], before["block.1.weight"])
    assert "skipped head.block.1.bias: its classifier partner does not fit" in report
    assert torch.equal(after["dense_aspp_block.aspp_3.conv1.weight"], state["head.dense_aspp_block.aspp_3.conv1.weight"])
    assert "not in the file, so unchecked" in report


def test_head_file_with_nothing_that_fits_is_refused(tmp_path):
    path = tmp_path / "fcn_head.pth"
    torch.save({"classifier.4.weight": torch.randn(21, 512, 1, 1), "head.other.weight": torch.randn(3)}, path)
    with pytest.raises(HeadWeightsError, match=re.escape(str(path)) + ".*none of its 1 head tensors"):
        build_model("denseaspp_voc", pretrained=False, head_weights=path)


def test_head_trained_on_another_backbone_is_refused(tmp_path):
    torch.manual_seed(1)  # another random-init backbone, as a head pretrained with another seed has
    other = build_model("denseaspp_voc", pretrained=False).backbone.features.state_dict()
    path = tmp_path / "head.pth"
    torch.save(_public_head_checkpoint("denseaspp_voc", classes=21, backbone=other), path)
    with pytest.raises(HeadWeightsError) as err:
        _seeded("denseaspp_voc", head_weights=path)
    message = str(err.value)
    assert str(path) in message and "its weights differ" in message and "random init" in message
    # A DenseNet121 head file offered to the DenseNet161 variant: another architecture altogether.
    torch.save(_public_head_checkpoint("denseaspp_voc", classes=21), path)
    with pytest.raises(HeadWeightsError, match="tensor names differ"):
        _seeded("cutdenseaspp_voc", head_weights=path)


def test_head_checkpoint_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _NotATensor()}, path)
    with pytest.raises(WeightsUnavailableError, match=re.escape(str(path))):
        build_model("denseaspp_voc", pretrained=False, head_weights=path)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("denseaspp_voc", pretrained=False, head_weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="head_weights apply to the variants whose head is pretrained by petseg"):
        build_model("fcn_resnet50", pretrained=False, head_weights=path)


class _NotATensor:
    pass


def test_random_init_is_loud():
    with pytest.warns(UserWarning, match="randomly initialised"):
        build_model("denseaspp_voc", pretrained=False)
