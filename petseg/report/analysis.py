"""Turn a finished study into results: every trial, each variant's best trial scored on test with
95% bootstrap intervals, paired tests between variants, seed repeats, tables and figures."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import torch
import yaml
from ray import tune

from ..data import DataSpec, datasets_from_spec
from ..metrics import REGISTRY, headline_metrics, metric_names, scores
from ..models import VARIANTS, model_from_config, parameter_counts
from ..models.checkpoints import save_best_checkpoint
from ..train import timing
from ..train.engine import default_device, per_image_confusions
from ..train.trial_spec import SEARCHED, Searched
from ..tune.config import StudyConfig
from ..tune.results import best_trials, latest_state, trial_histories, trial_records
from ..tune.storage import Location
from . import figures, labels, paper, results_folder, stats
from .tables import class_iou_columns, markdown_table, paper_tables, run_details_table, with_interval, write_table

SHOWN_IMAGES = 4  # fixed test images in the qualitative figure
FINISHED = ("max epochs", "early stopping", "ASHA", "error")  # how a trial that ran to its end ended (results.ended_by)
# What a verdict is about: one trained model per variant, or the variant (training runs x test images).
UNIT_MODEL, UNIT_VARIANT = "this trained model", "this variant"
CHOSEN = {"random": "at random", "gp": "by the GP", "tpe": "by TPE", "fixed": "fixed", "": "unrecorded"}


def best_model(state: dict, device: torch.device, num_classes: int):
    """The model of a trial's checkpointed state with its best head, built exactly as the trial built it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings were already shown when the study ran
        model = model_from_config(state["config"], head=state["progress"]["best_head"], num_classes=num_classes)
    return model.to(device).eval()


def score_on_test(model, dataset, config: StudyConfig, device: torch.device) -> tuple[dict, np.ndarray]:
    """Test metrics with 95% bootstrap intervals, and the per-image confusion matrices."""
    confusions = per_image_confusions(model, dataset, device, config.search.batch_size)
    summary = stats.summarize(confusions, seed=config.search.seed, class_names=dataset.class_names)
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


def cache_build_charges(records: pd.DataFrame) -> dict[str, float]:
    """variant -> feature-cache build seconds charged to it: each build split equally between the variants whose
    trials read that cache (on the node that built it), whichever trial happened to build it."""
    def caches(row):
        return [(row.node, name) for name in str(row.feature_caches or "").split(";") if name]

    readers: dict[tuple, set[str]] = {}
    for row in records.itertuples():
        for cache in caches(row):
            readers.setdefault(cache, set()).add(row.variant)
    charged = dict.fromkeys(records["variant"], 0.0)
    for row in records[records["cache_build_s"] > 0].itertuples():
        sharing = set().union(*(readers[cache] for cache in caches(row))) or {row.variant}
        for variant in sharing:
            charged[variant] += row.cache_build_s / len(sharing)
    return charged


def compute_spent(records: pd.DataFrame, variant: str, config: StudyConfig) -> dict:
    """Trial-epochs, GPU-hours and CPU-core-hours a variant's search used, and the epochs it did not run, by cause.

    Hours are trial seconds times the GPUs and CPU cores reserved per trial; a feature cache's build time is
    shared between the variants that read it (cache_build_charges). An epoch is cut when its trial ended
    before max_epochs: by its variant's ASHA, by its own early stopping, or lost when the trial errored
    (not counting any retried attempts).
    """
    mine = records[records["variant"] == variant]
    seconds = mine["seconds"].sum() - mine["cache_build_s"].sum() + cache_build_charges(records).get(variant, 0.0)
    unrun = (config.search.max_epochs - mine["epochs"]).clip(lower=0)
    return {"trials": len(mine), "trial_epochs": int(mine["epochs"].sum()),
            "gpu_hours": float(seconds * config.run.gpus_per_trial / 3600),
            "cpu_core_hours": float(seconds * config.run.cpus_per_trial / 3600),
            "epochs_cut_by_asha": int(unrun[mine["ended_by"] == "ASHA"].sum()),
            "epochs_cut_by_early_stopping": int(unrun[mine["ended_by"] == "early stopping"].sum()),
            "epochs_lost_to_errors": int(unrun[mine["ended_by"] == "error"].sum()),
            "epochs_planned": int(len(mine) * config.search.max_epochs)}


