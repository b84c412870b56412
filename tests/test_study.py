"""The study runner end to end through compare.py: tables, TensorBoard, resume, a failing trial, bad input."""
import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from petseg.tune.saved_state import STATE_FILES

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
                   "device", "batch_size", "precision", "gpu_hours", "cpu_core_hours", "epochs_cut_by_asha",
                   "epochs_cut_by_early_stopping", "epochs_lost_to_errors"):
        assert comparison[column].notna().all(), column
    assert comparison["test_pixel_accuracy"].between(0, 1).all()
    assert comparison.loc[comparison.key == "denseaspp_voc", "trainable_params"].item() == 2_220_675
    assert (comparison["prediction_time_s"] > 0).all()
    assert (comparison["prediction_ms_per_image"] * comparison["test_images"] / 1000).to_numpy() == pytest.approx(
        comparison["prediction_time_s"].to_numpy())
    # Random weights (the smoke preset): no label may claim ImageNet, COCO, Pascal VOC or ADE20K.
    assert (comparison["head_pretraining"] == "random init").all()
    assert comparison["backbone"].str.endswith("(random init)").all()
    assert comparison["model"].str.endswith("(random weights)").all()  # backbone and head, not just the head
    assert not [c for c in comparison if c.startswith(("paper_", "diff_")) and c != "paper_name"]  # generated data

    trials = pd.read_csv(results / "all_trials.csv")
    assert len(trials) == 12 and (trials.groupby("variant").size() == 2).all()
    # Cache builds are recorded and charged as shared: the variants' CPU-core-hours add up to the trials' own.
    assert trials["cache_build_s"].sum() > 0 and (trials["feature_caches"].str.count(";") == 1).all()
    assert (comparison["gpu_hours"] == 0).all()
    assert comparison["cpu_core_hours"].sum() == pytest.approx(trials["seconds"].sum() / 3600)
    assert set(trials["ended_by"]) <= {"max epochs", "early stopping", "ASHA"}
    assert (trials["node"] == "127.0.0.2").all()
    # the table compare.py prints is the one it wrote
    assert run.stdout.count("[petseg] done ") == 12
    for name in ("config.yaml", "split.json"):
        assert (results / name).is_file()
    assert sorted(p.stem for p in (results / "checkpoints").glob("*.pt")) == sorted(comparison["key"])


def test_the_console_shows_the_plan_progress_and_the_outcome_only(smoke):
    folder, run = smoke
    out = run.stdout
    assert out.startswith("[petseg] smoke: 6 variant(s) x 2 learning rates (Optuna GP")
    assert "Table 2 (test split):" in out
    assert "| Model | Pixel acc. | Weighted mIoU | Prediction, test set (s) | mIoU |" in out
    assert "Test metrics at 64x64 px" in out
    assert "paired tests (Holm-corrected, 95%)" in out
    assert f"Full report, intervals and figures: {folder / 'results' / 'smoke' / 'report.md'}" in out
    for noise in ("Configuration for experiment", "A new study created", "Exception ignored", "SystemExit",
                  "To visualize your results with TensorBoard", "Trial status", "resolved config:"):
        assert noise not in out + run.stderr, noise
    assert len((out + run.stderr).splitlines()) < 120  # about 1,000 before
    # What the console leaves out stays in the experiment folder: every trial's own output.
    trial = next((folder / "ray" / "smoke").glob("denseaspp_voc_*"))
    assert "Checkpoint successfully created" in (trial / "stderr").read_text() + (trial / "stdout").read_text()


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


