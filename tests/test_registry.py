"""The registry rebuilt the paper's six exactly as before it had backbone and head factories: the numbers below are
what petseg built before (commit 4f99a25), so a difference means a variant, or its feature caches, changed."""
import hashlib
import json
import warnings

import pytest
import torch

from petseg.models import VARIANTS, build_model, build_seeded_model, count_parameters, default_variants
from petseg.train.description import module_description
from petseg.train.features import backbone_fingerprint

# key -> (trainable, total, state-dict tensors, sha256 of their names / shapes / dtypes) at 3 classes
BUILT = {
    "fcn_resnet50": (9_439_747, 32_947_779, 326, "263dc388a33ae501fbe7c939fcadb6218bc49be07ce0986786635590cf075fd0"),
    "deeplabv3_resnet50": (16_126_211, 39_634_243, 362,
                           "302ed55d394ee3bc496865234f76b2bcc2a5fd5e183cac984d9a99b0be0542c3"),
    "denseaspp_voc": (2_220_675, 9_174_531, 797, "97e1ecb9c5891dfdf4b06c427fc318b94e2069871e4b78e35bdd5378fcea553b"),
    "denseaspp_ade20k": (2_220_675, 9_174_531, 797, "97e1ecb9c5891dfdf4b06c427fc318b94e2069871e4b78e35bdd5378fcea553b"),
    "cutdenseaspp_voc": (2_197_347, 28_669_347, 1009, "02e0323daeb2efb7253e6b1cf220bb645d12ffe87b3a5adb956c87b8e1df8a16"),
    "cutdenseaspp_ade20k": (2_197_347, 28_669_347, 1009,
                            "02e0323daeb2efb7253e6b1cf220bb645d12ffe87b3a5adb956c87b8e1df8a16"),
}
# key -> sha256 of build_seeded_model(key, pretrained=False, seed=0)'s tensors (values too), of its backbone's
# description and of its backbone_fingerprint: the last two are what its feature-cache keys are made of.
SEEDED = {
    "fcn_resnet50": ("92a0bb7ea49be49fa6d69f4c57e9c259be76f50ee3adb25820358155c7e5896f",
                     "e4761f62f4f177e498df4091cb05758c54e4d6e84c272b2bec1e344ad3808749",
                     "0d856da23beb4873bbe1405058e27a596e01ff304df93dcfc88f9d4a7bc35e28"),
    "deeplabv3_resnet50": ("4432458c0aa5004f229a8a7478caf7fa776a0c3a3882c84e23cccc68cbe547c3",
                           "e4761f62f4f177e498df4091cb05758c54e4d6e84c272b2bec1e344ad3808749",
                           "81e1f3bf99a09eb17469c0525752055deb0b715bfdf1a3dcc93c907b7a984282"),
    "denseaspp_voc": ("50aeccb7de8d46001121048aa48dba0900377d7706cee4ec1a68c83c4f0cb435",
                      "5bcd6b998f2769e9c5369d7f20388aba73e1480294cc2dc7e06379b6692636fe",
                      "27cae167df6f644c67fbdd3fbe5b9ba4754787c536ff7c95cb3a862a5af9f806"),
    "cutdenseaspp_ade20k": ("b979b2d2ddeb97dc3983a9b871cbc6bfefdf09ecf7e34ad54a0a550e00f301c6",
                            "fc10cc490da6a68d3b5b68ca92c549951dfc4748a06dea03a59ba87f01fbeac2",
                            "81530e742ba0d1653e6bb4f970ba42e6a01278da33953a6748cf4a6bfc7605d0"),
}


def tensors_digest(state: dict, values: bool) -> str:
    """sha256 of a state dict's names, shapes and dtypes (and values)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(f"{name}:{tuple(state[name].shape)}:{state[name].dtype}".encode())
        if values:
            digest.update(state[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_the_default_study_is_the_paper_six_in_order():
    assert default_variants() == list(BUILT)
    assert not any(VARIANTS[key].default for key in VARIANTS if key not in BUILT)


@pytest.mark.parametrize("key", list(BUILT))
def test_the_paper_variants_keep_their_tensors_and_counts(key):
    trainable, total, tensors, digest = BUILT[key]
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build_model(key, pretrained=False)
    assert count_parameters(model) == (trainable, total)
    state = model.state_dict()
    assert len(state) == tensors
    assert tensors_digest(state, values=False) == digest


@pytest.mark.parametrize("key", list(SEEDED))
def test_the_paper_variants_keep_their_seeded_weights_and_feature_cache_keys(key):
    values, description, fingerprint = SEEDED[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(key, pretrained=False, seed=0)
    assert tensors_digest(model.state_dict(), values=True) == values
    described = json.dumps(module_description(model.backbone), sort_keys=True).encode()
    assert hashlib.sha256(described).hexdigest() == description
    assert backbone_fingerprint(model) == fingerprint


@pytest.mark.parametrize("key", list(VARIANTS))
def test_every_entry_declares_the_outputs_its_backbone_returns(key):
    spec = VARIANTS[key]
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        features = build_model(key, pretrained=False).features(torch.empty(1, 3, 64, 64))
    outputs = features if isinstance(features, dict) else {next(iter(spec.encoder.channels)): features}
    assert {name: (f.shape[1], 64 // f.shape[-1]) for name, f in outputs.items()} == {
        name: (spec.encoder.channels[name], spec.encoder.strides[name]) for name in spec.encoder.channels}