def pairwise(scored: dict[str, np.ndarray], names: dict[str, str], seed: int, variant_level: bool = False
             ) -> pd.DataFrame:
    """Holm-corrected paired tests between every pair of variants, per metric, with the verdict's unit."""
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
                 ) -> dict[str, dict[int, np.ndarray]]:
    """Each variant's seed repeats (fresh seeds at its chosen lr, never the search's selected trial):
    variant -> seed -> that run's per-image test confusions [N, C, C]."""
    experiment = tune.ExperimentAnalysis(seeds_path.path, storage_filesystem=seeds_path.filesystem)
    records = trial_records(experiment, config.search.max_epochs, seeds_path.filesystem)
    by_id = {t.trial_id: t for t in experiment.trials}
    runs: dict[str, dict[int, np.ndarray]] = {}
    for _, record in records[records["ended_by"] != "error"].sort_values("seed").iterrows():
        state = latest_state(by_id[record["trial_id"]])
        if state is not None:
            runs.setdefault(record["variant"], {})[int(record["seed"])] = per_image_confusions(
                best_model(state, device, dataset.num_classes), dataset, device, config.search.batch_size)
    return runs


def common_seeds(runs: dict[str, dict[int, np.ndarray]], variants: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """The one set of seed runs behind both the mean ± std columns and the variant-level tests: the seeds
    every one of `variants` with seed runs finished, stacked per variant [seeds, N, C, C] in seed order (run k
    of one variant is paired with run k of another); and a sentence naming the runs left out, if any."""
    runs = {variant: runs[variant] for variant in variants if runs.get(variant)}
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in runs.values()))) if runs else []
    left_out = [f"{variant} seed {', '.join(map(str, sorted(set(by_seed) - set(seeds))))}"
                for variant, by_seed in runs.items() if set(by_seed) - set(seeds)]
    missing = [variant for variant in variants if variant not in runs]
    note = " ".join(
        ([f"Left out so that every variant is summarised and tested on the same seeds: {'; '.join(left_out)}."]
         if left_out else [])
        + ([f"No finished seed run: {', '.join(missing)}."] if missing else []))
    return {variant: np.stack([by_seed[s] for s in seeds]) for variant, by_seed in runs.items() if seeds}, note


