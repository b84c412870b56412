"""Turn a finished study into results: every trial, each variant's best trial scored on test with
95% bootstrap intervals, paired tests between variants, seed repeats, tables and figures."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from ray import tune

from ..data import CLASS_NAMES, DataSpec, datasets_from_spec
from ..metrics import scores
from ..models import VARIANTS, model_from_config, parameter_counts
from ..models.checkpoints import save_best_checkpoint
from ..train import timing
from ..train.engine import default_device, per_image_confusions
from ..tune.config import StudyConfig
from ..tune.results import best_trials, latest_state, trial_records
from ..tune.storage import Location
from . import figures, labels, paper, stats
from .tables import markdown_table, paper_tables, with_interval, write_table

METRICS = stats.METRICS
SHOWN_IMAGES = 4  # fixed test images in the qualitative figure
# What a verdict is about: one trained model per variant, or the variant (training runs x test images).
UNIT_MODEL, UNIT_VARIANT = "this trained model", "this variant"


def best_model(state: dict, device: torch.device):
    """The model of a trial's checkpointed state with its best head, built exactly as the trial built it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings were already shown when the study ran
        model = model_from_config(state["config"], head=state["progress"]["best_head"])
    return model.to(device).eval()


def score_on_test(model, dataset, config: StudyConfig, device: torch.device) -> tuple[dict, np.ndarray]:
    """Test metrics with 95% bootstrap intervals, and the per-image confusion matrices."""
    confusions = per_image_confusions(model, dataset, device, config.search.batch_size)
    summary = stats.summarize(confusions, seed=config.search.seed)
    return {f"test_{k}": v for k, v in summary.items()}, confusions


def prediction_times(models: dict, dataset, config: StudyConfig, device: torch.device) -> dict[str, dict]:
    """variant -> prediction time columns: every model timed on the same device-resident test images."""
    images = timing.images_on_device(dataset, device)
    timed = timing.time_predictions(models, images, config.search.batch_size, repeats=config.search.timing_repeats,
                                    amp=config.search.amp)
    conditions = {"device": timing.device_name(device), "batch_size": config.search.batch_size,
                  "precision": timing.precision(device, config.search.amp), "test_images": len(dataset)}
    return {variant: {"prediction_ms_per_image": t["ms_per_image"], "prediction_time_s": t["seconds"],
                      "prediction_time_s_min": t["seconds_min"], "prediction_time_s_max": t["seconds_max"],
                      "prediction_repeats": t["repeats"], **conditions}
            for variant, t in timed.items()}


def compute_spent(records: pd.DataFrame, variant: str, config: StudyConfig) -> dict:
    """Trial-epochs and device hours a variant's search used, and the epochs it did not run, by cause.

    An epoch is cut when its trial ended before max_epochs: by its variant's ASHA, by its own early
    stopping, or lost when the trial errored (not counting any retried attempts).
    """
    mine = records[records["variant"] == variant]
    per_trial_devices = config.run.gpus_per_trial or config.run.cpus_per_trial
    unrun = (config.search.max_epochs - mine["epochs"]).clip(lower=0)
    return {"trials": len(mine), "trial_epochs": int(mine["epochs"].sum()),
            "device_hours": float(mine["seconds"].sum() * per_trial_devices / 3600),
            "epochs_cut_by_asha": int(unrun[mine["ended_by"] == "ASHA"].sum()),
            "epochs_cut_by_early_stopping": int(unrun[mine["ended_by"] == "early stopping"].sum()),
            "epochs_lost_to_errors": int(unrun[mine["ended_by"] == "error"].sum()),
            "epochs_planned": int(len(mine) * config.search.max_epochs)}


def pairwise(scored: dict[str, np.ndarray], names: dict[str, str], seed: int, variant_level: bool = False
             ) -> pd.DataFrame:
    """Holm-corrected paired bootstrap tests between every pair of variants, per metric, with the verdict's unit."""
    unit = UNIT_VARIANT if variant_level else UNIT_MODEL
    rows = []
    for test in stats.pairwise_tests(scored, seed=seed, variant_level=variant_level):
        winner = {"A better": test["a"], "B better": test["b"]}.get(test["verdict"])
        rows.append({"a": test["a"], "b": test["b"], "metric": test["metric"], "difference": test["diff"],
                     "low": test["low"], "high": test["high"], "p_value": test["p_value"], "p_holm": test["p_holm"],
                     "verdict": f"{names[winner]} better" if winner else "not distinguishable", "unit": unit})
    return pd.DataFrame(rows, columns=["a", "b", "metric", "difference", "low", "high", "p_value", "p_holm",
                                       "verdict", "unit"])


