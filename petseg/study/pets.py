"""The study (Oxford-IIIT Pet, a folder dataset or any registered study dataset): the data spec and head files
checked in the driver, one Tune run over every variant (fair per variant), optional seed repeats, then the report."""
from __future__ import annotations

from pathlib import Path

from ray import tune

from ..data import DataSpec, get_source, make_data_spec
from ..errors import DatasetError, StudyError
from ..report import analysis
from ..report.results_folder import check_results_folder, read_marker
from ..train.trial_spec import Searched
from ..tune.config import (SEEDS_SUFFIX, StudyConfig, check_head_files, missing_heads, missing_heads_message,
                           resolve_head_weights)
from ..tune.results import best_trials, trial_records
from ..tune.runner import experiment_path, run_search
from ..tune.storage import Location
from .session import study_run


def dataset_root(config: StudyConfig) -> Path:
    """The dataset root: generated under the cache dir (smoke preset), or config.search.data_root."""
    search = config.search
    if search.synthetic_images:
        return Path(config.run.cache_dir).expanduser().resolve() / "synthetic" / (
            f"{search.dataset}-{search.synthetic_images}-{search.image_size}-{search.seed}")
    if search.data_root is None:
        raise StudyError(f"no dataset: pass --data-root DIR ({get_source(search.dataset).root_help}) or use "
                         "--preset smoke for a generated dataset")
    root = Path(search.data_root).expanduser().resolve()
    if not root.is_dir() and not search.download:
        raise StudyError(f"data root {root} does not exist; pass {get_source(search.dataset).root_help}")
    return root


def prepare_data(config: StudyConfig) -> DataSpec:
    """The data spec every trial reads: the tree (generated, downloaded or given), its checked files and split,
    the training set's statistics; a DatasetError becomes a StudyError naming the file."""
    search = config.search
    synthetic = ({"num_images": search.synthetic_images, "size": search.image_size, "seed": search.seed}
                 if search.synthetic_images else None)
    try:
        return make_data_spec(search.dataset, dataset_root(config), size=search.image_size, augment=search.augment,
                              seed=search.seed, download=search.download, synthetic=synthetic,
                              cache_dir=config.run.cache_dir, decoded_cache=search.decoded_cache,
                              split_ratio=tuple(search.split_ratio))
    except DatasetError as err:
        raise StudyError(str(err)) from err


def run_study(config: StudyConfig, resume: bool = False) -> Path:
    """Run (or resume) the study and write results/<name>/; returns that folder.

    Everything that can stop it is checked before any file is written: the folders, the cluster address
    and a trial's resources, the head files and the dataset. An interrupted search raises SearchInterrupted
    and writes no comparison.
    """
    def check(config: StudyConfig, path: Location) -> StudyConfig:
        check_results_folder(results_folder(config), str(path), config.run.overwrite)  # not after the training
        if not resume:  # found once here, so every trial and the analysis use the same files (a resume keeps them)
            config = config.replace(head_weights=resolve_head_weights(config))
            missing = missing_heads(config, config.search.head_weights)
            if missing and not config.search.allow_random_heads:
                raise StudyError(missing_heads_message(config, missing))
            dataset_root(config)  # a missing data root is named before Ray starts
        return config.replace(head_backbone_checked=check_head_files(config))

    with study_run(config, prepare_data, resume, check) as run:
        config, path, data = run.config, run.path, run.data
        run_search(config, data, resume)
        seeds_path = None
        if config.search.seeds:
            seeds_config = seeds_study(config)
            seeds_path = experiment_path(seeds_config)
            resume_seeds = tune.Tuner.can_restore(seeds_path.path, storage_filesystem=seeds_path.filesystem)
            run_search(seeds_config, data, resume_seeds, fixed=seed_trials(config, path))
        results = analysis.write_report(config, data, path, seeds_path)
        print(analysis.console_summary(results), flush=True)
        if not read_marker(results).get("trials_scored"):
            raise StudyError(f"no trial of any variant finished with a checkpoint, so nothing was compared; each "
                             f"trial's error is in {results / 'all_trials.csv'}")
        return results


def results_folder(config: StudyConfig) -> Path:
    """results/<name>/, where the study's report goes."""
    return Path(config.run.results_dir).expanduser().resolve() / config.run.name


def seeds_study(config: StudyConfig) -> StudyConfig:
    """The config of a study's seed repeats: its own Ray experiment, <name>-seeds, with no ASHA."""
    return config.replace(name=config.run.name + SEEDS_SUFFIX, asha=False)


def seed_trials(config: StudyConfig, path: Location) -> list[dict]:
    """Each variant's best searched values (by val weighted mIoU) retrained with seeds seed+1 .. seed+N."""
    experiment = tune.ExperimentAnalysis(path.path, storage_filesystem=path.filesystem)
    best = best_trials(experiment, trial_records(experiment, config.search.max_epochs, path.filesystem))
    return [{"variant": variant, **Searched.from_json(record).given(), "seed": config.search.seed + k}
            for variant, (_, record) in best.items() for k in range(1, config.search.seeds + 1)]