def test_trials_take_over_finished_trials_processes_and_still_write_into_their_own_folders(smoke):
    """12 trials on 2 slots: a new trial runs in a finished trial's worker process (no Python, torch and petseg
    start-up per trial), and its files still land in its own trial folder."""
    folder, _ = smoke
    trials = sorted(p for p in (folder / "ray" / "smoke").iterdir() if (p / "result.json").is_file())
    pids = {json.loads(line)["pid"] for trial in trials for line in (trial / "result.json").read_text().splitlines()}
    assert len(trials) == 12 and len(pids) <= 4, pids  # one process per trial before: 12
    for trial in trials:
        assert list((trial / "tensorboard_images").glob("events.out.tfevents.*")), trial


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
    for stem in ("table1", "table2", "run_details"):
        for suffix in (".csv", ".md", ".tex"):
            assert (results / f"{stem}{suffix}").is_file()
    assert "\\toprule" in (results / "table2.tex").read_text()
    report = (results / "report.md").read_text()
    assert "Holm-corrected" in report and "a verdict is about this trained model, not about the variant" in report
    assert "already decoded and on the device" in report and "Epochs cut by ASHA" in report
    assert "| Model | Pixel acc. | Weighted mIoU | Prediction, test set (s) | mIoU |" in report
    assert "## Run details" in report and "| GPU-hours | CPU-core-hours |" in report
    assert "Test metrics at 64x64 px" in report and "experiments/evaluate.py" in report
    assert ("Not beside the paper's published figures: the dataset is generated (24 images), not the real "
            "Oxford-IIIT Pet; images are 64 px, not the paper's 256; backbones are random init") in report
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
    # A copy of the study under another name reports as the copy, never into the original's results.
    shutil.copytree(folder / "ray" / "smoke", folder / "ray" / "copied")
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "report.py"), "--name", "copied",
                          "--storage-path", str(folder / "ray"), "--results-dir", str(rebuilt)],
                         capture_output=True, text=True, timeout=300, cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in rebuilt.iterdir()) == ["copied", "smoke"]
    assert json.loads((rebuilt / "copied" / "study.json").read_text())["study"] == str(folder / "ray" / "copied")
    # The copy's results folder now belongs to the copy: the original study is refused there.
    (rebuilt / "copied").rename(rebuilt / "taken")
    (rebuilt / "smoke").rename(rebuilt / "spare")
    (rebuilt / "taken").rename(rebuilt / "smoke")
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "report.py"), "--name", "smoke",
                          "--storage-path", str(folder / "ray"), "--results-dir", str(rebuilt)],
                         capture_output=True, text=True, timeout=300, cwd=folder)
    assert run.returncode == 2 and "holds the results of another study" in run.stderr and "--overwrite" in run.stderr


def test_a_report_reads_damaged_results_back_from_what_survives_and_names_what_it_cannot(smoke):
    """A killed driver can leave a finished trial's result.json empty: its rows are read back from progress.csv
    (the same comparison, the trial named). A trial whose files both are gone makes the report partial."""
    folder, _ = smoke
    shutil.copytree(folder / "ray" / "smoke", folder / "ray" / "damaged")
    trials = pd.read_csv(folder / "results" / "smoke" / "all_trials.csv")
    best = pd.read_csv(folder / "results" / "smoke" / "comparison.csv").set_index("key")
    emptied = trials[(trials["variant"] == "denseaspp_voc") & (trials["lr"] == best.loc["denseaspp_voc", "best_lr"])]
    emptied = emptied["trial_id"].item()
    lost = trials[(trials["variant"] == "fcn_resnet50") & (trials["lr"] != best.loc["fcn_resnet50", "best_lr"])]
    lost = lost["trial_id"].iloc[0]
    (next((folder / "ray" / "damaged").glob(f"*_{emptied}")) / "result.json").write_text("")
    for name in ("result.json", "progress.csv"):
        (next((folder / "ray" / "damaged").glob(f"*_{lost}")) / name).write_text("")
    rebuilt = folder / "damaged-results"
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "report.py"), "--name", "damaged",
                          "--storage-path", str(folder / "ray"), "--results-dir", str(rebuilt)],
                         capture_output=True, text=True, timeout=300, cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "PARTIAL REPORT" in run.stdout
    report = (rebuilt / "damaged" / "report.md").read_text()
    assert f"trial {emptied} (recovered from progress.csv)" in report
    assert f"reported epochs whose results no file holds any more ({lost}:" in report
    history = pd.read_csv(rebuilt / "damaged" / "all_trials.csv").set_index("trial_id")["history"]
    assert history[emptied] == "recovered from progress.csv" and history[lost] == "lost"
    columns = ["key", "best_lr", "best_epoch", "val_weighted_iou", "test_weighted_iou"]
    pd.testing.assert_frame_equal(pd.read_csv(rebuilt / "damaged" / "comparison.csv")[columns],
                                  best.reset_index()[columns])


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
    # A study in which every trial failed compared nothing: it says so and exits non-zero.
    run = compare("--preset", "smoke", "--config", str(config), "--name", "allnan", "--variants", "denseaspp_voc",
                  folder=tmp_path)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "no trial of any variant finished with a checkpoint" in run.stderr
    assert (tmp_path / "results" / "allnan" / "all_trials.csv").is_file()  # each trial's error, kept


