"""The generated dataset must look like the real Oxford-IIIT Pet to every reader of it."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import OxfordIIITPet

from petseg.errors import ConfigError
from petseg.synthetic import breed_ids, write_dataset, write_voc
from petseg.synthetic.__main__ import main as synthetic_main


def _trimaps(root):
    return sorted((root / "oxford-iiit-pet" / "annotations" / "trimaps").glob("*.png"))


def _images(root):
    return sorted((root / "oxford-iiit-pet" / "images").glob("*.jpg"))


def test_torchvision_reads_both_splits_with_matching_pairs(pet_root):
    total = 0
    for split in ("trainval", "test"):
        pets = OxfordIIITPet(pet_root, split=split, target_types="segmentation")
        assert 8 <= len(pets) <= 12, "roughly half of the 20 images in each list"
        assert len(pets.classes) >= 3, "several breeds in each list"
        for index in range(len(pets)):
            image, trimap = pets[index]
            assert image.mode == "RGB" and trimap.mode == "L"
            assert image.size == trimap.size
        total += len(pets)
    assert total == 20


def test_list_lines_follow_the_real_format(pet_root):
    annotations = pet_root / "oxford-iiit-pet" / "annotations"
    names = set()
    for split in ("trainval", "test"):
        for line in (annotations / f"{split}.txt").read_text().splitlines():
            name, class_id, species, breed_id = line.split()
            breed = name.rsplit("_", 1)[0]
            assert (int(class_id), int(species), int(breed_id)) == breed_ids(breed)
            names.add(name)
    assert names == {p.stem for p in _images(pet_root)}


def test_breed_ids_match_the_real_lists():
    assert breed_ids("Abyssinian") == (1, 1, 1)
    assert breed_ids("american_bulldog") == (2, 2, 1)
    assert breed_ids("Bengal") == (6, 1, 2)
    assert breed_ids("yorkshire_terrier") == (37, 2, 25)


def test_trimaps_are_8bit_with_a_border_band_between_pet_and_background(pet_root):
    for path in _trimaps(pet_root):
        trimap = np.asarray(Image.open(path))
        assert trimap.dtype == np.uint8 and trimap.ndim == 2
        assert set(np.unique(trimap)) == {1, 2, 3}, path.name
        pet, background = trimap == 1, trimap == 2
        # As in the real trimaps, the border band always separates pet from background.
        touching = (pet[1:] & background[:-1]) | (pet[:-1] & background[1:])
        touching_x = (pet[:, 1:] & background[:, :-1]) | (pet[:, :-1] & background[:, 1:])
        assert not touching.any() and not touching_x.any(), path.name


def test_images_have_varied_sizes_around_size(pet_root):
    sizes = [Image.open(p).size for p in _images(pet_root)]
    widths, heights = {w for w, _ in sizes}, {h for _, h in sizes}
    assert len(widths) >= 8 and len(heights) >= 8
    assert all(0.6 * 48 - 1 <= s <= 1.4 * 48 + 1 for s in widths | heights)
    assert len({round(w / h, 1) for w, h in sizes}) >= 5, "aspect ratios vary"


def test_pet_colours_differ_from_background_but_are_not_constant(pet_root):
    pet_pixels, background_pixels = [], []
    for image_path, trimap_path in zip(_images(pet_root), _trimaps(pet_root)):
        pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float64)
        trimap = np.asarray(Image.open(trimap_path))
        pet_pixels.append(pixels[trimap == 1])
        background_pixels.append(pixels[trimap == 2])
    pet, background = np.concatenate(pet_pixels), np.concatenate(background_pixels)
    assert np.linalg.norm(pet.mean(0) - background.mean(0)) > 20
    assert pet.std(0).min() > 15 and background.std(0).min() > 15


def test_same_seed_writes_identical_files_and_another_seed_differs(tmp_path):
    first = write_dataset(tmp_path / "a", num_images=4, size=32, seed=3)
    second = write_dataset(tmp_path / "b", num_images=4, size=32, seed=3)
    other = write_dataset(tmp_path / "c", num_images=4, size=32, seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4 * 2 + 2
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert _images(first)[0].read_bytes() != _images(other)[0].read_bytes()


def test_rejects_too_few_images_or_too_small_ones(tmp_path):
    with pytest.raises(ConfigError, match="num_images=1"):
        write_dataset(tmp_path, num_images=1)
    with pytest.raises(ConfigError, match="size=8"):
        write_voc(tmp_path, num_images=4, size=8)


def test_cli_writes_and_reports(tmp_path, capsys):
    assert synthetic_main(["--root", str(tmp_path), "--num-images", "4", "--size", "32"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert len(_images(tmp_path)) == 4 and len(_trimaps(tmp_path)) == 4


@pytest.mark.parametrize("flags,message", [
    (["--num-images", "1"], "--num-images 1: give at least 2"),
    (["--num-images", "-3"], "--num-images -3: give at least 2"),
    (["--size", "0"], "--size 0: give at least 16 pixels"),
    (["--kind", "ade20k", "--size", "8"], "--size 8: give at least 16 pixels"),
])
def test_cli_names_a_bad_flag_and_writes_nothing(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic_main(["--root", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["pets", "voc", "sbd", "ade20k"])
def test_cli_names_a_root_it_cannot_write(kind, tmp_path, capsys):
    root = tmp_path / "a_file"  # a file, not a folder: unwritable as a root even for root
    root.write_text("")
    assert synthetic_main(["--kind", kind, "--root", str(root), "--num-images", "2", "--size", "16"]) == 2
    assert f"error: --root {root}: cannot write the dataset there" in capsys.readouterr().err


def test_cli_process_exits_2_without_a_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "petseg.synthetic", "--root", str(tmp_path), "--num-images", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--num-images 1: give at least 2" in run.stderr
    assert "Traceback" not in run.stderr
