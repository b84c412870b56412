"""Labels that tell the truth, and the reproduction read beside the paper's published figures."""
import pandas as pd
import pytest

from petseg.tune.config import StudyConfig
from petseg.report.labels import backbone_label, head_label, model_name
from petseg.report.paper import beside_paper, source
from petseg.report.tables import paper_tables


def test_a_head_without_its_file_is_random_init_whatever_its_variant_is_called():
    config = StudyConfig.from_flat(dict(pretrained=True, head_weights={"denseaspp_voc": "/heads/denseaspp_voc-1234abcd.pth"}))
    assert head_label(config, "denseaspp_voc") == "Pascal VOC" and model_name(config, "denseaspp_voc") == "DenseASPP1"
    assert head_label(config, "denseaspp_ade20k") == "random init"
    assert model_name(config, "denseaspp_ade20k") == "DenseASPP2 (random-init head)"
    assert head_label(config, "fcn_resnet50") == "COCO"
    assert backbone_label(config, "cutdenseaspp_voc") == "dilated DenseNet161 (ImageNet)"


def test_random_weights_claim_no_pretraining():
    config = StudyConfig.from_flat(dict(pretrained=False, head_weights={"denseaspp_voc": "/heads/denseaspp_voc-1234abcd.pth"}))
    for variant in ("fcn_resnet50", "denseaspp_voc"):
        assert head_label(config, variant) == "random init"
        assert model_name(config, variant).endswith("(random-init head)")
    assert backbone_label(config, "fcn_resnet50") == "ResNet50 (random init)"


def test_the_paper_figures_stand_beside_ours_with_the_difference():
    comparison = pd.DataFrame({
        "key": ["denseaspp_voc", "fcn_resnet50"], "model": ["DenseASPP1", "FCN"], "backbone": ["b", "b"],
        "head_pretraining": ["Pascal VOC", "COCO"], "trainable_params": [2_220_675, 9_439_747],
        "total_params": [9_174_531, 32_947_779], "test_pixel_accuracy": [0.92, 0.88],
        "test_weighted_iou": [0.85, 0.80], "prediction_time_s": [20.0, 40.0]})
    beside = beside_paper(comparison).set_index("key")
    assert beside.loc["denseaspp_voc", "paper_pixel_accuracy"] == 0.917
    assert beside.loc["denseaspp_voc", "diff_pixel_accuracy"] == pytest.approx(0.92 - 0.917)
    assert beside.loc["fcn_resnet50", "paper_weighted_iou"] == 0.805
    assert beside.loc["fcn_resnet50", "diff_prediction_time_s"] == pytest.approx(40.0 - 36.8)
    assert beside.loc["fcn_resnet50", "diff_trainable_params"] == 0  # Table 1's counts are exact
    table1, table2 = paper_tables(beside.reset_index())
    assert {"Paper trainable params", "Diff trainable params"} <= set(table1.columns)
    assert {"Paper pixel acc.", "Diff pixel acc.", "Paper weighted mIoU", "Paper prediction, test set (s)"} <= set(
        table2.columns)
    assert "github.com/camilobetanieto/ImageSegmentationPets" in source()
