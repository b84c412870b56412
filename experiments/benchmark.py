"""Benchmark petseg's way against the naive loop on the same six-variant search, in one run.

    python experiments/benchmark.py                          # CPU: 96 px, generated data
    python experiments/benchmark.py --size 256 --gpus-per-trial 0.5 --cpus-per-trial 4   # a GPU

Both searches run the same trials (same seeded learning rates, ASHA and early stopping off, so
every trial runs every epoch). Naive: the backbone runs on every step in fp32 and images are
decoded every epoch. petseg: backbone features computed once per backbone (fp16 cache, built in
the timed run), images decoded once, bf16 autocast on CUDA and on CPUs with native bf16. Then the model FLOP utilisation of
the head's training step and of the backbone pass, against a large matrix product timed on the
same device, and what ASHA saves on the smoke search. Writes results/benchmark.md.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from ray import tune
from torch.utils.flop_counter import FlopCounterMode

from petseg.models import VARIANTS, build_seeded_model
from petseg.study.pets import prepare_data
from petseg.train.engine import amp_enabled, autocast, default_device
from petseg.tune.config import resolve_config
from petseg.tune.results import trial_records
from petseg.tune.cluster import ray_session
from petseg.tune.runner import open_study, run_search


def parse_args(argv=None) -> argparse.Namespace:
    """Benchmark flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96, help="image size in pixels")
    parser.add_argument("--images", type=int, default=96, help="generated images (half train, a quarter val)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs every trial runs")
    parser.add_argument("--samples", type=int, default=2, help="learning rates per variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--output", default="results/benchmark.md", help="where the Markdown report goes")
    return parser.parse_args(argv)


def study(work: Path, name: str, args, **overrides) -> tuple[pd.DataFrame, float, dict]:
    """Run one quiet search in `work`; returns its trials table, the search's wall seconds and data spec.

    The wall time covers Ray's start-up and every trial (feature caches included), not the
    test-split report that follows a study, which is the same work for both ways.
    """
    values = dict(name=name, variants=list(VARIANTS), synthetic_images=args.images, image_size=args.size,
                  batch_size=args.batch_size, max_epochs=args.epochs, patience=args.epochs + 1,
                  num_samples=args.samples, pretrained=False, asha=False, cpus_per_trial=args.cpus_per_trial,
                  gpus_per_trial=args.gpus_per_trial, storage_path=str(work / "ray"),
                  results_dir=str(work / "results"), cache_dir=str(work / f"cache-{name}"))
    values.update(overrides)
    config, _ = open_study(resolve_config("paper", overrides=values), resume=False)
    with contextlib.redirect_stdout(io.StringIO()), ray_session(config):
        data = prepare_data(config)
        started = time.perf_counter()
        path = run_search(config, data)
        seconds = time.perf_counter() - started
    return trial_records(tune.ExperimentAnalysis(str(path)), config.search.max_epochs), seconds, data


def peak_flops(device: torch.device) -> float:
    """FLOP/s of a large matrix product on `device`, in the precision petseg computes in there."""
    n = 8192 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if amp_enabled(device) else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device)


