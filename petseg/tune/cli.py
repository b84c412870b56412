"""Flags every search script shares (where and how trials run), so they read the same everywhere."""
from __future__ import annotations

import argparse
import os


def add_runner_flags(parser: argparse.ArgumentParser) -> None:
    """--address, --storage-path, --name, --results-dir, --num-samples, --max-epochs, --image-size, resources, cache,
    --resume."""
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage-path", help="where Ray keeps trials, checkpoints and TensorBoard logs")
    parser.add_argument("--name", help="name of the search: results/<name>/ and the Ray experiment folder")
    parser.add_argument("--results-dir", help="where results/<name>/ goes (default: results)")
    parser.add_argument("--num-samples", type=int, help="learning rates tried per variant")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial at most")
    parser.add_argument("--image-size", type=int, help="side length images are resized to, in pixels (default 256; "
                        "the paper's figures are shown beside a study only at 256)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions allowed, e.g. 0.25)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    parser.add_argument("--max-pending-trials", type=int, metavar="N", help="trials kept waiting for resources "
                        "beyond those the cluster's nodes fit, so an autoscaler adds nodes for them (default: one "
                        "node's worth with --address, 0 on the local Ray); each is suggested before the running "
                        "trials' results, so closer to random")
    parser.add_argument("--cache-dir", help="where backbone features, decoded images and generated data are kept "
                        "(default $PETSEG_CACHE or ~/.cache/petseg); `python -m petseg.train.features` lists or clears it")
    parser.add_argument("--cache-budget", metavar="SIZE", help="peak disk for the backbones' feature caches, e.g. "
                        "64G: backbones are cached (and deleted) one after another to stay within it (default: 80%% of "
                        "the cache disk's free space)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="clear results/<name>/ when it holds another study's results (refused otherwise)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name "
                        "(found under --storage-path; its saved search settings win, the run flags apply)")
    parser.add_argument("-v", "--verbose", action="store_true", default=None,
                        help="Ray's and Tune's own console output and every trial's log lines (always in the "
                        "experiment folder)")
    parser.add_argument("--verify-data", action="store_true", default=None,
                        help="identify the dataset's files by their contents (sha256) as well as size and modification "
                        "time, so caches notice files changed in place with their mtime kept (reads every file once "
                        "per process)")
    parser.add_argument("--local-gpus", type=float, help="GPUs the local Ray advertises (default: those it finds)")
    parser.add_argument("--ray-metrics", action="store_true", default=None,
                        help="keep the local Ray's Prometheus metrics export (off by default; it listens on every "
                        "interface)")
    parser.add_argument("--allow-unauthenticated-ray", action="store_true", default=None,
                        help="run the local Ray even with RAY_AUTH_MODE=disabled (only on a closed network)")


def runner_overrides(args: argparse.Namespace) -> dict:
    """The config overrides of add_runner_flags' flags (None where not given)."""
    return {"address": args.address or os.environ.get("RAY_ADDRESS"), "storage_path": args.storage_path,
            "name": args.name, "results_dir": args.results_dir, "num_samples": args.num_samples,
            "max_epochs": args.max_epochs, "image_size": args.image_size, "gpus_per_trial": args.gpus_per_trial,
            "cpus_per_trial": args.cpus_per_trial,
            "max_pending_trials": args.max_pending_trials, "cache_dir": args.cache_dir, "cache_budget": args.cache_budget,
            "verbose": args.verbose,
            "local_gpus": args.local_gpus, "ray_metrics": args.ray_metrics, "verify_data": args.verify_data,
            "allow_unauthenticated_ray": args.allow_unauthenticated_ray, "overwrite": args.overwrite}