def seed_repeats(seeds_path: Location, dataset, config: StudyConfig, device: torch.device
                 ) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """Per variant: how many seeds and the mean and std of their test metrics; and each seed run's
    per-image confusions (variant -> [N, C, C] per run), for the variant-level tests."""
    experiment = tune.ExperimentAnalysis(seeds_path.path, storage_filesystem=seeds_path.filesystem)
    records = trial_records(experiment, config.search.max_epochs)
    by_id = {t.trial_id: t for t in experiment.trials}
    runs: dict[str, list[np.ndarray]] = {}
    for _, record in records[records["ended_by"] != "error"].sort_values("seed").iterrows():
        state = latest_state(by_id[record["trial_id"]])
        if state is not None:
            runs.setdefault(record["variant"], []).append(
                per_image_confusions(best_model(state, device), dataset, device, config.search.batch_size))
    rows = []
    for variant, confusions in runs.items():
        totals = [scores(torch.from_numpy(c.sum(axis=0))) for c in confusions]
        row = {"key": variant, "seeds": len(confusions)}
        for metric in METRICS:
            row[f"test_{metric}_seed_mean"], row[f"test_{metric}_seed_std"] = stats.seed_summary(
                [total[metric] for total in totals])
        rows.append(row)
    return pd.DataFrame(rows), runs


def write_report(config: StudyConfig, data: DataSpec, experiment_path: Location,
                 seeds_path: Location | None = None) -> Path:
    """Write results/<name>/: comparison and paper tables, all trials, report.md with figures, checkpoints.
    The experiments are read where they are (a folder or an object-store URI), through their filesystem."""
    experiment = tune.ExperimentAnalysis(experiment_path.path, storage_filesystem=experiment_path.filesystem)
    records = trial_records(experiment, config.search.max_epochs)
    out = Path(config.run.results_dir).expanduser().resolve() / config.run.name
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    records.to_csv(out / "all_trials.csv", index=False)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (out / "split.json").write_text(json.dumps(data.split, indent=1))

    device = default_device()
    datasets = datasets_from_spec(data)
    best = best_trials(experiment, records)
    names = {variant: labels.model_name(config, variant) for variant in config.search.variants}
    rows, confusions, shown, models = [], {}, {}, {}
    for variant in [v for v in config.search.variants if v in best]:
        state, record = best[variant]
        save_best_checkpoint(out / "checkpoints" / f"{variant}.pt", variant, record["lr"], int(record["best_epoch"]),
                             state["progress"]["best_head"], state["config"], data.to_json())
        models[variant] = best_model(state, device)
        test, confusions[variant] = score_on_test(models[variant], datasets["test"], config, device)
        shown[variant] = _predict_shown(models[variant], datasets["test"], device)
        trainable, total = parameter_counts(variant)
        rows.append({
            "key": variant, "paper_name": VARIANTS[variant].paper_name, "model": names[variant],
            "backbone": labels.backbone_label(config, variant), "head_pretraining": labels.head_label(config, variant),
            "trainable_params": trainable, "total_params": total,
            "best_lr": record["lr"], "epochs": record["epochs"], "best_epoch": record["best_epoch"],
            **{f"val_{m}": record[f"best_val_{m}"] for m in METRICS},
            **test, **compute_spent(records, variant, config),
        })
    for variant in config.search.variants:
        if variant not in best:
            print(f"warning: {variant} has no finished trial with a checkpoint; it is not in the comparison")
    comparison = pd.DataFrame(rows)
    if rows:
        times = prediction_times(models, datasets["test"], config, device)
        comparison = comparison.merge(pd.DataFrame([{"key": v, **t} for v, t in times.items()]), on="key")
    tests = pairwise(confusions, names, config.search.seed)
    if seeds_path is not None and rows:
        seeds, runs = seed_repeats(seeds_path, datasets["test"], config, device)
        comparison = comparison.merge(seeds, on="key", how="left")
        # The variant level: each variant's best trial and its seed repeats, all trained at its best lr.
        runs = {v: np.stack([confusions[v], *runs[v]]) for v in confusions if v in runs}
        if len(runs) >= 2:
            tests = pd.concat([tests, pairwise(runs, names, config.search.seed, variant_level=True)], ignore_index=True)
    if config.search.preset == "paper" and rows:
        comparison = paper.beside_paper(comparison)
    comparison.to_csv(out / "comparison.csv", index=False)
    tests.to_csv(out / "pairwise.csv", index=False)
    (out / "comparison.md").write_text(comparison_markdown(comparison, tests))
    if rows:
        best_ids = {variant: record["trial_id"] for variant, (_, record) in best.items()}
        write_report_md(out, config, comparison, tests, records, experiment, datasets["test"], shown, best_ids)
    return out