def trial_statuses(experiment: Path) -> dict:
    from ray import tune
    try:
        return {t.trial_id: t.status for t in tune.ExperimentAnalysis(str(experiment)).trials}
    except Exception:  # the state file may be mid-write or not there yet
        return {}


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
    (["--address", "http://127.0.0.1:8265"], {}, "is a dashboard URL"),
    (["--cache-dir", "{tmp}/a_file/cache"], {}, "cannot write to cache dir"),
    (["--gpus-per-trial", "0.5"], {}, "a trial asks for 1 CPU, 0.5 GPU on one node, but the nodes have only:"),
    (["--cpus-per-trial", "1000"], {}, "a trial asks for 1000 CPU on one node"),
    (["--cpus-per-trial", "nan"], {}, "cpus_per_trial (a flag) must be a finite number, got nan"),
    ([], {"asha": "no"}, "asha in"),
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


def test_an_address_that_is_not_a_ray_head_is_named_before_anything_is_written(tmp_path):
    with socketserver.TCPServer(("127.0.0.5", 0), http.server.SimpleHTTPRequestHandler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        address = f"127.0.0.5:{server.server_address[1]}"
        run = compare("--preset", "smoke", "--address", address, "--config", str(write_config(tmp_path)), folder=tmp_path,
                      timeout=60)
        server.shutdown()
    assert run.returncode == 2
    assert f"{address} answers as an HTTP server, not as a Ray head node's GCS" in run.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "results").exists()


