"""Plain-Python training: the engine, the optimiser recipes, resuming, and learnability."""
import math
import warnings

import pytest
import torch

from petseg.data import build_datasets
from petseg.train.engine import NonFiniteLossError, evaluate, train_one_epoch
from petseg.metrics import confusion_matrix, scores
from petseg.synthetic import write_dataset
from petseg.models import build_seeded_model
from petseg.train.training import fit, make_loader, make_optimizer
from petseg.train.trial_spec import Searched, TrialSpec


@pytest.fixture(scope="module")
def learn_datasets(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("learn"), num_images=40, size=64, seed=1)
    return build_datasets(root, 64, None, augment="offline", seed=0)


def spec(lr=1e-3, weight_decay=None, **settings) -> TrialSpec:
    """denseaspp_voc, random init, seed 0, with `settings` over 3 epochs of batch 4 and patience 3."""
    return TrialSpec(**{"variant": "denseaspp_voc", "searched": Searched(lr, weight_decay), "seed": 0,
                        "max_epochs": 3, "batch_size": 4, "patience": 3, "pretrained": False, **settings})


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(*args, **kwargs)


def test_learnability_beats_majority_class(learn_datasets):
    """A head trained on generated data beats predicting the majority class everywhere, by far."""
    masks = torch.stack([mask for _, mask in learn_datasets["val"]])
    majority = torch.bincount(masks.flatten(), minlength=3).argmax()
    baseline = scores(confusion_matrix(torch.full_like(masks, majority), masks, 3))
    history = []
    quiet_fit(spec(max_epochs=4, patience=4), learn_datasets,
              report=lambda metrics, state, model: history.append(metrics))
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # Any image-independent prediction scores pet IoU 0 and mIoU near the baseline (~0.23 here);
    # a 0.15 gain on 10 val images x 4096 pixels needs pet pixels actually found.
    final = history[-1]
    assert final["val_mean_iou"] > baseline["mean_iou"] + 0.15
    assert final["val_weighted_iou"] > baseline["weighted_iou"] + 0.1


def test_resume_from_state_continues_the_same_run(learn_datasets):
    """Three epochs straight equal two epochs, a restart from the saved state, and one more."""
    straight, states = [], []
    quiet_fit(spec(), learn_datasets, report=lambda m, s, _: straight.append(m))

    def stop_after_two(metrics, state, model):
        states.append({k: (v if k != "head" else {n: t.clone() for n, t in v.items()}) for k, v in state.items()})
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet_fit(spec(), learn_datasets, report=stop_after_two)
    resumed = []
    quiet_fit(spec(), learn_datasets, report=lambda m, s, _: resumed.append(m), state=states[-1])
    assert [m["epoch"] for m in resumed] == [3]
    assert resumed[0]["val_loss"] == pytest.approx(straight[2]["val_loss"], rel=1e-4)


def test_early_stopping_on_val_loss(learn_datasets, monkeypatch):
    """With patience 2, val losses 1.0, 0.9, 0.95, 0.97 stop the trial after epoch 4."""
    import petseg.train.training

    real_evaluate = petseg.train.training.evaluate
    val_losses = iter([1.0, 0.9, 0.95, 0.97, 0.5, 0.4])

    def scripted(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "loss": next(val_losses)}

    monkeypatch.setattr(petseg.train.training, "evaluate", scripted)
    history = []
    quiet_fit(spec(max_epochs=6, batch_size=8, patience=2), learn_datasets, report=lambda m, s, _: history.append(m))
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    assert [m["early_stopped"] for m in history] == [False, False, False, True]


@pytest.mark.parametrize("variant,kind", [("denseaspp_voc", torch.optim.Adam), ("fcn_resnet50", torch.optim.SGD)])
def test_optimiser_recipe_and_poly_decay(variant, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(variant, pretrained=False, seed=0)
    optimizer, scheduler = make_optimizer(model, variant, Searched(0.01), total_steps=10)
    assert isinstance(optimizer, kind)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for p in model.head.parameters())
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[4] == pytest.approx(0.01 * (1 - 5 / 10) ** 0.9)
    assert all(a > b for a, b in zip(lrs, lrs[1:-1]))


def test_non_finite_loss_stops_with_reason(learn_datasets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model("denseaspp_voc", pretrained=False, seed=0)
    with torch.no_grad():
        model.head.block[1].weight.fill_(math.inf)
    optimizer, _ = make_optimizer(model, "denseaspp_voc", Searched(1e-3), total_steps=10)
    loader = make_loader(learn_datasets["train"], 4, train=True)
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        train_one_epoch(model, loader, optimizer, torch.device("cpu"))


def test_seeded_models_are_identical_and_evaluation_is_whole_split(learn_datasets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = build_seeded_model("denseaspp_voc", pretrained=False, seed=3)
        second = build_seeded_model("denseaspp_voc", pretrained=False, seed=3)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    result = evaluate(first, make_loader(learn_datasets["val"], 3, train=False), torch.device("cpu"), 3)
    pixels = len(learn_datasets["val"]) * 64 * 64
    assert result["confusion_matrix"].sum() == pixels


@pytest.mark.parametrize("variant,own", [("denseaspp_voc", 1e-5), ("fcn_resnet50", 1e-4)])
def test_the_optimiser_takes_a_searched_weight_decay_and_keeps_its_recipes_own_otherwise(variant, own):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(variant, pretrained=False, seed=0)
    searched, _ = make_optimizer(model, variant, Searched(0.01, 3e-3), total_steps=10)
    kept, _ = make_optimizer(model, variant, Searched(0.01), total_steps=10)
    assert [group["weight_decay"] for group in searched.param_groups] == [3e-3]
    assert [group["weight_decay"] for group in kept.param_groups] == [own]


def test_fit_trains_the_spec_and_reports_its_searched_values(learn_datasets, tmp_path):
    history = []
    quiet_fit(spec(weight_decay=2e-4, max_epochs=1, feature_cache=False), learn_datasets,
              report=lambda m, s, _: history.append((m, s)), feature_cache_dir=str(tmp_path))
    (metrics, state), = history
    assert metrics["lr"] == 1e-3 and metrics["weight_decay"] == 2e-4
    assert [group["weight_decay"] for group in state["optimizer"]["param_groups"]] == [2e-4]
    assert metrics["features"] == "live" and not any(tmp_path.iterdir())  # the spec said no feature cache
