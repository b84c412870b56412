"""The typed trial spec: its JSON form in a trial's Tune config, older studies' flat configs, and what a study's
config puts into every trial."""
import math

import pandas as pd
import pytest

from petseg.train.trial_spec import Searched, TrialSpec
from petseg.tune.config import resolve_config

SPEC = TrialSpec("denseaspp_voc", Searched(2e-4, 3e-5), seed=7, max_epochs=5, batch_size=4, patience=2,
                 pretrained=True, amp=False, feature_cache=False, head_weights="/heads/denseaspp_voc-1234abcd.pth",
                 variant_sources=("mine:variant",), plugins=("my_plugin",))


def test_a_spec_reads_back_what_it_wrote():
    saved = SPEC.to_json()
    assert saved["lr"] == 2e-4 and saved["weight_decay"] == 3e-5  # flat: config/lr stays a result column
    assert TrialSpec.from_json(saved) == SPEC
    lr_only = TrialSpec("fcn_resnet50", Searched(1e-2), seed=0, max_epochs=10, batch_size=8, patience=3,
                        pretrained=True)
    assert "weight_decay" not in lr_only.to_json() and lr_only.to_json()["head_weights"] == {}
    assert TrialSpec.from_json(lr_only.to_json()) == lr_only


def test_an_older_studys_flat_trial_config_reads_as_a_spec():
    # As a study saved it before the spec: every variant's head file, the searcher's keys, no amp / feature_cache.
    old = {"max_epochs": 10, "batch_size": 8, "patience": 3, "pretrained": True, "seed": 0,
           "head_weights": {"denseaspp_voc": "/h/voc.pth", "denseaspp_ade20k": "/h/ade.pth"},
           "variant": "denseaspp_ade20k", "lr": 1.5e-3, "suggested_by": "gp"}
    spec = TrialSpec.from_json(old)
    assert spec.searched == Searched(1.5e-3) and spec.head_weights == "/h/ade.pth"
    assert (spec.amp, spec.feature_cache, spec.variant_sources, spec.plugins) == (True, True, (), ())
    with pytest.raises(ValueError, match="lacks patience"):
        TrialSpec.from_json({key: value for key, value in old.items() if key != "patience"})


def test_a_studys_trial_config_carries_its_settings_into_the_spec():
    config = resolve_config("smoke", overrides={"max_epochs": 4, "seed": 3, "amp": False,
                                                "head_weights": {"denseaspp_voc": "/h/voc.pth"}})
    spec = TrialSpec.from_json({**config.trial_params(), "variant": "denseaspp_voc", "lr": 1e-3})
    assert (spec.max_epochs, spec.seed, spec.amp, spec.batch_size) == (4, 3, False, config.search.batch_size)
    assert spec.head_weights == "/h/voc.pth" and spec.searched == Searched(1e-3)


def test_a_results_record_without_a_searched_weight_decay_gives_the_lr_alone():
    record = pd.Series({"variant": "a", "lr": 1e-3, "weight_decay": math.nan, "seed": 0})
    assert Searched.from_json(record).given() == {"lr": 1e-3}
    assert Searched.from_json({"lr": 1e-3, "weight_decay": 2e-5}).describe() == "lr=1.00e-03 weight_decay=2.00e-05"
    with pytest.raises(ValueError, match="need an lr"):
        Searched.from_json({"weight_decay": 2e-5})