def seed_columns(runs: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per variant: how many seed runs and the mean and std of their test metrics."""
    rows = []
    for variant, confusions in runs.items():
        totals = [scores(torch.from_numpy(c.sum(axis=0))) for c in confusions]
        row = {"key": variant, "seeds": len(confusions)}
        for metric in metric_names():
            row[f"test_{metric}_seed_mean"], row[f"test_{metric}_seed_std"] = stats.seed_summary(
                [total[metric] for total in totals])
        rows.append(row)
    return pd.DataFrame(rows, columns=["key", "seeds", *[f"test_{m}_seed_{s}" for m in metric_names()
                                                          for s in ("mean", "std")]])


def write_report(config: StudyConfig, data: DataSpec, experiment_path: Location,
                 seeds_path: Location | None = None) -> Path:
    """Write results/<name>/ whole (replacing an earlier report of the same study only once this one is complete):
    comparison and paper tables, all trials, report.md with figures, checkpoints; returns the folder. The
    experiments are read where they are (a folder or an object-store URI), through their filesystem."""
    final = Path(config.run.results_dir).expanduser().resolve() / config.run.name
    study = str(experiment_path)
    with results_folder.replacing(final, study, config.run.overwrite) as out:
        gaps = _write_results(out, config, data, experiment_path, seeds_path)
        results_folder.write_marker(out, study, **gaps)
    return final


def missing_work(config: StudyConfig, records: pd.DataFrame, scored) -> dict:
    """What a study has not done yet: trials its search never started or did not finish, variants not scored
    (and how many were); `partial` is true when any of these is not empty."""
    finished = records["ended_by"].isin(FINISHED) if len(records) else pd.Series(dtype=bool)
    unfinished = records.loc[~finished, "trial_id"].tolist() if len(records) else []
    never_started = max(0, config.search.num_samples * len(config.search.variants) - len(records))
    missing = [v for v in config.search.variants if v not in scored]
    history = records["history"].fillna("").astype(str) if "history" in records else pd.Series("", index=records.index)
    lost = records.loc[history == "lost", "trial_id"].tolist()
    recovered = dict(zip(records.loc[history.str.startswith("recovered"), "trial_id"],
                         history[history.str.startswith("recovered")]))
    return {"partial": bool(unfinished or never_started or missing or lost), "trials_not_started": never_started,
            "trials_unfinished": unfinished, "variants_missing": missing, "trials_scored": len(scored),
            "trials_lost": lost, "trials_recovered": recovered}


def _write_results(out: Path, config: StudyConfig, data: DataSpec, experiment_path: Location,
                   seeds_path: Location | None) -> dict:
    """Write every result file into the empty folder `out`; returns what the study has not done (missing_work)."""
    experiment = tune.ExperimentAnalysis(experiment_path.path, storage_filesystem=experiment_path.filesystem)
    found = trial_histories(experiment, experiment_path.filesystem)  # read once: the report and its figures
    records = trial_records(experiment, config.search.max_epochs, histories=found)
    (out / "checkpoints").mkdir()
    records.to_csv(out / "all_trials.csv", index=False)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (out / "split.json").write_text(json.dumps(data.split, indent=1))

    device = default_device()
    datasets = datasets_from_spec(data)
    best = best_trials(experiment, records)
    gaps = missing_work(config, records, best)
    provenances = {variant: labels.study_provenance(config, variant) for variant in config.search.variants}
    names = {variant: labels.model_name(p) for variant, p in provenances.items()}
    rows, confusions, shown, models = [], {}, {}, {}
    for variant in [v for v in config.search.variants if v in best]:
        state, record = best[variant]
        save_best_checkpoint(out / "checkpoints" / f"{variant}.pt", variant, record["lr"], int(record["best_epoch"]),
                             state["progress"]["best_head"], state["config"], data.to_json())
        models[variant] = best_model(state, device, data.num_classes)
        test, confusions[variant] = score_on_test(models[variant], datasets["test"], config, device)
        shown[variant] = _predict_shown(models[variant], datasets["test"], device)
        trainable, total = parameter_counts(variant, data.num_classes)
        rows.append({
            "key": variant, "paper_name": VARIANTS[variant].paper_name, "model": names[variant],
            "backbone": labels.backbone_label(provenances[variant]),
            "head_pretraining": labels.head_label(provenances[variant]),
            "trainable_params": trainable, "total_params": total,
            # best_lr, and best_<name> of each other value the study searched for this variant
            **{f"best_{name}": value for name, value in Searched.from_json(record).given().items()},
            "epochs": record["epochs"], "best_epoch": record["best_epoch"],
            **{f"val_{m}": record[f"best_val_{m}"] for m in metric_names()},
            **test, "test_image_size": data.size, **compute_spent(records, variant, config),
        })
    for variant in config.search.variants:
        if variant not in best:
            print(f"warning: {variant} has no finished trial with a checkpoint; it is not in the comparison")
    comparison = pd.DataFrame(rows)
    if rows:
        times = prediction_times(models, datasets["test"], config, device)
        comparison = comparison.merge(pd.DataFrame([{"key": v, **t} for v, t in times.items()]), on="key")
    tests = pairwise(confusions, names, config.search.seed)
    seed_note = ""
    if seeds_path is not None and rows:
        repeats = seed_repeats(seeds_path, datasets["test"], config, device)
        runs, seed_note = common_seeds(repeats, list(confusions))
        comparison = comparison.merge(seed_columns(runs), on="key", how="left")
        if len(runs) >= 2 and len(next(iter(runs.values()))) >= stats.VARIANT_MIN_SEEDS:
            tests = pd.concat([tests, pairwise(runs, names, config.search.seed, variant_level=True)], ignore_index=True)
    scored = {v: p for v, p in provenances.items() if v in best}
    comparable, paper_notes = paper.comparable_rows(config, data, scored, names)
    if rows:
        comparison = paper.beside_paper(comparison, comparable)
    comparison.to_csv(out / "comparison.csv", index=False)
    tests.to_csv(out / "pairwise.csv", index=False)
    (out / "comparison.md").write_text(comparison_markdown(comparison, tests, seed_note))
    if rows:
        best_ids = {variant: record["trial_id"] for variant, (_, record) in best.items()}
        write_report_md(out, config, comparison, tests, records, {t: h for t, (h, _) in found.items()},
                        datasets["test"], shown, best_ids,
                        names, paper_notes, gaps, seed_note)
    return gaps


def recovered_lines(gaps: dict) -> list[str]:
    """A paragraph naming the trials whose results were read from what survived of their files."""
    recovered = gaps.get("trials_recovered") or {}
    if not recovered:
        return []
    return ["Results of " + ", ".join(f"trial {trial} ({how})" for trial, how in recovered.items())
            + ": their result.json was damaged or cut short (a killed driver), and its rows were read back from "
            "what survived; `history` in all_trials.csv says so.", ""]


def partial_lines(gaps: dict, names: dict[str, str]) -> list[str]:
    """The paragraph a partial report opens with: which trials did not run and which variants are missing."""
    if not gaps["partial"]:
        return recovered_lines(gaps)
    parts = []
    if gaps["trials_not_started"]:
        parts.append(f"{gaps['trials_not_started']} planned trial(s) never started")
    if gaps["trials_unfinished"]:
        parts.append(f"{len(gaps['trials_unfinished'])} trial(s) did not finish ({', '.join(gaps['trials_unfinished'])})")
    if gaps["variants_missing"]:
        parts.append("no scored trial for " + ", ".join(names[v] for v in gaps["variants_missing"]))
    if gaps.get("trials_lost"):
        parts.append(f"{len(gaps['trials_lost'])} trial(s) reported epochs whose results no file holds any more "
                     f"({', '.join(gaps['trials_lost'])}: result.json and progress.csv damaged; delete the trial's "
                     "folder and --resume to run it again)")
    return ["**This report is partial, not the study's result:** " + "; ".join(parts) + ". The tables and verdicts "
            "below cover only what finished; continue the study with `--resume` and the report is rebuilt.", "",
            *recovered_lines(gaps)]


def _predict_shown(model, dataset, device: torch.device) -> list[torch.Tensor]:
    """The model's masks for the first few test images (the same images for every variant)."""
    images = torch.stack([dataset[i][0] for i in range(min(SHOWN_IMAGES, len(dataset)))]).to(device)
    with torch.no_grad():
        return list(model(images).argmax(dim=1).cpu())


CONSOLE_COLUMNS = {"model": "Model", "test_pixel_accuracy": "Pixel acc.", "test_weighted_iou": "Weighted mIoU",
                   "prediction_time_s": "Prediction, test set (s)", "test_mean_iou": "mIoU"}


def partial_warning(results: Path) -> str:
    """A line saying the report in `results` is partial ("" when the study ran every trial)."""
    if not results_folder.read_marker(results).get("partial"):
        return ""
    return "\nPARTIAL REPORT: not every trial ran (see the top of report.md); resume the study for its result.\n"


def console_summary(results: Path) -> str:
    """What a finished study prints last: Table 2's main columns, one paragraph on the verdicts, where the report is."""
    try:
        comparison = pd.read_csv(results / "comparison.csv")
    except pd.errors.EmptyDataError:  # what an empty comparison writes
        return f"no variant finished a trial; see {results / 'all_trials.csv'}"
    table = comparison[list(CONSOLE_COLUMNS)].rename(columns=CONSOLE_COLUMNS)
    tests = pd.read_csv(results / "pairwise.csv")
    note = too_few_seeds(comparison, tests)
    return (partial_warning(results) + "\nTable 2 (test split):\n\n" + markdown_table(table) + "\n" + resolution_note(comparison)
            + "\n\n" + verdict_summary(tests, dict(zip(comparison["key"], comparison["model"])))
            + (f" {note}" if note else "") + f"\n\nFull report, intervals and figures: {results / 'report.md'}")


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


def searched_columns(comparison: pd.DataFrame) -> list[str]:
    """The comparison's best_<name> column of each searched value, in search order: best_lr, and those of values
    searched besides it (only when the study searched them)."""
    return [f"best_{name}" for name in SEARCHED if f"best_{name}" in comparison]


def comparison_markdown(comparison: pd.DataFrame, tests: pd.DataFrame, seed_note: str = "") -> str:
    """The comparison as Markdown: metrics with intervals, seeds if any, then the verdicts and what they cover."""
    if comparison.empty:
        return "no variant finished a trial\n"
    shown = pd.DataFrame({"key": comparison["key"], "model": comparison["model"],
                          "trainable_params": comparison["trainable_params"],
                          "total_params": comparison["total_params"],
                          **{column: comparison[column] for column in searched_columns(comparison)},
                          "epochs": comparison["epochs"], "val_weighted_iou": comparison["val_weighted_iou"]})
    for metric in metric_names():
        shown[f"test_{metric} [95% CI]"] = with_interval(comparison, f"test_{metric}")
    for column in class_iou_columns(comparison):
        shown[column] = comparison[column]
    shown["prediction_ms_per_image"] = comparison["prediction_ms_per_image"]
    seeds = _seed_count(comparison)
    if seeds is not None:
        for metric in metric_names():
            shown[f"{metric} over seeds"] = comparison.apply(
                lambda r, m=metric: f"{r[f'test_{m}_seed_mean']:.4f} ± {r[f'test_{m}_seed_std']:.4f} "
                f"(n={r['seeds']:.0f})" if pd.notna(r["seeds"]) else "", axis=1)
    text = markdown_table(shown) + "\n" + timing_note(comparison) + "\n"
    if seeds is not None:
        text += ("\nOver seeds: mean ± std (ddof 1) of the test metrics of runs trained afresh with seeds of their "
                 "own at each variant's chosen lr; the search's selected trial is not among them (its val score was "
                 "the best of several, so it is biased upwards). The same runs feed the tests about "
                 f"{UNIT_VARIANT}.{' ' + seed_note if seed_note else ''}\n")
    for unit, group in tests.groupby("unit", sort=False):
        text += "\n" + verdicts_markdown(group, unit, seeds)
    note = too_few_seeds(comparison, tests)
    return text + (f"\n{note}\n" if note else "")


def _seed_count(comparison: pd.DataFrame) -> int | None:
    """Seed runs per variant behind the over-seeds columns (one set for all), or None without seed runs."""
    if "seeds" not in comparison or comparison["seeds"].isna().all():
        return None
    return int(comparison["seeds"].max())


def too_few_seeds(comparison: pd.DataFrame, tests: pd.DataFrame) -> str:
    """Why there are no verdicts about the variant although seeds were run; "" where there are, or no seeds."""
    seeds = _seed_count(comparison)
    if "seeds" not in comparison or (not tests.empty and (tests["unit"] == UNIT_VARIANT).any()):
        return ""
    if seeds is None or seeds < stats.VARIANT_MIN_SEEDS:
        return (f"No verdicts about {UNIT_VARIANT}: {seeds or 0} seed run(s) per variant, and a test over seeds needs "
                f"at least {stats.VARIANT_MIN_SEEDS} (run with `--seeds {stats.VARIANT_MIN_SEEDS}` or more; "
                "`results/calibration.md` shows how power grows with more).")
    return f"No verdicts about {UNIT_VARIANT}: only one variant has seed runs."


def resolution_note(comparison: pd.DataFrame) -> str:
    """One sentence naming the resolution the test metrics were computed at, and where to get original resolution."""
    size = comparison["test_image_size"].iloc[0]
    return (f"Test metrics at {size}x{size} px, the study's image size (images resized bilinearly, masks nearest, "
            "as in training); `python experiments/evaluate.py --checkpoint checkpoints/<variant>.pt --data-root DIR` "
            "scores a checkpoint at each image's original resolution.")


def timing_note(comparison: pd.DataFrame) -> str:
    """One sentence naming how prediction times were measured."""
    first = comparison.iloc[0]
    return (f"Prediction time: {first['test_images']} test images already decoded and on the device, "
            f"{first['device']}, batch {first['batch_size']}, {first['precision']}; untimed warm-up batches first, "
            f"then the median of {first['prediction_repeats']} passes per model in rotating order.")


def verdicts_markdown(tests: pd.DataFrame, unit: str, seeds: int | None = None) -> str:
    """The paired tests of one unit, with the test, the correction and what the verdicts are about."""
    if unit == UNIT_MODEL:
        how = ("Paired tests on the same test images, one trained model per variant (its best trial): test images "
               f"vary, training does not, so a verdict is about {UNIT_MODEL}, not about the variant. Each is a t-test "
               "of the difference with its standard error from a paired bootstrap over images")
    else:
        # The first Holm step compares the smallest p with alpha / tests: how many standard errors that takes.
        needed = scipy.stats.t(seeds - 1).ppf(1 - 0.05 / (2 * len(tests)))
        how = (f"Paired t-tests over seeds: {seeds} fresh runs per variant, seed k of a against seed k of b, on "
               f"{seeds - 1} degree(s) of freedom, the test images' bootstrap variance added to the seeds' "
               f"(training runs and test images both vary, so a verdict is about {UNIT_VARIANT}). With few seeds "
               f"only a large, steady difference reaches a verdict: the first Holm step needs a difference of "
               f"{needed:.1f} standard errors (`results/calibration.md` shows the power)")
    better = tests[tests["verdict"] != "not distinguishable"]
    return (f"{how}. Difference = a - b with its own 95% interval; {len(tests)} tests at once, so p-values are "
            f"Holm-corrected (p_holm) and \"better\" needs p_holm < 0.05 ({len(better)} of {len(tests)}); "
            f"otherwise \"not distinguishable\". {metrics_covered()}\n\n" + markdown_table(tests))


def metrics_covered() -> str:
    """Which metrics the verdicts cover (the headline ones) and which are reported only."""
    reported = [REGISTRY[name].label for name in metric_names() if name not in headline_metrics()]
    return (f"The verdicts cover the headline metrics ({', '.join(REGISTRY[n].label for n in headline_metrics())})"
            + (f"; {', '.join(reported)} {'is' if len(reported) == 1 else 'are'} reported, not tested." if reported
               else "."))


def suggestion_line(records: pd.DataFrame, names: dict[str, str], sampler: str) -> str:
    """One line: per variant, how many of its learning rates were drawn at random and how many by the model,
    counted from the trials' `suggested_by`; `sampler` is the study's (config `sampler`)."""
    parts = []
    for variant, chosen in records.groupby("variant", sort=False)["suggested_by"]:
        counts = chosen.fillna("").value_counts()
        parts.append(f"{names.get(variant, variant)} {counts.get('random', 0)} of {len(chosen)} at random"
                     + "".join(f", {n} {CHOSEN.get(k, k)}" for k, n in counts.items() if k != "random"))
    why = (" (random search)." if sampler == "random" else ". The random ones are the sampler's start-up, which "
           "counts finished trials only: a trial started before enough of its variant's trials had finished was "
           "random too.")
    return "Learning rates chosen (`suggested_by` in `all_trials.csv`): " + "; ".join(parts) + why


def write_report_md(out: Path, config: StudyConfig, comparison: pd.DataFrame, tests: pd.DataFrame,
                    records: pd.DataFrame, histories: dict, test_set, shown: dict, best_ids: dict[str, str],
                    names: dict[str, str], paper_notes: list[str], gaps: dict, seed_note: str = "") -> Path:
    """report.md with the paper-style tables and run details (also as CSV/LaTeX), intervals, verdicts and figures;
    `names`: every variant's label, scored or not; `paper_notes`: the paragraphs saying which rows stand beside
    the paper's figures and why the others do not; `gaps`: what the study has not done (missing_work);
    `histories`: trial id -> its reported rows (tune.results.trial_histories)."""
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    table1, table2 = paper_tables(comparison)
    # Every variant that ran trials has curves, also one whose trials left no checkpoint to score.
    curves = {v: [(t, histories[t]) for t in records.loc[records.variant == v, "trial_id"]
                  if histories.get(t) is not None and len(histories[t])]
              for v in names}
    figures.learning_curves({v: h for v, h in curves.items() if h}, best_ids, folder / "learning_curves.png",
                            names)
    figures.lr_landscape(records.dropna(subset=["best_val_weighted_iou"]), folder / "lr_landscape.png", names)
    bars = comparison.rename(columns={"key": "variant"})
    bars = bars.rename(columns={f"test_{m}{end}": f"{m}{end}" for m in metric_names() for end in ("", "_low", "_high")})
    figures.metric_bars(bars, folder / "test_metrics.png", names)
    count = min(SHOWN_IMAGES, len(test_set))
    figures.qualitative_grid([test_set[i][0] for i in range(count)], [test_set[i][1] for i in range(count)],
                             shown, folder / "qualitative.png", test_set.mean.flatten(), test_set.std.flatten(), names,
                             test_set.class_names)
    provenances = {v: labels.study_provenance(config, v) for v in comparison["key"]}
    random = [names[v] for v, p in provenances.items() if p.head_random or not p.pretrained]
    unchecked = [names[v] for v, p in provenances.items() if p.head_file is not None and not p.backbone_checked]
    size = comparison["test_image_size"].iloc[0]
    sections = [
        f"# Study {config.run.name}" + (" (PARTIAL: not every trial ran)" if gaps["partial"] else ""), "",
        *partial_lines(gaps, names),
        f"{len(records)} trials over {len(comparison)} variants; each variant's best trial (highest val weighted "
        "mIoU) scored on the test split. Intervals are 95% bootstrap intervals over test images.", "",
        *([f"Random init where the paper had trained weights: {', '.join(random)}; Table 1's backbone and head "
           "columns say which part.", ""] if random else []),
        *([f"Head files without their backbone: {', '.join(unchecked)}. Each head was loaded, but its file holds no "
           "backbone tensors, so whether it was trained on this backbone is unchecked.", ""] if unchecked else []),
        suggestion_line(records, names, config.search.sampler), "",
        "## Table 1: models", "", write_table(table1, out, "table1", "Models compared"),
        "## Table 2: results on the test split", "", resolution_note(comparison), "",
        write_table(table2, out, "table2", f"Test results at {size}x{size} px (masks resized nearest)"),
        *[line for note in paper_notes for line in (note, "")],
        "## Run details", "",
        write_table(run_details_table(comparison), out, "run_details", "Run details of Table 2"),
        "GPU-hours and CPU-core-hours: each trial's seconds times the GPUs and CPU cores it reserved "
        f"({config.run.gpus_per_trial:g} and {config.run.cpus_per_trial:g}); a feature cache's build time is split "
        "equally between the variants that read it, whichever trial built it.", "",
        "## Test metrics with 95% intervals, and paired tests", "", comparison_markdown(comparison, tests, seed_note),
        "## Figures", "",
        "![learning curves](figures/learning_curves.png)", "",
        "![learning-rate landscape](figures/lr_landscape.png)", "",
        "![test metrics with 95% intervals](figures/test_metrics.png)", "",
        "![image, ground truth and each variant's prediction](figures/qualitative.png)", "",
        "Files: `table1`/`table2`/`run_details` as .csv, .md and .tex (booktabs); `comparison.csv`; `pairwise.csv`; "
        "`all_trials.csv`; `checkpoints/`.", "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(sections))
    return path
