"""The study runner end to end through compare.py: tables, TensorBoard, resume, a failing trial, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "experiments" / "compare.py"


def write_config(folder: Path, **values) -> Path:
    """A YAML config keeping every output of the study inside `folder`."""
    values = {"results_dir": str(folder / "results"), "cache_dir": str(folder / "cache"), **values}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def compare(*args, folder: Path, timeout=600, **popen):
    command = [sys.executable, str(COMPARE), "--storage-path", str(folder / "ray"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=folder, **popen)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smoke")
    run = compare("--preset", "smoke", "--config", str(write_config(folder)), folder=folder)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return folder, run


def test_smoke_study_prints_and_writes_the_comparison(smoke):
    folder, run = smoke
    results = folder / "results" / "smoke"
    comparison = pd.read_csv(results / "comparison.csv")
    assert list(comparison["key"]) == ["fcn_resnet50", "deeplabv3_resnet50", "denseaspp_voc", "denseaspp_ade20k",
                                       "cutdenseaspp_voc", "cutdenseaspp_ade20k"]
    for column in ("trainable_params", "total_params", "best_lr", "epochs", "val_pixel_accuracy", "val_mean_iou",
                   "val_weighted_iou", "test_pixel_accuracy", "test_mean_iou", "test_weighted_iou", "test_iou_pet",
                   "test_iou_background", "test_iou_border", "prediction_time_s", "prediction_ms_per_image",
                   "device", "batch_size", "precision", "epochs_cut_by_asha", "epochs_cut_by_early_stopping",
                   "epochs_lost_to_errors"):
        assert comparison[column].notna().all(), column
    assert comparison["test_pixel_accuracy"].between(0, 1).all()
    assert comparison.loc[comparison.key == "denseaspp_voc", "trainable_params"].item() == 2_220_675
    assert (comparison["prediction_time_s"] > 0).all()
    assert (comparison["prediction_ms_per_image"] * comparison["test_images"] / 1000).to_numpy() == pytest.approx(
        comparison["prediction_time_s"].to_numpy())
    # Random weights (the smoke preset): no label may claim ImageNet, COCO, Pascal VOC or ADE20K.
    assert (comparison["head_pretraining"] == "random init").all()
    assert comparison["backbone"].str.endswith("(random init)").all()
    assert comparison["model"].str.endswith("(random-init head)").all()
    assert "paper_pixel_accuracy" not in comparison  # only a paper-preset study is read beside the paper

    trials = pd.read_csv(results / "all_trials.csv")
    assert len(trials) == 12 and (trials.groupby("variant").size() == 2).all()
    assert set(trials["ended_by"]) <= {"max epochs", "early stopping", "ASHA"}
    assert (trials["node"] == "127.0.0.2").all()
    # the table compare.py prints is the one it wrote
    assert (results / "comparison.md").read_text().strip() in run.stdout
    assert run.stdout.count("[petseg] done ") == 12
    for name in ("config.yaml", "split.json"):
        assert (results / name).is_file()
    assert sorted(p.stem for p in (results / "checkpoints").glob("*.pt")) == sorted(comparison["key"])


def test_smoke_trials_run_side_by_side(smoke):
    """Two CPUs and one CPU per trial: trials of the study overlap in time (no idle slot)."""
    folder, _ = smoke
    spans = []
    for result in (folder / "ray" / "smoke").glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        spans.append((lines[0]["timestamp"] - lines[0]["time_this_iter_s"], lines[-1]["timestamp"]))
    spans.sort()
    # One trial after another would give no overlap at all (end times are whole seconds, rounded down).
    overlapping = sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)
    assert overlapping >= 1, spans


def test_smoke_report_has_intervals_paired_tests_tables_and_figures(smoke):
    from PIL import Image

    folder, _ = smoke
    results = folder / "results" / "smoke"
    comparison = pd.read_csv(results / "comparison.csv")
    for metric in ("pixel_accuracy", "mean_iou", "weighted_iou"):
        assert (comparison[f"test_{metric}_low"] <= comparison[f"test_{metric}"]).all()
        assert (comparison[f"test_{metric}"] <= comparison[f"test_{metric}_high"]).all()
    pairs = pd.read_csv(results / "pairwise.csv")
    assert len(pairs) == 15 * 3  # every pair of six variants, three metrics
    assert set(pairs["verdict"]) <= {"not distinguishable"} | {f"{m} better" for m in comparison["model"]}
    assert (pairs["p_holm"] >= pairs["p_value"]).all() and set(pairs["unit"]) == {"this trained model"}
    for stem in ("table1", "table2"):
        for suffix in (".csv", ".md", ".tex"):
            assert (results / f"{stem}{suffix}").is_file()
    assert "\\toprule" in (results / "table2.tex").read_text()
    report = (results / "report.md").read_text()
    assert "Holm-corrected" in report and "a verdict is about this trained model, not about the variant" in report
    assert "already decoded and on the device" in report and "Epochs cut by ASHA" in report
    for figure in ("learning_curves", "lr_landscape", "test_metrics", "qualitative"):
        assert f"(figures/{figure}.png)" in report
        with Image.open(results / "figures" / f"{figure}.png") as image:
            assert image.width > 400 and image.height > 200


def test_report_rebuilds_the_same_results_from_the_storage_path(smoke):
    folder, _ = smoke
    rebuilt = folder / "rebuilt"
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "report.py"), "--name", "smoke",
                          "--storage-path", str(folder / "ray"), "--results-dir", str(rebuilt)],
                         capture_output=True, text=True, timeout=300, cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    def measured(folder):  # all but the wall-clock timings, which differ from run to run
        frame = pd.read_csv(folder / "smoke" / "comparison.csv")
        return frame.drop(columns=[c for c in frame if c.startswith("prediction_")])

    pd.testing.assert_frame_equal(measured(folder / "results"), measured(rebuilt))


def test_smoke_study_logs_scalars_and_images_to_tensorboard(smoke):
    folder, run = smoke
    experiment = folder / "ray" / "smoke"
    assert f"tensorboard --logdir {experiment}" in run.stdout
    trial = sorted(experiment.glob("denseaspp_voc_*"))[0]
    scalars = EventAccumulator(str(trial)).Reload()
    tags = scalars.Tags()["scalars"]
    for metric in ("train_loss", "val_loss", "val_weighted_iou", "val_mean_iou", "val_pixel_accuracy", "lr"):
        assert f"ray/tune/{metric}" in tags, tags
    images = EventAccumulator(str(trial / "tensorboard_images")).Reload()
    assert images.Tags()["images"] == ["val/image_truth_prediction"]
    first = images.Images("val/image_truth_prediction")[0]
    assert first.step == 1 and (first.width, first.height) == (3 * 64, 4 * 64)  # 4 rows: image | truth | pred


def test_failing_trial_errors_while_the_others_finish(tmp_path):
    # An Adam learning rate of 1e29 drives the DenseASPP head's loss to NaN in its first steps.
    config = write_config(tmp_path, lr_range={"denseaspp": [1e29, 1e30], "torchvision": [1e-3, 1e-2]},
                          max_epochs=1, num_samples=1, max_failures=1)
    run = compare("--preset", "smoke", "--config", str(config), "--name", "nan",
                  "--variants", "fcn_resnet50,denseaspp_voc", folder=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "results" / "nan" / "all_trials.csv").set_index("variant")
    assert trials.loc["denseaspp_voc", "ended_by"] == "error"
    assert "NonFiniteLossError" in trials.loc["denseaspp_voc", "error"]
    assert trials.loc["denseaspp_voc", "failures"] == 0  # seeded divergence repeats itself: it is not retried
    assert trials.loc["fcn_resnet50", "ended_by"] == "max epochs"
    comparison = pd.read_csv(tmp_path / "results" / "nan" / "comparison.csv")
    assert list(comparison["key"]) == ["fcn_resnet50"]


def test_seed_repeats_report_mean_and_std(tmp_path):
    config = write_config(tmp_path, max_epochs=1, num_samples=1)
    run = compare("--preset", "smoke", "--config", str(config), "--name", "seeded", "--seeds", "2",
                  "--variants", "denseaspp_voc", folder=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    seeds = pd.read_csv(tmp_path / "results" / "seeded" / "comparison.csv").iloc[0]
    assert seeds["seeds"] == 2
    for metric in ("pixel_accuracy", "mean_iou", "weighted_iou"):
        assert 0 < seeds[f"test_{metric}_seed_mean"] <= 1 and seeds[f"test_{metric}_seed_std"] >= 0
    trials = list((tmp_path / "ray" / "seeded-seeds").glob("denseaspp_voc_*/params.json"))
    assert sorted(json.loads(p.read_text())["seed"] for p in trials) == [1, 2]
    assert "over seeds" in (tmp_path / "results" / "seeded" / "comparison.md").read_text()


def trial_statuses(experiment: Path) -> dict:
    from ray import tune
    try:
        return {t.trial_id: t.status for t in tune.ExperimentAnalysis(str(experiment)).trials}
    except Exception:  # the state file may be mid-write or not there yet
        return {}


def test_resume_after_the_driver_is_killed(tmp_path):
    config = write_config(tmp_path, max_epochs=3, num_samples=3, grace_period=3)
    args = ("--preset", "smoke", "--config", str(config), "--name", "resume",
            "--variants", "denseaspp_voc,denseaspp_ade20k")
    experiment = tmp_path / "ray" / "resume"
    driver = subprocess.Popen([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "ray"), *args],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and "TERMINATED" not in trial_statuses(experiment).values():
        assert driver.poll() is None, "the study finished before it could be interrupted"
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started: a crash
    driver.wait()
    before = trial_statuses(experiment)
    finished = [trial_id for trial_id, status in before.items() if status == "TERMINATED"]
    assert finished and len(finished) < 6
    lines = {t: len((next(experiment.glob(f"*_{t}")) / "progress.csv").read_text().splitlines()) for t in finished}

    run = compare("--resume", *args, folder=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    for trial_id, count in lines.items():  # a finished trial was not run again
        assert len((next(experiment.glob(f"*_{trial_id}")) / "progress.csv").read_text().splitlines()) == count
    trials = pd.read_csv(tmp_path / "results" / "resume" / "all_trials.csv")
    assert len(trials) == 6 and set(trials["ended_by"]) <= {"max epochs", "early stopping", "ASHA"}
    assert len(pd.read_csv(tmp_path / "results" / "resume" / "comparison.csv")) == 2
    epochs = {t: [json.loads(line)["epoch"] for line in (next(experiment.glob(f"*_{t}")) / "result.json")
                  .read_text().splitlines()] for t in trials["trial_id"]}
    for trial_id, reported in epochs.items():
        assert sorted(set(reported)) == list(range(1, max(reported) + 1)), (trial_id, reported)  # no epoch lost
        # A trial cut by the kill restarts from its last checkpoint: at most the epoch it was in runs again.
        assert len(reported) - len(set(reported)) <= (0 if trial_id in finished else 1), (trial_id, reported)
    print(f"driver kill: {len(before) - len(finished)} of {len(before)} started trials unfinished; "
          f"epochs recomputed: {sum(len(e) - len(set(e)) for e in epochs.values())}; results lost: 0")


@pytest.mark.parametrize("args,yaml_values,message", [
    (["--variants", "unet"], {}, "unknown variant(s) unet"),
    (["--variants", ","], {}, "no variants selected"),
    ([], {"lr_range": {"denseaspp": [1e-2, 1e-4], "torchvision": [1e-3, 1e-1]}}, "lr_range for denseaspp"),
    ([], {"lr_range": {"denseaspp": [0, 1e-4], "torchvision": [1e-3, 1e-1]}}, "0 < low < high"),
    (["--preset", "paper", "--allow-random-heads", "--data-root", "{tmp}/nowhere"], {}, "nowhere does not exist"),
    (["--preset", "paper", "--allow-random-heads", "--data-root", "{tmp}"], {}, "oxford-iiit-pet"),
    (["--preset", "paper", "--data-root", "{tmp}"], {}, "no head file for denseaspp_voc"),
    (["--storage-path", "{tmp}/a_file/ray"], {}, "cannot write to storage path"),
    (["--address", "127.0.0.5:9"], {}, "cannot reach the Ray cluster at 127.0.0.5:9"),
])
def test_bad_input_fails_before_any_trial(args, yaml_values, message, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    command = [sys.executable, str(COMPARE), "--preset", "smoke", "--storage-path", str(tmp_path / "ray"),
               "--config", str(write_config(tmp_path, **yaml_values)), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr
    assert not (tmp_path / "ray" / "smoke").exists() and not (tmp_path / "results").exists()