def _predict_shown(model, dataset, device: torch.device) -> list[torch.Tensor]:
    """The model's masks for the first few test images (the same images for every variant)."""
    images = torch.stack([dataset[i][0] for i in range(min(SHOWN_IMAGES, len(dataset)))]).to(device)
    with torch.no_grad():
        return list(model(images).argmax(dim=1).cpu())


CONSOLE_COLUMNS = {"model": "Model", "test_pixel_accuracy": "Pixel acc.", "test_weighted_iou": "Weighted mIoU",
                   "test_mean_iou": "mIoU", "prediction_ms_per_image": "ms/image", "best_lr": "Best lr",
                   "epochs": "Epochs"}


def console_summary(results: Path) -> str:
    """What a finished study prints last: Table 2's main columns, one paragraph on the verdicts, where the report is."""
    try:
        comparison = pd.read_csv(results / "comparison.csv")
    except pd.errors.EmptyDataError:  # what an empty comparison writes
        return f"no variant finished a trial; see {results / 'all_trials.csv'}"
    table = comparison[list(CONSOLE_COLUMNS)].rename(columns=CONSOLE_COLUMNS)
    return ("\nTable 2 (test split):\n\n" + markdown_table(table) + "\n"
            + verdict_summary(pd.read_csv(results / "pairwise.csv"), dict(zip(comparison["key"], comparison["model"])))
            + f"\n\nFull report, intervals and figures: {results / 'report.md'}")


def verdict_summary(tests: pd.DataFrame, names: dict[str, str]) -> str:
    """One paragraph: which variants differ on weighted mIoU (Holm-corrected), counted for every metric and unit."""
    if tests.empty:
        return "Only one variant was scored, so there are no paired tests."
    sentences = []
    for unit, group in tests.groupby("unit", sort=False):
        better = group[group["verdict"] != "not distinguishable"]
        headline = better[better["metric"] == "weighted_iou"]
        pairs = [f"{row.verdict.removesuffix(' better')} > "
                 f"{names[row.b] if row.verdict.startswith(names[row.a]) else names[row.a]}"
                 for row in headline.itertuples()]
        sentences.append(
            f"About {unit}: {len(better)} of {len(group)} paired tests (Holm-corrected, 95%) find a difference; "
            + (f"on weighted mIoU {', '.join(pairs)}" if pairs else "none on weighted mIoU")
            + "; every other pair is not distinguishable on this test set.")
    return " ".join(sentences)


def comparison_markdown(comparison: pd.DataFrame, tests: pd.DataFrame) -> str:
    """The comparison as Markdown: metrics with intervals, seeds if any, then the verdicts and what they cover."""
    if comparison.empty:
        return "no variant finished a trial\n"
    shown = pd.DataFrame({"key": comparison["key"], "model": comparison["model"],
                          "trainable_params": comparison["trainable_params"],
                          "total_params": comparison["total_params"], "best_lr": comparison["best_lr"],
                          "epochs": comparison["epochs"], "val_weighted_iou": comparison["val_weighted_iou"]})
    for metric in METRICS:
        shown[f"test_{metric} [95% CI]"] = with_interval(comparison, f"test_{metric}")
    for name in CLASS_NAMES:
        shown[f"test_iou_{name}"] = comparison[f"test_iou_{name}"]
    shown["prediction_ms_per_image"] = comparison["prediction_ms_per_image"]
    if "seeds" in comparison:
        for metric in METRICS:
            shown[f"{metric} over seeds"] = comparison.apply(
                lambda r, m=metric: f"{r[f'test_{m}_seed_mean']:.4f} ± {r[f'test_{m}_seed_std']:.4f} "
                f"(n={r['seeds']:.0f})" if pd.notna(r["seeds"]) else "", axis=1)
    text = markdown_table(shown) + "\n" + timing_note(comparison) + "\n"
    for unit, group in tests.groupby("unit", sort=False):
        text += "\n" + verdicts_markdown(group, unit)
    return text


