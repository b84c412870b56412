"""The --dry-run estimate of the trial checkpoints' disk against what a compacted checkpoint really takes."""
import warnings

import torch
from ray import tune

from petseg.models import build_seeded_model
from petseg.models.checkpoints import ENDED_STATE_FILE, compact_ended_state, save_trial_state
from petseg.tune.config import resolve_config
from petseg.tune.storage_estimate import checkpoint_estimate, describe_estimate, head_bytes


def test_an_ended_denseaspp_trial_takes_what_the_estimate_says(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model("denseaspp_voc", pretrained=False, seed=0)
    head = model.head.state_dict()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1, momentum=0.9)
    model.head(torch.randn(1, 1024, 8, 8)).sum().backward()
    optimizer.step()
    state = {"head": head, "optimizer": optimizer.state_dict(), "scheduler": {},
             "progress": {"epoch": 1, "best_head": {k: v.clone() for k, v in head.items()}}}
    save_trial_state(tmp_path, state, {"variant": "denseaspp_voc"})
    running = (tmp_path / "state.pt").stat().st_size
    compact_ended_state(tune.Checkpoint.from_directory(str(tmp_path)))
    ended = (tmp_path / ENDED_STATE_FILE).stat().st_size
    assert abs(ended - 2 * head_bytes("denseaspp_voc")) < 0.02 * ended
    assert abs(running - ended - head_bytes("denseaspp_voc")) < 0.02 * running  # the momentum: one more head


def test_the_estimate_counts_every_trial_and_seed_repeat_of_every_variant():
    config = resolve_config("smoke", overrides={"num_samples": 3, "seeds": 2,
                                                "variants": ["fcn_resnet50", "denseaspp_voc"]})
    ended, per_running = checkpoint_estimate(config)
    assert ended == 5 * 2 * (head_bytes("fcn_resnet50") + head_bytes("denseaspp_voc"))
    assert per_running == head_bytes("fcn_resnet50") and "once every trial has ended" in describe_estimate(config)