def timed(step, device: torch.device, repeats: int = 7) -> float:
    """Fastest of `repeats` calls of `step` after a warm-up (the least disturbed by other load)."""
    step()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def flops_of(step) -> int:
    """FLOPs counted by PyTorch's FlopCounterMode over one call of `step`."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def utilisation(variant: str, args, device: torch.device, peak: float) -> dict:
    """Achieved FLOP/s of the cached-feature head training step and of the backbone pass, over `peak`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(variant, pretrained=False, seed=0).to(device)
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    target = torch.randint(0, 3, (args.batch_size, args.size, args.size), device=device)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-4)
    features = model.features(images)

    def backbone():
        with torch.no_grad(), autocast(device):
            model.backbone(images)

    def head_step():
        model.train()
        with autocast(device):
            logits = model.decode(features, (args.size, args.size))
        torch.nn.functional.cross_entropy(logits.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    backbone_rate = flops_of(backbone) / timed(backbone, device)
    head_rate = flops_of(head_step) / timed(head_step, device)
    return {"head_train_tflops": head_rate / 1e12, "head_train_mfu": head_rate / peak,
            "backbone_tflops": backbone_rate / 1e12, "backbone_mfu": backbone_rate / peak}


def per_variant(naive: pd.DataFrame, fast: pd.DataFrame, images_per_trial: int) -> pd.DataFrame:
    """Trial-seconds, images/s and speedup per variant."""
    rows = []
    for variant in VARIANTS:
        slow_s = naive.loc[naive.variant == variant, "seconds"].sum()
        fast_s = fast.loc[fast.variant == variant, "seconds"].sum()
        trials = int((fast.variant == variant).sum())
        rows.append({"variant": variant, "naive_s": slow_s, "petseg_s": fast_s,
                     "naive_img_per_s": trials * images_per_trial / slow_s,
                     "petseg_img_per_s": trials * images_per_trial / fast_s, "speedup": slow_s / fast_s})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    """Run both searches, the utilisation probes and the ASHA check; print and write the report."""
    args = parse_args(argv)
    device = default_device() if args.gpus_per_trial > 0 else torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="petseg-bench-") as tmp:
        work = Path(tmp)
        naive, naive_s, data = study(work, "naive", args, feature_cache=False, decoded_cache=False, amp=False)
        fast, fast_s, _ = study(work, "petseg", args)
        smoke, _, _ = study(work, "asha", args, **{k: v for k, v in resolve_config("smoke").to_dict().items()
                                                 if k not in ("name", "storage_path", "results_dir", "cache_dir")})
        smoke_max = resolve_config("smoke").max_epochs
    same_trials = sorted(naive.lr.round(12)) == sorted(fast.lr.round(12))
    same_epochs = naive.epochs.sum() == fast.epochs.sum()
    # every epoch: the training images and their offline copies, then the val images
    images_per_trial = args.epochs * (2 * len(data["split"]["train"]) + len(data["split"]["val"]))
    table = per_variant(naive, fast, images_per_trial)
    peak = peak_flops(device)
    mfu = pd.DataFrame([{"variant": v, **utilisation(v, args, device, peak)} for v in VARIANTS])
    report = render(args, device, table, mfu, peak, naive_s, fast_s, same_trials, same_epochs, smoke, smoke_max)
    print(report)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    print(f"total speedup {naive_s / fast_s:.2f}x")
    return 0


def render(args, device, table, mfu, peak, naive_s, fast_s, same_trials, same_epochs, smoke, smoke_max) -> str:
    """The Markdown report."""
    from petseg.report.tables import markdown_table

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    command = "python experiments/benchmark.py " + " ".join(sys.argv[1:])
    run = smoke.epochs.sum()
    most = len(smoke) * smoke_max
    return "\n".join([
        "# petseg benchmark", "",
        f"Command: `{command.strip()}`  ",
        f"Device: {device_name}; {args.size} px, {args.images} generated images, {args.epochs} epochs, "
        f"{args.samples} learning rates per variant, batch {args.batch_size}, "
        f"{args.cpus_per_trial:g} CPU / {args.gpus_per_trial:g} GPU per trial, random weights.", "",
        f"Same trials in both searches: {same_trials} (learning rates); same epochs run: {same_epochs}.", "",
        "## Search wall time", "",
        "| search | wall s |", "|---|---|",
        f"| naive (live backbone every step, fp32, decode every epoch) | {naive_s:.1f} |",
        f"| petseg (features once per backbone, decode once, bf16 autocast: {amp_enabled(device)}) | {fast_s:.1f} |",
        f"| **total speedup** | **{naive_s / fast_s:.2f}x** |", "",
        "## Per variant (sum of its trials' training seconds)", "",
        markdown_table(table),
        f"## Model FLOP utilisation (peak: {peak / 1e12:.3f} TFLOP/s, a large "
        f"{'bf16' if amp_enabled(device) else 'fp32'} matmul on the same device)", "",
        markdown_table(mfu),
        "## What ASHA saves on the smoke search", "",
        f"{len(smoke)} trials ran {run} epochs of a possible {most} ({100 * (1 - run / most):.0f}% saved).", "",
    ])


if __name__ == "__main__":
    sys.exit(main())