def timing_note(comparison: pd.DataFrame) -> str:
    """One sentence naming how prediction times were measured."""
    first = comparison.iloc[0]
    return (f"Prediction time: {first['test_images']} test images already decoded and on the device, "
            f"{first['device']}, batch {first['batch_size']}, {first['precision']}; untimed warm-up batches first, "
            f"then the median of {first['prediction_repeats']} passes per model in rotating order.")


def verdicts_markdown(tests: pd.DataFrame, unit: str) -> str:
    """The paired tests of one unit, with the correction and what the verdicts are about."""
    what = (f"one trained model per variant (its best trial): test images vary, training does not, so a verdict "
            f"is about {UNIT_MODEL}, not about the variant" if unit == UNIT_MODEL else
            "each variant's best trial and its seed repeats: training runs and test images both vary, so a "
            f"verdict is about {UNIT_VARIANT}")
    better = tests[tests["verdict"] != "not distinguishable"]
    return (f"Paired bootstrap tests on the same test images, {what}. Difference = a - b with its own 95% "
            f"interval; {len(tests)} tests at once, so p-values are Holm-corrected (p_holm) and \"better\" "
            f"needs p_holm < 0.05 ({len(better)} of {len(tests)}); otherwise \"not distinguishable\".\n\n"
            + markdown_table(tests))


def write_report_md(out: Path, config: StudyConfig, comparison: pd.DataFrame, tests: pd.DataFrame,
                    records: pd.DataFrame, experiment, test_set, shown: dict, best_ids: dict[str, str]) -> Path:
    """report.md with the paper-style tables (also as CSV/LaTeX), intervals, verdicts and figures."""
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    names = dict(zip(comparison["key"], comparison["model"]))
    table1, table2 = paper_tables(comparison)
    histories = {v: [(t, experiment.trial_dataframes[t]) for t in records.loc[records.variant == v, "trial_id"]
                     if t in experiment.trial_dataframes and len(experiment.trial_dataframes[t])]
                 for v in comparison["key"]}
    figures.learning_curves({v: h for v, h in histories.items() if h}, best_ids, folder / "learning_curves.png",
                            names)
    figures.lr_landscape(records.dropna(subset=["best_val_weighted_iou"]), folder / "lr_landscape.png", names)
    bars = comparison.rename(columns={"key": "variant"})
    bars = bars.rename(columns={f"test_{m}{end}": f"{m}{end}" for m in METRICS for end in ("", "_low", "_high")})
    figures.metric_bars(bars, folder / "test_metrics.png", names)
    count = min(SHOWN_IMAGES, len(test_set))
    figures.qualitative_grid([test_set[i][0] for i in range(count)], [test_set[i][1] for i in range(count)],
                             shown, folder / "qualitative.png", test_set.mean.flatten(), test_set.std.flatten(), names)
    random_heads = [name for name in names.values() if labels.RANDOM in name]
    sections = [
        f"# Study {config.run.name}", "",
        f"{len(records)} trials over {len(comparison)} variants; each variant's best trial (highest val weighted "
        "mIoU) scored on the test split. Intervals are 95% bootstrap intervals over test images.", "",
        *([f"Random-init heads (no head file, or `pretrained: false`): {', '.join(random_heads)}; their head "
           "pretraining reads \"random init\" below.", ""] if random_heads else []),
        "## Table 1: models", "", write_table(table1, out, "table1", "Models compared"),
        "## Table 2: results on the test split", "", write_table(table2, out, "table2", "Test results"),
        *([f"Beside the paper: the `paper_*` columns are the published figures ({paper.source()}); "
           "`diff_*` = petseg - paper.", ""] if "paper_pixel_accuracy" in comparison else []),
        "## Test metrics with 95% intervals, and paired tests", "", comparison_markdown(comparison, tests),
        "## Figures", "",
        "![learning curves](figures/learning_curves.png)", "",
        "![learning-rate landscape](figures/lr_landscape.png)", "",
        "![test metrics with 95% intervals](figures/test_metrics.png)", "",
        "![image, ground truth and each variant's prediction](figures/qualitative.png)", "",
        "Files: `table1`/`table2` as .csv, .md and .tex (booktabs); `comparison.csv`; `pairwise.csv`; "
        "`all_trials.csv`; `checkpoints/`.", "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(sections))
    return path
