"""What the search driver itself costs per trial: its CPU seconds and the bytes it writes, with many short trials.

    python experiments/driver_overhead.py --label after          # 200 one-epoch trials (a few minutes on 2 cores)
    python experiments/driver_overhead.py --trials 10 --label check --output /tmp/overhead.md   # a quick check
    cd /tmp/before && PYTHONPATH=$PWD python experiments/driver_overhead.py --label before \
        --output /path/to/petseg/results/driver_overhead.md          # another checkout (this script copied in)

One search through petseg's own runner (`run_search`, the trainable and the Tune settings a study uses) of
--trials fixed trials of the smoke preset's data (24 generated images at 64 px, cached features) for one
variant and --epochs epochs each, one CPU per trial. Measured in the driver process around the search only:
CPU seconds (user + system, all its threads), bytes it caused to be written to disk (/proc/self/io
write_bytes: the experiment state, searcher and logger files, their copies to the storage path), how many
times the experiment state file on the storage path changed (polled every 5 ms by a separate process, so
very close writes may count once), and the experiment folder's size at the end. Each --label's numbers are
kept in the JSON file beside --output and the markdown is rewritten from all of them, so a run of the code
before a change and one after end up in one table. To measure another checkout, run from it with PYTHONPATH
pointing at it: Ray's workers import petseg from the driver's working directory.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A separate process, so the polling costs the measured driver nothing: it counts the changes of the experiment
# state file(s) under a folder until SIGTERM, then prints the count.
POLLER = r"""
import glob, os, signal, sys, time
folder, changes, seen, paths, last_scan = sys.argv[1], 0, {}, [], 0.0
def stop(*_):
    print(changes, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    if time.monotonic() - last_scan > 0.5:
        paths, last_scan = glob.glob(os.path.join(folder, "experiment_state-*.json")), time.monotonic()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if seen.get(path) != stamp:
            seen[path], changes = stamp, changes + 1
    time.sleep(0.005)
"""


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="trials in the search (default 200)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--variant", default="denseaspp_voc", help="the variant every trial trains")
    parser.add_argument("--label", required=True, help="the row's name, e.g. before / after")
    parser.add_argument("--output", type=Path, default=REPO / "results" / "driver_overhead.md",
                        help="the markdown report; its runs are kept in the .json beside it")
    parser.add_argument("--work", type=Path, help="folder for the study's files (default: a temporary one, removed)")
    return parser.parse_args(argv)


def io_written() -> tuple[int, int]:
    """(write_bytes, cancelled_write_bytes) of this process so far."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["write_bytes"]), int(fields["cancelled_write_bytes"])


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(args, work: Path) -> dict:
    """One search of args.trials fixed one-variant trials; the driver's CPU, writes and snapshots during it."""
    from ray import tune

    from petseg.study.pets import prepare_data
    from petseg.tune.cluster import ray_session
    from petseg.tune.config import resolve_config
    from petseg.tune.runner import open_study, run_search

    values = {"name": "overhead", "variants": [args.variant], "max_epochs": args.epochs, "patience": args.epochs + 1,
              "num_samples": args.trials, "storage_path": str(work / "ray"), "results_dir": str(work / "results"),
              "cache_dir": str(work / "cache"), "cpus_per_trial": 1.0}
    config, path = open_study(resolve_config("smoke", overrides=values), resume=False)
    # Distinct learning rates, as a search would hand out, in a fixed list: no searcher cost in the driver.
    trials = [{"variant": args.variant, "lr": 1e-4 * 100 ** (index / max(1, args.trials - 1))}
              for index in range(args.trials)]
    path.mkdir(parents=True, exist_ok=True)
    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(path)], stdout=subprocess.PIPE, text=True)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), ray_session(config):
            data = prepare_data(config)
            load = os.getloadavg()[0]
            cpu, (written, cancelled), wall = cpu_seconds(), io_written(), time.perf_counter()
            run_search(config, data, fixed=trials)
            cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
            load = (load, os.getloadavg()[0])
            written, cancelled = (now - before for now, before in zip(io_written(), (written, cancelled)))
    finally:
        poller.send_signal(signal.SIGTERM)
        snapshots = int(poller.communicate(timeout=30)[0].strip() or 0)
    statuses = [trial.status for trial in tune.ExperimentAnalysis(str(path)).trials]
    return {"trials": args.trials, "epochs": args.epochs, "variant": args.variant,
            "terminated": statuses.count("TERMINATED"), "wall_s": wall, "driver_cpu_s": cpu,
            "driver_write_bytes": written, "driver_cancelled_write_bytes": cancelled,
            "state_file_changes": snapshots, "experiment_bytes": folder_bytes(path), "load_average": load}


def code_version(folder: Path) -> str:
    """The commit of the petseg checkout measured (and whether it had changes)."""
    def git(*words):
        return subprocess.run(["git", "-C", str(folder), *words], capture_output=True, text=True).stdout.strip()
    changed = " (with changes)" if git("status", "--porcelain", "--", "petseg") else ""
    return git("rev-parse", "--short", "HEAD") + changed


def render(runs: dict) -> str:
    """The markdown report of every labelled run."""
    lines = ["# Driver overhead of a search", "",
             "Written by `experiments/driver_overhead.py` (see its docstring for what is measured). Per trial: "
             "the driver's CPU seconds and the bytes it wrote during the search, divided by the trials.", "",
             "| run | petseg code | trials x epochs | wall s | driver CPU s | CPU s / trial | written MiB | "
             "written KiB / trial | state file changes | experiment folder MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, run in runs.items():
        trials = run["trials"]
        lines.append(f"| {label} | {run['code']} | {trials} x {run['epochs']} | {run['wall_s']:.0f} | "
                     f"{run['driver_cpu_s']:.1f} | {run['driver_cpu_s'] / trials:.3f} | "
                     f"{run['driver_write_bytes'] / 2**20:.1f} | {run['driver_write_bytes'] / 2**10 / trials:.1f} | "
                     f"{run['state_file_changes']} | {run['experiment_bytes'] / 2**20:.1f} |")
    lines.append("")
    for label, run in runs.items():
        lines += [f"- **{label}**: `{run['command']}` on {run['machine']}, 1-minute load average "
                  f"{run['load_average'][0]:.1f} at the start and {run['load_average'][1]:.1f} at the end (the machine "
                  f"is shared); {run['terminated']} of {run['trials']} trials finished; "
                  f"{run['driver_cancelled_write_bytes'] / 2**20:.1f} MiB of the writes were cancelled (files deleted "
                  "before they reached the disk)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Entry point; returns the process exit code."""
    import torch

    from petseg.train.timing import device_name

    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="petseg-overhead-")))
        run = measure(args, work)
    import petseg

    run.update(code=code_version(Path(petseg.__file__).parents[1]), machine=device_name(torch.device("cpu")),
               command=" ".join([*([f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []),
                                 shlex.join(["python", "experiments/driver_overhead.py",
                                             *(sys.argv[1:] if argv is None else argv)])]))
    store = args.output.with_suffix(".json")
    runs = json.loads(store.read_text()) if store.is_file() else {}
    runs[args.label] = run
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(runs, indent=1) + "\n")
    args.output.write_text(render(runs))
    print(render({args.label: run}))
    return 0 if run["terminated"] == run["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
