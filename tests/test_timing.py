"""Prediction time under the same conditions for every model: warm-up, device-resident images, rotating order.

The protocol is checked on a fake clock that moves only when a stub model predicts, so no test reads wall time."""
import warnings

import pytest
import torch
from torch import nn

from petseg.train.timing import device_name, images_on_device, precision, time_predictions
from petseg.models import build_seeded_model

CPU = torch.device("cpu")


def seeded(variant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_seeded_model(variant, pretrained=False, seed=0).eval()


class FakeClock:
    """time.perf_counter's stand-in: time moves only when a Stub predicts; every read and batch is logged."""

    def __init__(self):
        self.now, self.reads, self.log = 0.0, 0, []

    def __call__(self) -> float:
        self.reads += 1
        self.log.append("read")
        return self.now

    @property
    def timed_pass(self) -> int:
        """The index of the timed pass under way (reads come in pairs around each pass); -1 before any."""
        return (self.reads - 1) // 2


class Stub(nn.Module):
    """A model that logs each batch it predicts and charges cost(clock) fake seconds for it."""

    def __init__(self, name, clock, cost):
        super().__init__()
        self.name, self.clock, self.cost = name, clock, cost

    def forward(self, batch):
        self.clock.log.append((self.name, batch.clone()))
        self.clock.now += self.cost(self.clock)
        return torch.zeros(len(batch), 3, *batch.shape[2:])


WARMUP_SECONDS = 100.0  # what a stub charges for a batch predicted before the first clock read


def timed(models, clock, repeats, images=None, warmup_batches=1):
    images = torch.arange(8 * 3 * 2 * 2, dtype=torch.float32).reshape(8, 3, 2, 2) if images is None else images
    return images, time_predictions(models, images, batch_size=4, repeats=repeats, warmup_batches=warmup_batches,
                                    amp=False, clock=clock)


def test_warm_up_batches_run_before_the_clock_and_are_not_counted():
    clock = FakeClock()
    cost = lambda c: WARMUP_SECONDS if c.reads == 0 else 0.5  # noqa: E731
    models = {name: Stub(name, clock, cost) for name in ("a", "b")}
    images, times = timed(models, clock, repeats=2, warmup_batches=1)
    warmup = clock.log[:clock.log.index("read")]
    assert [name for name, _ in warmup] == ["a", "b"]  # one warm-up batch per model, all before any timing
    assert all(torch.equal(batch, images[:4]) for _, batch in warmup)
    assert all(entry["seconds"] == entry["seconds_max"] == 1.0 for entry in times.values())  # 2 batches x 0.5 s


def test_every_timed_pass_predicts_the_same_images_between_two_clock_reads():
    clock = FakeClock()
    models = {name: Stub(name, clock, lambda c: 0.5) for name in ("a", "b", "c")}
    images, _ = timed(models, clock, repeats=3, warmup_batches=0)
    log = "".join("|" if entry == "read" else "x" for entry in clock.log)
    assert log == "|xx|" * 9  # 3 models x 3 repeats, each pass two batches bracketed by clock reads
    batches = [entry for entry in clock.log if entry != "read"]
    for start in range(0, len(batches), 2):
        (first, one), (second, two) = batches[start:start + 2]
        assert first == second and torch.equal(torch.cat([one, two]), images)


def test_a_model_s_time_is_the_median_of_its_passes():
    clock = FakeClock()
    per_batch = [2.5, 0.5, 1.0]  # passes of 5, 1 and 2 s (two batches each): median 2, mean 2.67
    cost = lambda c: WARMUP_SECONDS if c.reads == 0 else per_batch[c.timed_pass]  # noqa: E731
    _, times = timed({"a": Stub("a", clock, cost)}, clock, repeats=3)
    assert times["a"] == {"seconds": 2.0, "seconds_min": 1.0, "seconds_max": 5.0, "ms_per_image": 1000 * 2.0 / 8,
                          "images": 8, "repeats": 3}


def test_the_same_model_timed_first_and_last_gets_the_same_time():
    # Whatever runs first in a round pays 2 s per batch more (say, caches cold after the round's bookkeeping):
    # rotating the order gives every model that slot once, so the median is the same for the same model.
    clock = FakeClock()
    cost = lambda c: WARMUP_SECONDS if c.reads == 0 else 0.5 + (2.0 if c.timed_pass % 3 == 0 else 0.0)  # noqa: E731
    model = Stub("m", clock, cost)
    _, times = timed({"first": model, "other": Stub("o", clock, cost), "last": model}, clock, repeats=3)
    for entry in times.values():
        assert (entry["seconds"], entry["seconds_min"], entry["seconds_max"]) == (1.0, 1.0, 5.0)


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
