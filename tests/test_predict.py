"""Inference from best checkpoints: the library (petseg.train.inference, petseg.drawing) and experiments/predict.py,
evaluate.py."""
import importlib.util
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petseg.data import CLASS_NAMES, PetSegmentation, compute_mean_std, find_samples, load_image, make_split, split_samples
from petseg.train.engine import autocast, evaluate
from petseg.drawing import comparison_panel, display_size, overlay
from petseg.errors import CheckpointError
from petseg.train.inference import (MAX_MASK_PIXELS, load_best, load_photo, mask_size, normalise,
                            predict_photo, study_checkpoints)
from petseg.models import build_seeded_model
from petseg.train.training import make_loader
from petseg.drawing import PALETTE

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
CPU = torch.device("cpu")
STUDY_VARIANTS = ("denseaspp_voc", "fcn_resnet50")


def load_script(name: str):
    """Import experiments/<name>.py as a module, so its main() runs in-process."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_model(variant: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_seeded_model(variant, pretrained=False, seed=0)


def save_checkpoint(path: Path, variant: str, data: dict) -> torch.nn.Module:
    """A best checkpoint as petseg.analysis writes it, its head moved off the seeded init; returns the model."""
    model = seeded_model(variant).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    config = {"pretrained": False, "seed": 0, "head_weights": {}, "image_size": SIZE, "batch_size": 4,
              "num_workers": 0}
    torch.save({"variant": variant, "lr": 1e-3, "epoch": 2, "head": model.head.state_dict(), "config": config,
                "data": data}, path)
    return model


@pytest.fixture(scope="module")
def study(pet_root, tmp_path_factory):
    """results/<name>/ with two variants' best checkpoints on the generated dataset; (folder, data, models)."""
    samples = find_samples(pet_root)
    split = make_split(samples, seed=0)
    mean, std = compute_mean_std(split_samples(samples, split)["train"], SIZE)
    data = {"root": str(pet_root), "split": split, "size": SIZE, "mean": list(mean), "std": list(std),
            "augment": "none", "seed": 0, "decoded_cache_dir": None}
    folder = tmp_path_factory.mktemp("results") / "tiny"
    (folder / "checkpoints").mkdir(parents=True)
    models = {v: save_checkpoint(folder / "checkpoints" / f"{v}.pt", v, data) for v in STUDY_VARIANTS}
    return folder, data, models


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A grayscale JPEG, an RGBA PNG, a WebP and a truncated JPEG, of different sizes."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 50), dtype=np.uint8), mode="L").save(folder / "gray.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 60, 4), dtype=np.uint8), mode="RGBA").save(folder / "clear.png")
    Image.fromarray(rng.integers(0, 256, (45, 45, 3), dtype=np.uint8)).save(folder / "web.webp")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "whole.jpg")
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    return folder


def test_load_best_restores_the_saved_head(study):
    folder, _, models = study
    images = torch.randn(2, 3, SIZE, SIZE)
    model, checkpoint = load_best(folder / "checkpoints" / "fcn_resnet50.pt", CPU)
    assert checkpoint["variant"] == "fcn_resnet50" and not model.training
    with torch.no_grad():
        assert torch.equal(model(images), models["fcn_resnet50"](images))
        assert not torch.equal(model(images), seeded_model("fcn_resnet50").eval()(images))