def test_a_garbage_head_file_fails_the_dry_run(tmp_path):
    heads = tmp_path / "heads"
    heads.mkdir()
    (heads / "denseaspp_voc-0badf00d.pth").write_bytes(b"not a checkpoint")
    run = subprocess.run([sys.executable, str(COMPARE), "--dry-run", "--head-weights", str(heads),
                          "--allow-random-heads"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2
    assert f"head file for denseaspp_voc: {heads / 'denseaspp_voc-0badf00d.pth'}" in run.stderr
    assert "Traceback" not in run.stderr


def result_lines(experiment: Path) -> list[dict]:
    return [json.loads(line) for path in experiment.glob("*/result.json") for line in path.read_text().splitlines()]


def test_sigterm_stops_the_study_as_ctrl_c_does_and_exits_143(tmp_path):
    """What `ray job stop` and Kubernetes send: Tune's own stop with its final save, the reason and the resume
    command printed, exit 128 + 15."""
    config = write_config(tmp_path, max_epochs=3, num_samples=2, grace_period=3)
    args = ["--preset", "smoke", "--config", str(config), "--name", "termed", "--variants", "denseaspp_voc"]
    driver = subprocess.Popen([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "ray"), *args],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not result_lines(tmp_path / "ray" / "termed"):
        assert driver.poll() is None, "the study finished before it could be stopped"
        time.sleep(0.5)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 143, out[-2000:] + err[-2000:]
    assert "interrupted by SIGTERM: search 'termed' stopped with" in err and "No comparison was written" in err
    assert "--resume" in err.splitlines()[-1] and "Traceback" not in err
    statuses = trial_statuses(tmp_path / "ray" / "termed")
    assert statuses and set(statuses.values()) - {"TERMINATED", "ERROR"}, statuses  # saved as unfinished


def test_ctrl_c_exits_130_writes_no_comparison_and_a_copied_or_moved_study_resumes_where_pointed(tmp_path):
    config = write_config(tmp_path, max_epochs=3, num_samples=2, grace_period=3)
    args = ["--preset", "smoke", "--config", str(config), "--name", "stopped", "--variants", "denseaspp_voc"]
    driver = subprocess.Popen([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "ray"), *args],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not result_lines(tmp_path / "ray" / "stopped"):
        assert driver.poll() is None, "the study finished before it could be interrupted"
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 130, out[-2000:] + err[-2000:]
    assert "No comparison was written" in err and "--resume" in err.splitlines()[-1]
    assert not (tmp_path / "results" / "stopped" / "comparison.csv").exists()
    # Tune's own stop saved the stopped trials as unfinished, each with the epochs it reported.
    statuses = trial_statuses(tmp_path / "ray" / "stopped")
    assert statuses and "PENDING" in statuses.values(), statuses  # a saved RUNNING trial reads back as PENDING
    before = {(line["trial_id"], line["timestamp"], line["epoch"]) for line in result_lines(tmp_path / "ray" / "stopped")}
    assert before
    # report.py on the interrupted study: a report that says it is partial and what did not run
    partial = subprocess.run([sys.executable, str(REPO / "experiments" / "report.py"), "--name", "stopped",
                              "--storage-path", str(tmp_path / "ray"), "--results-dir", str(tmp_path / "partial")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "PARTIAL REPORT: not every trial ran" in partial.stdout
    marker = json.loads((tmp_path / "partial" / "stopped" / "study.json").read_text())
    assert marker["partial"] and marker["trials_not_started"] + len(marker["trials_unfinished"]) >= 1
    report = tmp_path / "partial" / "stopped" / "report.md"
    assert not report.exists() or report.read_text().startswith("# Study stopped (PARTIAL: not every trial ran)")

    # A copy resumes entirely where --storage-path points: the original is not written to.
    shutil.copytree(tmp_path / "ray", tmp_path / "copy")
    original = {path: path.stat().st_mtime_ns for path in (tmp_path / "ray").rglob("*")}
    copied = subprocess.run([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "copy"), *args, "--resume",
                             "--results-dir", str(tmp_path / "copy-results")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "ray").rglob("*")} == original
    assert len(pd.read_csv(tmp_path / "copy-results" / "stopped" / "all_trials.csv")) == 2
    assert not [line for line in result_lines(tmp_path / "ray" / "stopped")
                if (line["trial_id"], line["timestamp"], line["epoch"]) not in before]

    # The study is moved; --resume finds it where --storage-path points and names the flag it ignores, and the
    # run flags given now (another cache folder, half a CPU per trial) are what its remaining trials run with.
    shutil.move(tmp_path / "ray", tmp_path / "moved")
    run = subprocess.run([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "moved"), *args, "--resume",
                          "--max-epochs", "5", "--cache-dir", str(tmp_path / "cache2"), "--cpus-per-trial", "0.5"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ignored: max_epochs 5 (the study's: 3)" in run.stderr
    assert not (tmp_path / "ray").exists(), "the old location was recreated"
    trials = pd.read_csv(tmp_path / "results" / "stopped" / "all_trials.csv")
    assert len(trials) == 2 and (trials["epochs"] <= 3).all()
    assert (tmp_path / "results" / "stopped" / "comparison.csv").is_file()
    resumed = [line for line in result_lines(tmp_path / "moved" / "stopped")
               if (line["trial_id"], line["timestamp"], line["epoch"]) not in before]
    assert resumed, "no trial ran after the resume"
    for line in resumed:
        assert line["features"] == "cached" and line["feature_caches"], line
        assert all(Path(folder).is_relative_to(tmp_path / "cache2") for folder in line["feature_caches"]), line
    assert list((tmp_path / "cache2" / "decoded").iterdir())  # decoded images went to the new folder too
    from ray import tune
    for trial in tune.ExperimentAnalysis(str(tmp_path / "moved" / "stopped")).trials:
        assert trial.placement_group_factory.required_resources["CPU"] == 0.5, trial


def test_resume_after_the_driver_is_killed_loses_nothing_and_prunes_as_the_uninterrupted_study(tmp_path):
    """A crash (driver and local Ray killed) then --resume: finished trials are kept, unfinished ones recompute at
    most the epoch they were in, and ASHA's saved rungs stop the same trials at the same epochs as a run that was
    never interrupted."""
    config = write_config(tmp_path, max_epochs=3, num_samples=4, grace_period=1, patience=5,
                          max_concurrent_trials=1)  # one trial at a time: ASHA's decisions are deterministic
    args = ["--preset", "smoke", "--config", str(config), "--variants", "denseaspp_voc"]
    whole = compare(*args, "--name", "whole", folder=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    experiment = tmp_path / "ray" / "killed"
    driver = subprocess.Popen([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "ray"), *args,
                               "--name", "killed"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and list(trial_statuses(experiment).values()).count("TERMINATED") < 2:
        assert driver.poll() is None, "the study finished before it could be interrupted"
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started: a crash
    driver.wait()
    before = trial_statuses(experiment)
    finished = [trial_id for trial_id, status in before.items() if status == "TERMINATED"]
    lines = {t: len((next(experiment.glob(f"*_{t}")) / "progress.csv").read_text().splitlines()) for t in finished}
    resumed = compare(*args, "--name", "killed", "--resume", folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for trial_id, count in lines.items():  # a finished trial was not run again
        assert len((next(experiment.glob(f"*_{trial_id}")) / "progress.csv").read_text().splitlines()) == count
    trials = pd.read_csv(tmp_path / "results" / "killed" / "all_trials.csv")
    epochs = {t: [json.loads(line)["epoch"] for line in (next(experiment.glob(f"*_{t}")) / "result.json")
                  .read_text().splitlines()] for t in trials["trial_id"]}
    restarted = resumed.stdout.count("the trial starts over")
    for trial_id, reported in epochs.items():
        assert sorted(set(reported)) == list(range(1, max(reported) + 1)), (trial_id, reported)  # no epoch lost
        recomputed = len(reported) - len(set(reported))
        # A trial cut by the kill restarts from its last checkpoint: at most the epoch it was in runs again. (One
        # whose named checkpoint is gone and that has no complete one left starts over, and says so; see README,
        # Interrupting.)
        assert recomputed == 0 if trial_id in finished else recomputed <= 1 or restarted, (trial_id, reported)
    print(f"driver kill: {len(before) - len(finished)} of {len(before)} started trials unfinished; "
          f"epochs recomputed: {sum(len(e) - len(set(e)) for e in epochs.values())}; results lost: 0")

    def stops(name):
        table = pd.read_csv(tmp_path / "results" / name / "all_trials.csv")
        return sorted(zip(table["lr"].round(12), table["epochs"], table["ended_by"]))

    assert any(ended == "ASHA" for _, _, ended in stops("whole"))  # there was pruning to keep
    assert stops("killed") == stops("whole")


def test_a_driver_killed_mid_trial_costs_at_most_the_epoch_in_progress(tmp_path):
    """Killed while a trial is between epochs, the driver leaves a snapshot naming that trial's last checkpoint
    (Tune saves the study after every trial checkpoint): the resumed trial recomputes at most one epoch of those
    the driver had seen, and loses none. The resume takes over the lock of the killed driver."""
    # One trial, no ASHA, the backbone live (slower epochs: a kill lands between them).
    config = write_config(tmp_path, max_epochs=5, num_samples=1, asha=False, patience=10, feature_cache=False)
    args = ["--preset", "smoke", "--config", str(config), "--variants", "denseaspp_voc", "--name", "midtrial"]
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        driver = subprocess.Popen([sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "ray"), *args],
                                  cwd=tmp_path, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)

        def epochs_seen():  # the epochs the driver has printed (it prints each result as Tune hands it over)
            return [int(e) for e in re.findall(r"denseaspp_voc .* epoch (\d+)/5", console.read_text())]

        def between_epochs():  # Tune's copy to storage of the last epoch's results and state has ended
            seen, experiment = epochs_seen(), tmp_path / "ray" / "midtrial"
            try:
                copied = len(result_lines(experiment)) >= len(seen)
                states = [f.stat().st_size for f in experiment.glob("*") if f.name.startswith(STATE_FILES)]
            except (ValueError, OSError):  # a line or a file being written
                return False
            return 2 <= len(seen) < 5 and copied and bool(states) and all(states)

        deadline = time.time() + 300
        while time.time() < deadline and not between_epochs():
            assert driver.poll() is None, "the study finished before it could be interrupted"
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started: a crash
        driver.wait()
    seen = max(epochs_seen())
    experiment = tmp_path / "ray" / "midtrial"
    saved = len(result_lines(experiment))  # the epochs the storage path shows
    assert list(trial_statuses(experiment).values()) == ["PENDING"]  # saved as RUNNING: the resume continues it

    resumed = compare(*args, "--resume", folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock of study 'midtrial' from a driver that is gone" in resumed.stdout
    epochs = [line["epoch"] for line in result_lines(experiment)]
    assert sorted(set(epochs)) == [1, 2, 3, 4, 5], epochs  # no epoch lost
    # It went on from its last checkpoint (also where Tune had deleted the one its snapshot names, see
    # tune.trial_checkpoints): at most the last epoch the driver saw ran again.
    assert "starts over" not in resumed.stdout and epochs[saved] >= seen, (seen, saved, epochs)


LISTENERS = """
import json, sys
from pathlib import Path
import ray
from petseg.tune.config import resolve_config
from petseg.tune.cluster import start_local_ray
start_local_ray(resolve_config("smoke", overrides={"ray_metrics": sys.argv[1] == "on"}))
port = ray.nodes()[0]["MetricsExportPort"]
# /proc/net/tcp{,6}: local address "IP:PORT" in hex (2nd column), state 0A = LISTEN (4th column).
rows = [line.split() for name in ("tcp", "tcp6") for line in Path("/proc/net", name).read_text().splitlines()[1:]]
listening = {int(row[1].rsplit(":", 1)[1], 16) for row in rows if row[3] == "0A"}
print(json.dumps({"metrics_port_listens": port in listening}))
ray.shutdown()
"""


def test_the_local_ray_keeps_token_auth_and_exports_no_metrics_unless_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_enable_metrics"))}
    refused = compare("--preset", "smoke", "--config", str(write_config(tmp_path)), folder=tmp_path, timeout=120,
                      env={**env, "RAY_AUTH_MODE": "disabled"})
    assert refused.returncode == 2 and "RAY_AUTH_MODE=disabled" in refused.stderr
    assert "--allow-unauthenticated-ray" in refused.stderr
    for metrics, listens in (("off", False), ("on", True)):
        probe = subprocess.run([sys.executable, "-c", LISTENERS, metrics], capture_output=True, text=True, timeout=120,
                               cwd=tmp_path, env=env)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert json.loads(probe.stdout.splitlines()[-1]) == {"metrics_port_listens": listens}, metrics


def disk_use(folder: Path) -> int:
    """Bytes of the caches under `folder` now (files vanishing mid-walk count as gone); a build's reservation
    (a sparse file that stands in for the build until its own files exist) takes no disk and is left out."""
    total = 0
    for root, _, files in os.walk(folder):  # os.walk skips a folder eviction removes mid-walk; rglob raises
        for name in files:
            if ".reserved-" in name or ".reserved-" in root:
                continue
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def test_a_tiny_cache_budget_is_kept_on_disk_and_changes_no_result(smoke, tmp_path):
    """Two ResNet50 caches (7.6 MiB each at 64 px) never fit 9 MiB together: one backbone at a time, the first
    deleted when the second needs the room."""
    folder, _ = smoke
    config = write_config(tmp_path, asha=False)  # the smoke study's schedule, every trial to its last epoch
    command = [sys.executable, str(COMPARE), "--storage-path", str(tmp_path / "ray"), "--preset", "smoke", "--config",
               str(config), "--name", "budget", "--variants", "fcn_resnet50,deeplabv3_resnet50",
               "--cache-budget", "9M"]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while driver.poll() is None:
        peak = max(peak, disk_use(tmp_path / "cache" / "features"))
        time.sleep(0.05)
    out, err = driver.communicate()
    assert driver.returncode == 0, err[-3000:]
    assert "peak feature-cache use per node 7.6 MiB within a budget of 9.0 MiB" in out
    assert 0 < peak <= 9 * 2**20, peak
    trials = pd.read_csv(tmp_path / "results" / "budget" / "all_trials.csv")
    assert len(trials) == 4 and (trials["features"] == "cached").all()
    # The same trials (variant, seeded lr) score as in the unbudgeted smoke study (at epoch 1: ASHA, off here,
    # may have stopped a smoke trial there).
    def epoch1(experiment):
        return {(line["config"]["variant"], round(line["config"]["lr"], 12)): line["val_weighted_iou"]
                for line in result_lines(experiment) if line["epoch"] == 1}

    budgeted, unbudgeted = epoch1(tmp_path / "ray" / "budget"), epoch1(folder / "ray" / "smoke")
    assert len(budgeted) == 4
    for trial, score in budgeted.items():
        assert score == pytest.approx(unbudgeted[trial], abs=1e-6), trial


def test_fake_gpus_pack_four_half_gpu_trials_each_on_its_own_share_and_seed_repeats_report_mean_and_std(tmp_path):
    """A local Ray told it has 2 GPUs runs 4 trials of 0.5 GPU at once, two on each GPU (no GPU needed); each
    variant's best lr is then trained again with 2 fresh seeds, summarised as mean and std."""
    config = write_config(tmp_path, num_samples=2, max_epochs=2, asha=False, patience=3)
    run = compare("--preset", "smoke", "--config", str(config), "--name", "packed", "--variants",
                  "denseaspp_voc,denseaspp_ade20k", "--local-gpus", "2", "--gpus-per-trial", "0.5",
                  "--cpus-per-trial", "0.5", "--seeds", "2", folder=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "0.5 CPU / 0.5 GPU per trial" in run.stdout
    trials = pd.read_csv(tmp_path / "results" / "packed" / "all_trials.csv", dtype={"gpus": str})
    assert sorted(trials["gpus"]) == ["0", "0", "1", "1"]  # each trial saw one GPU, each GPU two trials
    spans = []
    for result in (tmp_path / "ray" / "packed").glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        spans.append((lines[0]["timestamp"] - lines[0]["time_this_iter_s"], lines[-1]["timestamp"]))
    latest_start, earliest_end = max(start for start, _ in spans), min(end for _, end in spans)
    assert latest_start < earliest_end, spans  # all four were running at the same moment
    seeds = pd.read_csv(tmp_path / "results" / "packed" / "comparison.csv").set_index("key")
    assert list(seeds["seeds"]) == [2, 2]
    for metric in ("pixel_accuracy", "mean_iou", "weighted_iou"):
        assert (0 < seeds[f"test_{metric}_seed_mean"]).all() and (seeds[f"test_{metric}_seed_mean"] <= 1).all()
        assert (seeds[f"test_{metric}_seed_std"] >= 0).all()
    trials = list((tmp_path / "ray" / "packed-seeds").glob("denseaspp_voc_*/params.json"))
    assert sorted(json.loads(p.read_text())["seed"] for p in trials) == [1, 2]
    assert "over seeds" in (tmp_path / "results" / "packed" / "comparison.md").read_text()
