"""Head pretraining end to end: generated VOC+SBD and ADE20K -> pretrain_heads.py -> checkpoints the study loads."""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from petseg.train.engine import evaluate, train_one_epoch
from petseg.models import VARIANTS, HeadWeightsError, build_seeded_model, find_head_weights
from petseg.models.checkpoints import public_head_state, save_head_file
from petseg.models.denseaspp import DenseASPPHead, DilatedDenseNet
from petseg.data import IGNORE
from petseg.synthetic import write_ade20k, write_sbd, write_voc

REPO = Path(__file__).resolve().parents[1]
SIZE, IMAGES = 48, 12
HEADS = {"voc": ("denseaspp_voc", "cutdenseaspp_voc"), "ade20k": ("denseaspp_ade20k", "cutdenseaspp_ade20k")}
CLASSES = {"voc": 21, "ade20k": 150}

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised:UserWarning")


def load_script(name: str):
    """An experiments/ script as a module, so its main() runs in this process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pretrain(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """pretrain_heads.py on tiny settings, every output under `folder` (heads in folder/heads)."""
    command = [sys.executable, str(REPO / "experiments" / "pretrain_heads.py"), "--no-pretrained",
               "--image-size", str(SIZE), "--batch-size", "4", "--num-samples", "1", "--max-epochs", "2",
               "--cpus-per-trial", "1", "--storage-path", str(folder / "ray"), "--cache-dir", str(folder / "cache"),
               "--output", str(folder / "heads"), *args]
    env = {**os.environ, "TORCH_HOME": str(folder / "torch")}  # never touch the user's weights cache
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both datasets pretrained into one heads folder: VOC from given VOC + SBD roots, ADE20K via --synthetic."""
    folder = tmp_path_factory.mktemp("pretrain")
    data = folder / "data"
    write_voc(data / "voc", IMAGES, SIZE, seed=0)
    write_sbd(data / "sbd", IMAGES, SIZE, seed=0)
    done = {"voc": pretrain(folder, "--dataset", "voc", "--data-root", str(data / "voc"),
                            "--sbd-root", str(data / "sbd")),
            "ade20k": pretrain(folder, "--dataset", "ade20k", "--synthetic", str(IMAGES))}
    for run in done.values():
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return folder, done


@pytest.mark.parametrize("dataset", ["voc", "ade20k"])
def test_checkpoints_are_hashed_public_layout_with_the_right_classes(runs, dataset):
    folder, done = runs
    table = pd.read_csv(folder / "results" / f"heads_{dataset}" / "pretrained_heads.csv")
    assert list(table["variant"]) == list(HEADS[dataset])
    assert table["val_mean_iou"].between(0, 1).all() and table["val_pixel_accuracy"].between(0, 1).all()
    assert (table["epochs"] >= 1).all() and (table["best_lr"] > 0).all()
    assert set(table["dataset"]) == {"voc+sbd" if dataset == "voc" else "ade20k"}
    markdown = (folder / "results" / f"heads_{dataset}" / "pretrained_heads.md").read_text()
    assert markdown.strip() in done[dataset].stdout  # the table printed is the one written

    for variant, file in zip(table["variant"], table["file"]):
        path = Path(file)
        assert path.parent == folder / "heads" and path.name.startswith(f"{variant}-")
        assert path.name == f"{variant}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth"
        state = torch.load(path, weights_only=True)
        backbone = DilatedDenseNet(161 if variant.startswith("cut") else 121)
        head = DenseASPPHead(backbone.out_channels, CLASSES[dataset], (3, 6, 12) if variant.startswith("cut")
                             else (3, 6, 12, 18, 24))
        expected = {**{f"features.{k}": v.shape for k, v in backbone.features.state_dict().items()},
                    **{f"head.{k}": v.shape for k, v in head.state_dict().items()}}
        assert {k: v.shape for k, v in state.items()} == expected
        assert state["head.block.1.weight"].shape[0] == CLASSES[dataset]


