"""Labels that tell the truth, the same in the report and the scripts; the paper's figures beside ours only where a
row was run as the paper's was; Table 2 in the paper's column order; compute charged as spent."""
import importlib.util
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from petseg.data import DataSpec
from petseg.models import build_seeded_model
from petseg.models.checkpoints import public_head_state, save_head_file
from petseg.report.analysis import compute_spent, console_summary
from petseg.report.labels import (backbone_label, checkpoint_provenance, head_label, model_name,
                                  study_provenance)
from petseg.report.paper import beside_paper, comparable_rows, source, study_differences
from petseg.report.tables import markdown_table, paper_tables, run_details_table
from petseg.tune.config import StudyConfig, check_head_files, resolve_config

HEAD = "/heads/denseaspp_voc-1234abcd.pth"
REPO = Path(__file__).resolve().parents[1]


def labels(config, variant):
    """(model name, head label, backbone label) of `variant` in a study with `config`."""
    p = study_provenance(config, variant)
    return model_name(p), head_label(p), backbone_label(p)


def test_a_checked_head_file_is_its_dataset_and_a_missing_one_is_random_init():
    config = StudyConfig.from_flat(dict(pretrained=True, head_weights={"denseaspp_voc": HEAD},
                                        head_backbone_checked={"denseaspp_voc": True}))
    assert labels(config, "denseaspp_voc") == ("DenseASPP1", "Pascal VOC", "dilated DenseNet121 (ImageNet)")
    assert labels(config, "denseaspp_ade20k") == ("DenseASPP2 (random-init head)", "random init",
                                                  "dilated DenseNet121 (ImageNet)")
    assert labels(config, "fcn_resnet50") == ("FCN", "COCO", "ResNet50 (torchvision, COCO)")


def test_a_head_only_file_says_its_backbone_is_unchecked():
    config = StudyConfig.from_flat(dict(pretrained=True, head_weights={"denseaspp_voc": HEAD},
                                        head_backbone_checked={"denseaspp_voc": False}))
    name, head, _ = labels(config, "denseaspp_voc")
    assert head == "Pascal VOC (backbone unchecked)"
    assert name == "DenseASPP1 (head's backbone unchecked)"


def test_random_weights_say_what_was_random():
    config = StudyConfig.from_flat(dict(pretrained=False, head_weights={"denseaspp_voc": HEAD},
                                        head_backbone_checked={"denseaspp_voc": True}))
    # Nothing pretrained: backbone and head both random, not "random-init head" on a pretrained backbone.
    assert labels(config, "fcn_resnet50") == ("FCN (random weights)", "random init", "ResNet50 (random init)")
    assert labels(config, "denseaspp_ade20k")[:2] == ("DenseASPP2 (random weights)", "random init")
    # A head file on a random-init backbone: the head is the file's, not random init.
    name, head, backbone = labels(config, "denseaspp_voc")
    assert name == "DenseASPP1 (random-init backbone)"
    assert head == "Pascal VOC, loaded from denseaspp_voc-1234abcd.pth onto a random-init backbone"
    assert backbone == "dilated DenseNet121 (random init)"


def test_a_checkpoint_is_labelled_as_the_report_labels_its_study():
    config = StudyConfig.from_flat(dict(pretrained=True, head_weights={"denseaspp_voc": HEAD},
                                        head_backbone_checked={"denseaspp_voc": False}))
    for variant in ("fcn_resnet50", "denseaspp_voc", "denseaspp_ade20k"):
        # A best checkpoint carries its trial's config: the study's trial params plus the variant and lr.
        checkpoint = {"variant": variant, "config": {**config.trial_params(), "variant": variant, "lr": 1e-3}}
        assert checkpoint_provenance(checkpoint) == study_provenance(config, variant)
    old = {"variant": "denseaspp_voc", "config": {"pretrained": True, "seed": 0, "head_weights": {"denseaspp_voc": HEAD}}}
    assert model_name(checkpoint_provenance(old)) == "DenseASPP1 (head's backbone unchecked)"  # no record of a check


