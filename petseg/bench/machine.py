"""The machine a benchmark ran on, in the words its report gives: CPU, cores, threads, GPU, library versions."""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

from ..train.engine import cpu_has_native_bf16
from ..train.timing import cpu_fields, cpu_model


def training_machine(device: torch.device, trial_threads: int) -> str:
    """CPU model, native bf16, cores, torch threads, the GPU when on CUDA, and the library versions."""
    import ray
    import torchvision

    gpu = f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "no GPU used"
    return (f"{cpu_model()}, native bf16: {'yes' if cpu_has_native_bf16() else 'no'}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()} in the driver and {trial_threads} per trial; {gpu}; "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, ray {ray.__version__}")


def sampler_machine() -> str:
    """CPU model (family, model, whether virtual), cores, load, torch threads, and Optuna's and torch's versions."""
    import optuna

    fields = cpu_fields()
    model = "unknown CPU"
    if fields:
        model = (f"{fields.get('model name', model)} (family {fields.get('cpu family', '?')}, model "
                 f"{fields.get('model', '?')}{', virtual machine' if 'hypervisor' in fields.get('flags', '') else ''})")
    greenlet = "present" if importlib.util.find_spec("greenlet") else "absent (GP optimises its acquisition sequentially)"
    return (f"{model}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the start), "
            f"{torch.get_num_threads()} torch thread(s); Optuna {optuna.__version__}, torch {torch.__version__}, "
            f"Python {sys.version.split()[0]}; greenlet {greenlet}")
