"""Prediction time under the same conditions for every model: warm-up, device-resident images, rotating order."""
import warnings

import pytest
import torch

from petseg.train.timing import device_name, images_on_device, precision, time_predictions
from petseg.models import build_seeded_model

CPU = torch.device("cpu")


def seeded(variant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_seeded_model(variant, pretrained=False, seed=0).eval()


def test_the_same_model_timed_first_and_last_takes_about_the_same_time():
    model = seeded("denseaspp_voc")
    images = torch.randn(16, 3, 64, 64)
    # The same model under two names, scored first and last, with a different model between them.
    times = time_predictions({"first": model, "other": seeded("fcn_resnet50"), "last": model}, images,
                             batch_size=4, repeats=5, amp=False)
    first, last = times["first"]["seconds"], times["last"]["seconds"]
    assert 0.7 < first / last < 1.4, times
    for entry in times.values():
        assert entry["seconds_min"] <= entry["seconds"] <= entry["seconds_max"]
        assert entry["ms_per_image"] == pytest.approx(1000 * entry["seconds"] / 16)
        assert entry["repeats"] == 5 and entry["images"] == 16


def test_models_are_warmed_up_and_timed_in_rotating_order(monkeypatch):
    import petseg.train.timing as timing

    calls = []
    monkeypatch.setattr(timing, "predict_all", lambda model, images, batch, amp=True: calls.append((model, len(images))))
    models = {"a": "A", "b": "B", "c": "C"}
    timing.time_predictions(models, torch.zeros(8, 3, 4, 4), batch_size=2, repeats=3, warmup_batches=1)
    assert calls[:3] == [("A", 2), ("B", 2), ("C", 2)]  # one untimed warm-up batch each, first
    timed = [model for model, count in calls[3:]]
    assert timed == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]  # each model first once
    assert all(count == 8 for _, count in calls[3:])  # a timed pass predicts every image


def test_images_are_put_on_the_device_before_timing(pet_root):
    from petseg.data import build_datasets

    test = build_datasets(pet_root, 32, None)["test"]
    images = images_on_device(test, CPU)
    assert images.shape == (len(test), 3, 32, 32) and images.device == CPU
    torch.testing.assert_close(images[1], test[1][0])


def test_conditions_are_named():
    assert "threads" in device_name(CPU)
    assert precision(CPU, amp=False) == "fp32"
    with pytest.raises(ValueError, match="repeats"):
        time_predictions({"a": seeded("denseaspp_voc")}, torch.zeros(2, 3, 8, 8), 2, repeats=0)