def test_check_head_files_records_whether_each_backbone_was_checked(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = public_head_state(build_seeded_model("denseaspp_voc", pretrained=False, seed=0))
    torch.save(trained, tmp_path / "with_backbone.pth")
    torch.save({k: v for k, v in trained.items() if k.startswith("head.")}, tmp_path / "head_only.pth")
    config = StudyConfig.from_flat(dict(pretrained=False, seed=0, head_weights={
        "denseaspp_voc": str(tmp_path / "with_backbone.pth"), "denseaspp_ade20k": str(tmp_path / "head_only.pth")}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pretrained=False is announced; here it is the point
        assert check_head_files(config) == {"denseaspp_voc": True, "denseaspp_ade20k": False}


def test_the_dry_run_says_a_head_only_file_leaves_its_backbone_unchecked(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = public_head_state(build_seeded_model("denseaspp_voc", pretrained=False, seed=0))
        path = save_head_file({k: v for k, v in trained.items() if k.startswith("head.")}, tmp_path, "denseaspp_voc")
        spec = importlib.util.spec_from_file_location("compare_script", REPO / "experiments" / "compare.py")
        compare = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compare)
        assert compare.main(["--dry-run", "--preset", "smoke", "--variants", "denseaspp_voc",
                             "--head-weights", str(tmp_path)]) == 0
    assert f"head weights: {path} (a head-only file: its backbone unchecked)" in capsys.readouterr().out


# --- beside the paper -------------------------------------------------------------------------------------------

def pets_spec(train=3680, val=1834, test=1835, size=256, synthetic=None) -> DataSpec:
    """A Pets data spec with a split of these sizes (names only, as a study saves it)."""
    split = {"seed": 0, **{part: [f"{part}_{i}" for i in range(n)] for part, n in
                           (("train", train), ("val", val), ("test", test))}}
    return DataSpec("pets", "/data", size, "offline", 0, (0.5,) * 3, (0.2,) * 3, 3, split=split, synthetic=synthetic)


def comparison(keys=("fcn_resnet50", "denseaspp_voc", "denseaspp_ade20k")) -> pd.DataFrame:
    rows = {"fcn_resnet50": (9_439_747, 0.88, 0.80, 40.0), "denseaspp_voc": (2_220_675, 0.92, 0.85, 20.0),
            "denseaspp_ade20k": (2_220_675, 0.91, 0.84, 21.0)}
    return pd.DataFrame([{"key": k, "model": k, "trainable_params": rows[k][0], "test_pixel_accuracy": rows[k][1],
                          "test_weighted_iou": rows[k][2], "prediction_time_s": rows[k][3]} for k in keys])


def paper_study(**values):
    return resolve_config("paper", overrides={"head_weights": {"denseaspp_voc": HEAD},
                                              "head_backbone_checked": {"denseaspp_voc": True}, **values})


def test_the_published_figures_are_exact_and_prediction_times_are_never_differenced():
    beside = beside_paper(comparison(), {"fcn_resnet50", "denseaspp_voc"}).set_index("key")
    assert beside.loc["fcn_resnet50", "paper_prediction_time_s"] == 36.784
    assert beside.loc["denseaspp_voc", "paper_prediction_time_s"] == 27.626
    assert beside.loc["denseaspp_voc", "diff_pixel_accuracy"] == pytest.approx(0.92 - 0.917)
    assert beside.loc["fcn_resnet50", "diff_weighted_iou"] == pytest.approx(0.80 - 0.805)
    assert beside.loc["fcn_resnet50", "diff_trainable_params"] == 0  # Table 1's counts are exact
    assert not [c for c in beside if c.startswith("diff_prediction")]
    # The row that is not comparable keeps its own numbers and no paper figures.
    assert beside.loc["denseaspp_ade20k", ["paper_pixel_accuracy", "paper_prediction_time_s"]].isna().all()
    table1, table2 = paper_tables(beside.reset_index())
    assert {"Paper trainable params", "Diff trainable params"} <= set(table1.columns)
    assert "Paper prediction, test set (s; hardware and protocol unknown)" in table2.columns
    assert "9,439,747" in markdown_table(table1) and "<NA>" not in markdown_table(table1)
    assert "github.com/camilobetanieto/ImageSegmentationPets" in source()


def test_the_real_dataset_at_256_px_with_pretrained_weights_is_comparable_row_by_row():
    config = paper_study()
    assert study_differences(config, pets_spec()) == []
    provenances = {v: study_provenance(config, v) for v in ("fcn_resnet50", "denseaspp_voc", "denseaspp_ade20k")}
    names = {v: model_name(p) for v, p in provenances.items()}
    comparable, notes = comparable_rows(config, pets_spec(), provenances, names)
    assert comparable == {"fcn_resnet50", "denseaspp_voc"}
    assert notes[0] == ("DenseASPP2 (random-init head) is not beside the paper: its head is random init, not "
                        "pretrained on ADE20K (no head file).")
    assert notes[1].startswith("Beside the paper:") and "no difference taken" in notes[1]


@pytest.mark.parametrize("values,data,reason", [
    ({"synthetic_images": 24}, pets_spec(12, 6, 6, synthetic={"num_images": 24}),
     "the dataset is generated (24 images), not the real Oxford-IIIT Pet"),
    ({"pretrained": False}, pets_spec(), "backbones are random init (`pretrained: false`), not pretrained"),
    ({"image_size": 64}, pets_spec(size=64), "images are 64 px, not the paper's 256"),
    ({}, pets_spec(train=3000), "the dataset has 6,669 images, not the real Oxford-IIIT Pet's 7,349"),
    ({}, pets_spec(val=1000, test=2669), "the split is 3,680 / 1,000 / 2,669 (train / val / test)"),
])
def test_a_paper_preset_study_that_is_not_the_papers_shows_no_paper_columns_and_says_why(values, data, reason):
    config = paper_study(**values)
    assert config.search.preset == "paper"
    provenances = {v: study_provenance(config, v) for v in ("fcn_resnet50", "denseaspp_voc")}
    comparable, notes = comparable_rows(config, data, provenances, {v: v for v in provenances})
    assert comparable == set() and len(notes) == 1
    assert notes[0].startswith("Not beside the paper's published figures: ") and reason in notes[0]
    beside = beside_paper(comparison(("fcn_resnet50", "denseaspp_voc")), comparable)
    assert not [c for c in beside if c.startswith(("paper_", "diff_"))]


def test_generated_data_at_64_px_without_weights_names_every_difference_in_one_line():
    data = pets_spec(12, 6, 6, size=64, synthetic={"num_images": 24})
    reasons = study_differences(resolve_config("smoke"), data)
    assert len(reasons) == 3 and reasons[0].startswith("the dataset is generated")


# --- tables --------------------------------------------------------------------------------------------------------

def full_row(key: str) -> dict:
    return {"key": key, "model": "FCN", "test_pixel_accuracy": 0.9, "test_weighted_iou": 0.8, "test_mean_iou": 0.7,
            "test_iou_pet": 0.6, "test_iou_background": 0.8, "test_iou_border": 0.3, "prediction_time_s": 12.0,
            "prediction_ms_per_image": 6.5, "device": "cpu", "batch_size": 8, "precision": "fp32", "best_lr": 1e-3,
            "epochs": 10, "trials": 8, "trial_epochs": 50, "gpu_hours": 0.0, "cpu_core_hours": 1.5,
            "epochs_cut_by_asha": 20, "epochs_cut_by_early_stopping": 10, "epochs_lost_to_errors": 0,
            "epochs_planned": 80, "test_image_size": 256}


def test_table_2_leads_with_the_papers_columns_and_run_details_are_a_table_of_their_own():
    frame = pd.DataFrame([full_row("fcn_resnet50")])
    _, table2 = paper_tables(frame)
    assert list(table2.columns) == ["Model", "Pixel acc.", "Weighted mIoU", "Prediction, test set (s)", "mIoU",
                                    "IoU pet", "IoU background", "IoU border"]
    details = run_details_table(frame)
    assert list(details.columns) == ["Model", "Device", "Batch", "Precision", "Prediction (ms/image)", "Best lr",
                                     "Epochs", "Trials", "Trial-epochs", "GPU-hours", "CPU-core-hours",
                                     "Epochs cut by ASHA", "Epochs cut by early stopping", "Epochs lost to errors",
                                     "Epochs planned"]
    searched = run_details_table(frame.assign(best_weight_decay=2e-5))  # a study that searched weight decay too
    assert list(searched.columns[5:8]) == ["Best lr", "Best weight decay", "Epochs"]


def test_the_console_summary_leads_with_the_papers_columns_and_names_the_resolution(tmp_path):
    pd.DataFrame([full_row("fcn_resnet50")]).to_csv(tmp_path / "comparison.csv", index=False)
    pd.DataFrame(columns=["a", "b", "metric", "verdict", "unit"]).to_csv(tmp_path / "pairwise.csv", index=False)
    text = console_summary(tmp_path)
    assert "| Model | Pixel acc. | Weighted mIoU | Prediction, test set (s) | mIoU |" in text
    assert "Test metrics at 256x256 px" in text and "masks nearest" in text and "experiments/evaluate.py" in text


# --- compute -------------------------------------------------------------------------------------------------------

def test_gpu_and_cpu_hours_are_apart_and_a_shared_cache_is_charged_to_every_reader():
    caches = "trainkey;valkey"
    records = pd.DataFrame([
        # denseaspp_voc's first trial built the DenseNet121 caches (1800 s of its 3600 s); ade20k's reads them.
        {"variant": "denseaspp_voc", "seconds": 3600.0, "cache_build_s": 1800.0, "feature_caches": caches},
        {"variant": "denseaspp_voc", "seconds": 600.0, "cache_build_s": 0.0, "feature_caches": caches},
        {"variant": "denseaspp_ade20k", "seconds": 1200.0, "cache_build_s": 0.0, "feature_caches": caches},
        {"variant": "fcn_resnet50", "seconds": 900.0, "cache_build_s": 0.0, "feature_caches": ""},
    ]).assign(node="127.0.0.2", epochs=10, ended_by="max epochs")
    config = StudyConfig.from_flat(dict(gpus_per_trial=0.5, cpus_per_trial=4.0, max_epochs=10))
    spent = {v: compute_spent(records, v, config) for v in ("denseaspp_voc", "denseaspp_ade20k", "fcn_resnet50")}
    assert spent["denseaspp_voc"]["gpu_hours"] == pytest.approx((1800 + 600 + 900) * 0.5 / 3600)
    assert spent["denseaspp_ade20k"]["gpu_hours"] == pytest.approx((1200 + 900) * 0.5 / 3600)
    assert spent["denseaspp_ade20k"]["cpu_core_hours"] == pytest.approx((1200 + 900) * 4 / 3600)
    assert spent["fcn_resnet50"]["cpu_core_hours"] == pytest.approx(900 * 4 / 3600)
    # Nothing is lost or counted twice: the variants' shares add up to what the trials spent.
    total = sum(s["cpu_core_hours"] for s in spent.values())
    assert total == pytest.approx(records["seconds"].sum() * 4 / 3600)
    assert "device_hours" not in spent["fcn_resnet50"]


def test_a_cache_on_another_node_is_another_build():
    records = pd.DataFrame([
        {"variant": "denseaspp_voc", "node": "a", "seconds": 100.0, "cache_build_s": 60.0, "feature_caches": "k"},
        {"variant": "denseaspp_ade20k", "node": "b", "seconds": 100.0, "cache_build_s": 20.0, "feature_caches": "k"},
    ]).assign(epochs=1, ended_by="max epochs")
    config = StudyConfig.from_flat(dict(cpus_per_trial=1.0, max_epochs=1))
    # Each node built its own copy for its own reader (shared by key alone, voc would get 40 + 30 + 10 s).
    assert compute_spent(records, "denseaspp_voc", config)["cpu_core_hours"] == pytest.approx(100 / 3600)
    assert compute_spent(records, "denseaspp_ade20k", config)["cpu_core_hours"] == pytest.approx(100 / 3600)