def test_pretraining_uses_the_feature_cache_and_logs_images(runs):
    folder, _ = runs
    assert len([p for p in (folder / "cache" / "features").iterdir() if p.is_dir()]) == 8  # 4 heads x train, val
    for dataset, variants in HEADS.items():
        for variant in variants:
            trial = next((folder / "ray" / f"heads_{dataset}").glob(f"{variant}_*"))
            assert list((trial / "tensorboard_images").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("dataset", ["voc", "ade20k"])
def test_the_study_loads_every_head_tensor_but_the_classifier(runs, dataset, capsys):
    folder, _ = runs
    for variant in HEADS[dataset]:
        path = find_head_weights(variant, folder / "heads")
        # The study's backbone is the one the head was trained on: random init under the same seed.
        model = build_seeded_model(variant, pretrained=False, seed=0, head_weights=path)
        report = capsys.readouterr().out
        tensors = len(model.head.state_dict())
        assert f"head weights from {path}: loaded {tensors - 2} tensors, skipped 2, left at init 2" in report
        assert "the file's backbone: the same as this model's (random init)" in report
        assert f"skipped head.block.1.weight: shape ({CLASSES[dataset]}," in report
        with pytest.raises(HeadWeightsError, match="trained on another backbone"):
            build_seeded_model(variant, pretrained=False, seed=1, head_weights=path)


def fake_imagenet_weights(torch_home: Path) -> None:
    """Random DenseNet121 / DenseNet161 files under torchvision's names in torch_home, standing in for ImageNet's."""
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    for arch, variant in (("densenet121", "denseaspp_voc"), ("densenet161", "cutdenseaspp_voc")):
        state = getattr(torchvision.models, arch)(weights=None).state_dict()
        torch.save(state, cache / Path(VARIANTS[variant].encoder.weights).name)


def test_a_head_from_another_backbone_stops_the_study_before_any_trial(runs, tmp_path):
    """Heads pretrained with --no-pretrained, offered to a study on the (here: stand-in) ImageNet backbones."""
    folder, _ = runs
    fake_imagenet_weights(tmp_path / "torch")
    config = tmp_path / "study.yaml"
    config.write_text(f"pretrained: true\nresults_dir: {tmp_path / 'results'}\ncache_dir: {tmp_path / 'cache'}\n")
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "compare.py"), "--preset", "smoke",
                          "--config", str(config), "--variants", "denseaspp_voc", "--head-weights", str(folder / "heads"),
                          "--storage-path", str(tmp_path / "ray")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "TORCH_HOME": str(tmp_path / "torch")})
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    head = find_head_weights("denseaspp_voc", folder / "heads")
    assert f"head file for denseaspp_voc: {head} was trained on another backbone" in run.stderr
    assert "densenet121-a639ec97.pth (ImageNet)" in run.stderr
    assert not (tmp_path / "ray" / "smoke").exists() and not (tmp_path / "results").exists()


