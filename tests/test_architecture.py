"""Adding a dataset, a variant or a metric is one module: tests/fake_plugin.py registers one of each, petseg knows
none of them, and a smoke study through compare.py runs, reports and reports again in a fresh process with them.
The same study checks a user's `module:function` variant and LR-ASPP's two cached levels."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from petseg.data import study_kinds
from petseg.metrics import REGISTRY
from petseg.models import VARIANTS

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("sky", "sea", "sand", "rock")


def run(script: str, *args, folder: Path) -> subprocess.CompletedProcess:
    """An entry script run as a user would, with the repository on PYTHONPATH (as the plugin's folder must be on
    every node)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(REPO / "experiments" / script), *args], capture_output=True, text=True,
                          timeout=900, cwd=folder, env=env)


def test_a_plugins_dataset_variant_and_metric_run_a_study_and_report_again_in_a_fresh_process(tmp_path):
    assert "tiles" not in study_kinds() and "two_level" not in VARIANTS and "sky_recall" not in REGISTRY
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"),
                                      "max_epochs": 1, "num_samples": 1, "asha": False}))
    study = run("compare.py", "--preset", "smoke", "--config", str(config), "--name", "own",
                "--storage-path", str(tmp_path / "ray"), "--plugins", "tests.fake_plugin", "--dataset", "tiles",
                "--variants", "two_level,tests.user_variant:tiny,lraspp_mobilenet_v3_large", folder=tmp_path)
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    results = tmp_path / "results" / "own"
    comparison = pd.read_csv(results / "comparison.csv")
    assert list(comparison["key"]) == ["two_level", "tiny", "lraspp_mobilenet_v3_large"]
    # 4-class heads: two_level's 1x1 classifier over 8 + 16 channels; tiny's and LR-ASPP's one class more than Pets'
    assert list(comparison["trainable_params"]) == [(8 + 16) * 4 + 4, 2_403 + 17, 246_526 + 41 + 129]
    assert list(comparison["backbone"]) == ["TwoLevelConv (random init)", "TinyConv (random init)",
                                            "MobileNetV3-Large (random init)"]
    trials = pd.read_csv(results / "all_trials.csv")
    assert set(trials["features"]) == {"cached"}
    assert trials["best_val_sky_recall"].between(0, 1).all()
    table2 = pd.read_csv(results / "table2.csv")
    assert [c for c in table2.columns if c.startswith("IoU ")] == [f"IoU {name}" for name in CLASSES]
    assert table2["sky recall"].between(0, 1).all()
    report = (results / "report.md").read_text()
    assert "The verdicts cover the headline metrics (pixel accuracy, mIoU, weighted mIoU, sky recall)" in report
    tests = pd.read_csv(results / "pairwise.csv")
    assert set(tests["metric"]) == {"pixel_accuracy", "mean_iou", "weighted_iou", "sky_recall"}
    saved = yaml.safe_load((results / "config.yaml").read_text())
    assert saved["search"]["plugins"] == ["tests.fake_plugin"]
    assert saved["search"]["variant_sources"] == ["tests.user_variant:tiny"]

    rebuilt = run("report.py", "--name", "own", "--storage-path", str(tmp_path / "ray"),
                  "--results-dir", str(tmp_path / "rebuilt"), folder=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    again = pd.read_csv(tmp_path / "rebuilt" / "own" / "comparison.csv")
    assert list(again["key"]) == list(comparison["key"])
    assert again["test_sky_recall"].tolist() == comparison["test_sky_recall"].tolist()

    scored = run("evaluate.py", "--checkpoint", str(results / "checkpoints" / "two_level.pt"), "--data-root",
                 str(tmp_path / "cache" / "synthetic" / "tiles-24-64-0"), folder=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "sky recall" in scored.stdout and all(f"{name} " in scored.stdout for name in CLASSES)