def test_unusable_checkpoints_are_named(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable torch checkpoint"):
        load_best(garbage, CPU)
    partial = tmp_path / "partial.pt"
    torch.save({"variant": "fcn_resnet50"}, partial)
    with pytest.raises(CheckpointError, match=r"partial.pt: not a petseg best checkpoint \(missing \['lr'"):
        load_best(partial, CPU)
    with pytest.raises(CheckpointError, match="absent.pt: no such checkpoint file"):
        load_best(tmp_path / "absent.pt", CPU)


def _drop(section: str, *keys: str):
    """An edit removing `keys` from checkpoint[section]."""
    return lambda checkpoint: [checkpoint[section].pop(key) for key in keys]


BROKEN = {
    "head key": (_drop("head", "4.weight"), r"its head does not fit variant fcn_resnet50: missing: 4\.weight"),
    "head shape": (lambda c: c["head"].update({"4.weight": torch.zeros(21, 512, 1, 1)}),
                   r"of another shape: 4\.weight is \[21, 512, 1, 1\], needs \[3, 512, 1, 1\]"),
    "head extra": (lambda c: c["head"].update({"5.weight": torch.zeros(1)}), r"unexpected: 5\.weight"),
    "config": (_drop("config", "pretrained", "seed"), r"config lacks 'pretrained', 'seed'"),
    "data size": (_drop("data", "size"), r"data lacks 'size'"),
    "data rest": (_drop("data", "mean", "std", "split"), r"data lacks 'mean', 'std', 'split'"),
    "data values": (lambda c: c["data"].update(size="32", std=[0.2, 0, 0.2]),
                    r"data\['size'\] is '32', not a positive integer; data\['std'\] is \[0.2, 0, 0.2\]"),
}


@pytest.fixture(params=BROKEN.values(), ids=BROKEN.keys())
def broken(request, study, tmp_path):
    """(path, expected message) of the study's FCN checkpoint edited by hand into a broken one."""
    edit, message = request.param
    checkpoint = torch.load(study[0] / "checkpoints" / "fcn_resnet50.pt", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, tmp_path / "edited.pt")
    return tmp_path / "edited.pt", message


def test_a_broken_checkpoint_names_the_file_and_what_is_wrong(broken):
    path, message = broken
    with pytest.raises(CheckpointError, match=f"edited.pt: .*{message}"):
        load_best(path, CPU)


def test_the_clis_exit_2_on_a_broken_checkpoint(broken, photos, pet_root, tmp_path, capsys):
    path, message = broken
    code = load_script("predict").main(["--checkpoint", str(path), "--output", str(tmp_path / "out"),
                                        str(photos / "web.webp")])
    assert code == 2 and re.search(f"^error: {re.escape(str(path))}: .*{message}", capsys.readouterr().err)
    code = load_script("evaluate").main(["--checkpoint", str(path), "--data-root", str(pet_root)])
    assert code == 2 and re.search(f"^error: {re.escape(str(path))}: .*{message}", capsys.readouterr().err)


def test_evaluate_asks_for_a_batch_size_the_checkpoint_lacks(study, pet_root, tmp_path, capsys):
    checkpoint = torch.load(study[0] / "checkpoints" / "fcn_resnet50.pt", weights_only=True)
    del checkpoint["config"]["batch_size"]
    torch.save(checkpoint, tmp_path / "edited.pt")
    code = load_script("evaluate").main(["--checkpoint", str(tmp_path / "edited.pt"), "--data-root", str(pet_root)])
    assert code == 2 and "edited.pt: its config has no usable batch_size (None); pass --batch-size N" in \
        capsys.readouterr().err


def test_study_checkpoints_follow_the_paper_order_and_name_missing_variants(study):
    folder = study[0]
    assert [p.stem for p in study_checkpoints(folder)] == ["fcn_resnet50", "denseaspp_voc"]
    assert [p.stem for p in study_checkpoints(folder, ["denseaspp_voc"])] == ["denseaspp_voc"]
    with pytest.raises(CheckpointError, match="no checkpoint for deeplabv3_resnet50"):
        study_checkpoints(folder, ["deeplabv3_resnet50"])


def test_load_photo_turns_a_photo_upright_by_its_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees
    Image.new("L", (60, 40), 128).save(tmp_path / "phone.jpg", exif=exif)
    photo = load_photo(tmp_path / "phone.jpg")
    assert photo.size == (40, 60) and photo.mode == "RGB"


def test_normalise_matches_the_training_dataset(study, pet_root):
    _, data, _ = study
    sample = find_samples(pet_root)["test"][0]
    dataset = PetSegmentation([sample], SIZE, data["mean"], data["std"])
    assert torch.allclose(normalise(load_image(sample.image), SIZE, data["mean"], data["std"]), dataset[0][0])


def test_predict_photo_returns_a_mask_at_the_photo_size(study, photos):
    _, data, models = study
    image = load_image(photos / "clear.png")  # 60 wide, 40 high
    mask = predict_photo(models["fcn_resnet50"], image, SIZE, data["mean"], data["std"], CPU)
    assert mask.shape == (40, 60) and mask.dtype == torch.uint8
    assert set(mask.unique().tolist()) <= {0, 1, 2}


def argmax_at(model, image: Image.Image, data: dict, size: tuple[int, int]) -> torch.Tensor:
    """predict_photo as it was before the cap, at any `size`: logits upsampled once to it, int64 argmax."""
    with torch.no_grad(), autocast(CPU):
        logits = model(normalise(image, SIZE, data["mean"], data["std"])[None], size=size)
    return logits.argmax(dim=1)[0]


@pytest.mark.parametrize("variant", STUDY_VARIANTS)
def test_photos_within_the_cap_get_the_same_masks_as_before_it(study, photos, variant):
    _, data, models = study
    image = load_image(photos / "gray.jpg")  # 50 wide, 70 high
    mask = predict_photo(models[variant], image, SIZE, data["mean"], data["std"], CPU)
    assert torch.equal(mask.long(), argmax_at(models[variant], image, data, (70, 50)))


def test_a_photo_over_the_cap_gets_the_argmax_at_a_smaller_size_of_its_shape(study, photos):
    _, data, models = study
    image = load_image(photos / "clear.png")  # 60 wide, 40 high: 2400 pixels
    mask = predict_photo(models["denseaspp_voc"], image, SIZE, data["mean"], data["std"], CPU, max_pixels=600)
    assert mask.dtype == torch.uint8
    assert torch.equal(mask.long(), argmax_at(models["denseaspp_voc"], image, data, (20, 30)))


@pytest.mark.parametrize("height,width,expected", [
    (40, 60, (40, 60)),  # within the cap: the photo's own size
    (2000, 2000, (2000, 2000)),
    (10_000, 10_000, (2000, 2000)),
    (6000, 9000, (1632, 2449)),
    (1, 10**8, (1, MAX_MASK_PIXELS)),  # slivers keep one row or column and the budget
    (10**8, 1, (MAX_MASK_PIXELS, 1)),
])
def test_mask_size_caps_the_pixels_and_keeps_the_aspect_ratio(height, width, expected):
    assert mask_size(height, width) == expected
    rows, columns = expected
    assert rows * columns <= MAX_MASK_PIXELS


def test_overlay_blends_the_class_colours_into_the_photo():
    photo = Image.new("RGB", (4, 2), (100, 100, 100))
    mask = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2]])
    blended = np.asarray(overlay(photo, mask, alpha=0.5)).astype(int)
    for column, class_id in ((0, 0), (3, 2)):
        expected = (100 + PALETTE[class_id].numpy().astype(int)) / 2
        assert np.abs(blended[0, column] - expected).max() <= 1