def test_a_missing_head_stops_a_pretrained_study_unless_allowed(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(f"pretrained: true\nresults_dir: {tmp_path / 'results'}\ncache_dir: {tmp_path / 'cache'}\n")
    command = [sys.executable, str(REPO / "experiments" / "compare.py"), "--preset", "smoke", "--config", str(config),
               "--variants", "fcn_resnet50,cutdenseaspp_ade20k", "--storage-path", str(tmp_path / "ray")]
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 2
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert f"no head file for cutdenseaspp_ade20k (ADE20K head, a cutdenseaspp_ade20k-*.pth file) in {cache}" in run.stderr
    assert "python experiments/pretrain_heads.py --dataset ade20k" in run.stderr
    assert "--allow-random-heads" in run.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "results").exists()
    dry = subprocess.run([*command, "--dry-run", "--allow-random-heads"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert dry.returncode == 0
    assert f"none found in {cache}: head starts from random init (--allow-random-heads)" in dry.stdout


def test_dry_run_names_the_head_file_of_each_variant(runs, capsys, tmp_path):
    folder, _ = runs
    config = tmp_path / "random.yaml"  # the heads were pretrained on random backbones (--no-pretrained)
    config.write_text("pretrained: false\n")
    assert load_script("compare").main(["--dry-run", "--config", str(config),
                                        "--head-weights", str(folder / "heads")]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if "head weights:" in line]
    expected = ["head weights: none: pretrained is off, so the head starts from random init"] * 2 + [
        f"head weights: {find_head_weights(v, folder / 'heads')}" for v in VARIANTS if VARIANTS[v].head_dataset]
    assert lines == expected


def test_study_finds_the_newest_head_in_the_weights_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake_imagenet_weights(tmp_path / "torch")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    model = build_seeded_model("denseaspp_voc", pretrained=True, seed=0)  # a head made on the study's backbone
    new = save_head_file(public_head_state(model), cache, "denseaspp_voc")
    old = cache / "denseaspp_voc-00000000.pth"
    old.write_bytes(b"")  # never read: the newest file is the one chosen and checked
    for age, path in ((200, old), (100, new)):
        os.utime(path, (path.stat().st_mtime - age,) * 2)
    (cache / "cutdenseaspp_voc-22222222.pth").write_bytes(b"")  # another variant's, not a match
    assert load_script("compare").main(["--dry-run", "--variants", "denseaspp_voc,denseaspp_ade20k"]) == 0
    out = capsys.readouterr().out
    assert f"head weights: {new}" in out
    assert f"head weights: none found in {cache}: the study will refuse to start (see below)" in out
    assert "the study would stop: no head file for denseaspp_ade20k" in out


@pytest.mark.parametrize("dataset,missing", [
    ("voc", "VOCdevkit/VOC2012 is missing"),
    ("ade20k", "ADEChallengeData2016/images/validation is missing"),
])
def test_a_root_with_the_wrong_layout_names_what_is_missing(dataset, missing, tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    root.mkdir()
    if dataset == "ade20k":  # a tree whose validation images were never extracted
        write_ade20k(root, 4, 32)
        shutil.rmtree(root / "ADEChallengeData2016" / "images" / "validation")
    monkeypatch.chdir(tmp_path)
    code = load_script("pretrain_heads").main([
        "--dataset", dataset, "--data-root", str(root), "--storage-path", str(tmp_path / "ray"),
        "--output", str(tmp_path / "heads")])
    assert code == 2
    assert missing in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # nothing written


def test_an_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("pretrain_heads").main(["--dataset", "coco", "--data-root", "."])
    assert exit_info.value.code == 2 and "invalid choice: 'coco'" in capsys.readouterr().err


@pytest.mark.parametrize("count", ["-1", "0", "1"])
def test_too_few_synthetic_images_is_a_usage_error_before_ray_starts(count, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("pretrain_heads").main(["--dataset", "ade20k", "--synthetic", count])
    assert exit_info.value.code == 2
    assert f"--synthetic {count}: generate at least 2 images" in capsys.readouterr().err


def test_pixels_labelled_255_change_neither_loss_nor_confusion_matrix():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1)  # per pixel: an input pixel only moves its own logits
    images = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    void = torch.rand(2, 8, 8) < 0.3
    target[void] = IGNORE
    changed = torch.where(void[:, None], torch.randn(2, 3, 8, 8) * 5, images)

    def scored(inputs):
        batch = [(inputs, target)]
        val = evaluate(model, batch, torch.device("cpu"), 4, amp=False)
        train = train_one_epoch(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), torch.device("cpu"),
                                amp=False)
        return val, train

    (val, train), (val_changed, train_changed) = scored(images), scored(changed)
    assert torch.equal(val["confusion_matrix"], val_changed["confusion_matrix"])
    assert val["confusion_matrix"].sum() == (~void).sum()
    assert val["loss"] == pytest.approx(val_changed["loss"]) and train["loss"] == pytest.approx(train_changed["loss"])
    logits = model(images).permute(0, 2, 3, 1)[~void]
    assert val["loss"] == pytest.approx(nn.functional.cross_entropy(logits, target[~void]).item(), rel=1e-5)


def test_equal_heads_get_the_same_file_name(tmp_path):
    state = {"head.block.1.weight": torch.ones(21, 4, 1, 1)}
    first = save_head_file(state, tmp_path, "denseaspp_voc")
    assert save_head_file(state, tmp_path, "denseaspp_voc") == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left behind
    assert torch.equal(torch.load(first, weights_only=True)["head.block.1.weight"], state["head.block.1.weight"])