def test_overlay_stretches_a_smaller_mask_over_the_photo():
    photo = Image.new("RGB", (4, 2), (100, 100, 100))
    blended = np.asarray(overlay(photo, torch.tensor([[0, 2]], dtype=torch.uint8), alpha=1.0))
    assert (blended[:, 0] == PALETTE[0].numpy()).all() and (blended[:, 3] == PALETTE[2].numpy()).all()


def test_display_size_shrinks_huge_photos_and_panoramas():
    assert display_size(50, 70) == (183, 256)  # small photos are enlarged so captions fit
    assert display_size(10_000, 7_500) == (1365, 1024)
    assert display_size(100_000, 1_000) == (4096, 41)


def test_comparison_panel_of_a_huge_photo_is_drawn_at_display_size():
    photo = Image.new("RGB", (8000, 6000), (90, 120, 60))
    small = torch.zeros(1500, 2000, dtype=torch.uint8)  # a capped mask
    panel = comparison_panel(photo, {"FCN": small, "DenseASPP1": small}, CLASS_NAMES)
    band = 1024 // 12
    assert panel.size == (3 * 1365 + 2 * (band // 3), 1024 + 2 * band)


def test_comparison_panel_has_one_panel_per_variant():
    photo = Image.new("RGB", (50, 70), (90, 120, 60))
    mask = torch.zeros(70, 50, dtype=torch.long)
    alone = comparison_panel(photo, {}, CLASS_NAMES)
    one = comparison_panel(photo, {"FCN": mask}, CLASS_NAMES)
    two = comparison_panel(photo, {"FCN": mask, "DenseASPP1": mask}, CLASS_NAMES)
    assert two.width - one.width == one.width - alone.width > alone.width
    assert one.height == two.height > 256  # small photos are enlarged so captions fit
    assert alone.height > one.height  # the photo alone is too narrow for the legend's 3 names in one row


def test_predict_cli_writes_overlays_and_names_the_unreadable_file(study, photos, tmp_path, capsys):
    out = tmp_path / "out"
    names = ["gray.jpg", "clear.png", "web.webp", "broken.jpg"]
    code = load_script("predict").main(["--study", str(study[0]), "--output", str(out),
                                        *(str(photos / n) for n in names)])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["clear.png", "gray.png", "web.png"]
    assert "broken.jpg" in captured.err and "gray.jpg" not in captured.err
    for name in names[:3]:
        line = next(line for line in captured.out.splitlines() if name in line)
        # The report's labels: these checkpoints were trained with pretrained=False, so nothing was pretrained.
        assert re.search(r"FCN \(random weights\) \d+\.\d{3} s, DenseASPP1 \(random weights\) \d+\.\d{3} s", line), line
    mask = torch.zeros(70, 50, dtype=torch.long)
    with Image.open(out / "gray.png") as written:  # the photo, then one overlay per variant
        assert written.size == comparison_panel(load_image(photos / "gray.jpg"), {"a": mask, "b": mask}, CLASS_NAMES).size


# Peak resident memory (MiB) that predicting one photo adds once the models and the photo are loaded: what
# experiments/predict.py does per photo, in a fresh process so the peak is its own.
PEAK_SCRIPT = """
import ctypes, gc, importlib.util, json, sys
from pathlib import Path
import torch

def resident_mib(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1]) / 1024

spec = importlib.util.spec_from_file_location("predict_script", sys.argv[1])
predict = importlib.util.module_from_spec(spec)
spec.loader.exec_module(predict)
args = predict.parse_args(sys.argv[2:])
models, class_names = predict.load_models(args, torch.device("cpu"))
image = predict.load_photo(args.images[0])
gc.collect()
ctypes.CDLL(None).malloc_trim(0)  # free heap back to the OS, so reused pages cannot hide the prediction's own
before = resident_mib("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # VmHWM, the peak, starts again from now
masks, _ = predict.segment(image, models, torch.device("cpu"))
panel = predict.comparison_panel(image, masks, class_names)
panel.save(Path(args.output) / "panel.png")
print(json.dumps({"extra_mib": resident_mib("VmHWM") - before, "panel": panel.size,
                  "masks": [list(mask.shape) for mask in masks.values()]}))
"""


def generated_photo(path: Path, width: int, height: int) -> Path:
    """A smooth colour photo (gradients, so the JPEG is small and quick to write)."""
    channels = [Image.linear_gradient("L").resize((width, height)),
                Image.linear_gradient("L").rotate(90).resize((width, height)),
                Image.radial_gradient("L").resize((width, height))]
    Image.merge("RGB", channels).save(path, quality=85)
    return path


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peak memory through Linux's /proc")
def test_a_36_megapixel_photo_is_predicted_in_bounded_memory(study, tmp_path):
    photo = generated_photo(tmp_path / "huge.jpg", 7200, 5000)
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(REPO / "experiments" / "predict.py"),
                          "--study", str(study[0]), "--output", str(tmp_path), str(photo)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    measured = json.loads(run.stdout.splitlines()[-1])
    # Full-size float logits, int64 masks and overlays needed 1261 MiB here before the cap; now ~110 MiB.
    assert measured["extra_mib"] < 400, measured
    assert measured["masks"] == [list(mask_size(5000, 7200))] * 2
    width, height = display_size(7200, 5000)
    band = height // 12
    assert measured["panel"] == [3 * width + 2 * (band // 3), height + 2 * band]  # photo and 2 overlays


def test_predict_cli_with_one_checkpoint_file_succeeds_without_overwriting(study, photos, tmp_path, capsys):
    checkpoint = study[0] / "checkpoints" / "denseaspp_voc.pt"
    # Photos right after --checkpoint are photos, not more checkpoints.
    code = load_script("predict").main(["--checkpoint", str(checkpoint), str(photos / "web.webp"),
                                        str(photos / "web.webp"), "--output", str(tmp_path)])
    assert code == 0
    assert capsys.readouterr().out.count("DenseASPP1") == 2
    assert (tmp_path / "web.png").is_file() and (tmp_path / "web-2.png").is_file()


def test_predict_cli_rejects_a_variant_the_study_lacks(study, photos, tmp_path, capsys):
    code = load_script("predict").main(["--study", str(study[0]), "--variants", "deeplabv3_resnet50",
                                        "--output", str(tmp_path / "out"), str(photos / "web.webp")])
    assert code == 2 and "deeplabv3_resnet50" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def printed_scores(text: str, title_start: str) -> dict:
    """{label: value} of the block whose title starts with title_start in evaluate.py's output."""
    block = text.split(title_start, 1)[1].split("\n\n", 1)[0]
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (pixel accuracy|mIoU|weighted mIoU)\s+([\d.]+)",
                                                               block, re.MULTILINE)}


def test_evaluate_cli_prints_both_resolutions(study, pet_root, capsys):
    folder, data, models = study
    checkpoint = folder / "checkpoints" / "fcn_resnet50.pt"
    code = load_script("evaluate").main(["--checkpoint", str(checkpoint), "--data-root", str(pet_root),
                                         "--split", "test", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert code == 0
    at_size, original = printed_scores(out, f"at {SIZE}x{SIZE}"), printed_scores(out, "at original resolution")
    assert set(at_size) == set(original) == {"pixel accuracy", "mIoU", "weighted mIoU"}
    assert "FCN (random weights) (fcn_resnet50)" in out  # the report's label, not the bare paper name
    assert "backbone ResNet50 (random init), head random init" in out
    assert "IoU per class   pet" in out
    # The checkpoint-size block is the study's own test scoring.
    samples = split_samples(find_samples(pet_root), data["split"])["test"]
    test = PetSegmentation(samples, SIZE, data["mean"], data["std"])
    expected = evaluate(models["fcn_resnet50"], make_loader(test, 4, train=False), CPU, 3)
    assert at_size["pixel accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=5e-5)
    assert at_size["weighted mIoU"] == pytest.approx(expected["weighted_iou"], abs=5e-5)


def test_evaluate_cli_names_a_bad_checkpoint_or_data_root(study, pet_root, tmp_path, capsys):
    evaluate_script = load_script("evaluate")
    code = evaluate_script.main(["--checkpoint", str(tmp_path / "missing.pt"), "--data-root", str(pet_root)])
    assert code == 2 and "missing.pt" in capsys.readouterr().err
    checkpoint = study[0] / "checkpoints" / "fcn_resnet50.pt"
    code = evaluate_script.main(["--checkpoint", str(checkpoint), "--data-root", str(tmp_path / "nowhere")])
    assert code == 2 and "nowhere" in capsys.readouterr().err
