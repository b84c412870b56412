"""Loading, checking, splitting, normalising and augmenting Oxford-IIIT Pet for segmentation."""

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torchvision import tv_tensors
from torchvision.transforms import v2

from petseg import data
from petseg.data import normalisation
from petseg.data.__main__ import main as check_tree
from petseg.data import (
    BACKGROUND, DatasetError, PetSegmentation, Sample, augmentation, build_datasets,
    compute_mean_std, find_samples, load_image, load_sample, load_split, load_trimap,
    make_split, resize_image, save_split, scan_samples,
)


def _base(root):
    return root / "oxford-iiit-pet"


def _first(root, listing="trainval"):
    return find_samples(root)[listing][0]


def _write_trimap(path, values):
    Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L").save(path)


# --- finding files -------------------------------------------------------------------------

def test_find_samples_lists_both_splits_with_existing_files(pet_root):
    samples = find_samples(pet_root)
    assert sum(len(samples[k]) for k in ("trainval", "test")) == 20
    for sample in samples["trainval"] + samples["test"]:
        assert sample.image.is_file() and sample.trimap.is_file()
        assert sample.image.stem == sample.trimap.stem == sample.name


def test_missing_tree_says_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        find_samples(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    assert "oxford-iiit-pet/images" in message and "annotations/trimaps" in message
    assert "download=True" in message and "--download" in message


def test_malformed_list_line_names_the_list_file(pet_root_copy):
    (_base(pet_root_copy) / "annotations" / "test.txt").write_text("Abyssinian_1 1\n")
    with pytest.raises(DatasetError, match="test.txt"):
        find_samples(pet_root_copy)


# --- images --------------------------------------------------------------------------------

def _save_as(image, path, mode):
    """Save image in mode; modes JPEG cannot hold go in as PNG bytes under the .jpg name."""
    if mode == "png-bytes":
        image.save(path, format="PNG")
    elif mode in ("RGBA", "P"):
        image.convert(mode).save(path, format="PNG")
    else:
        image.convert(mode).save(path, format="JPEG")


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "png-bytes"])
def test_odd_image_modes_load_as_rgb_and_pass_the_check(pet_root_copy, mode):
    sample = _first(pet_root_copy)
    original = Image.open(sample.image)
    _save_as(original, sample.image, mode)
    if mode != "png-bytes":
        assert Image.open(sample.image).mode == mode
    image = load_image(sample.image)
    assert image.mode == "RGB" and image.size == original.size
    good, problems = scan_samples([sample])
    assert good == [sample] and problems == []


def test_truncated_image_is_an_error_naming_the_file(pet_root_copy):
    sample = _first(pet_root_copy)
    content = sample.image.read_bytes()
    sample.image.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match=sample.image.name):
        load_image(sample.image)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False, "loading must not switch on truncated decoding"


def test_missing_image_is_an_error_naming_the_file(pet_root_copy):
    sample = _first(pet_root_copy)
    sample.image.unlink()
    with pytest.raises(DatasetError, match=sample.image.name):
        load_image(sample.image)


# --- trimaps -------------------------------------------------------------------------------

def test_trimap_values_map_to_class_ids(tmp_path):
    path = tmp_path / "t.png"
    _write_trimap(path, [[1, 2, 3], [3, 2, 1]])
    mask = load_trimap(path)
    assert mask.dtype == np.uint8
    assert mask.tolist() == [[0, 1, 2], [2, 1, 0]]
    assert data.CLASS_NAMES[0] == "pet" and data.CLASS_NAMES[BACKGROUND] == "background"


@pytest.mark.parametrize("bad_value", [0, 4])
def test_trimap_value_outside_1_2_3_names_file_and_value(tmp_path, bad_value):
    path = tmp_path / "Bengal_7.png"
    _write_trimap(path, [[1, 2], [3, bad_value]])
    with pytest.raises(DatasetError, match=rf"Bengal_7\.png.*\[{bad_value}\]"):
        load_trimap(path)


def test_multichannel_trimap_is_an_error(tmp_path):
    path = tmp_path / "pug_3.png"
    Image.new("RGB", (4, 4), (1, 1, 1)).save(path)
    with pytest.raises(DatasetError, match="pug_3.png.*channels"):
        load_trimap(path)


def test_missing_trimap_is_an_error_naming_it(pet_root_copy):
    sample = _first(pet_root_copy)
    sample.trimap.unlink()
    with pytest.raises(DatasetError, match=sample.trimap.name):
        load_sample(sample)


def test_trimap_of_another_size_than_its_image_is_an_error(pet_root_copy):
    sample = _first(pet_root_copy)
    _write_trimap(sample.trimap, np.full((5, 7), 2))
    with pytest.raises(DatasetError, match=f"{sample.trimap.name}.*7x5"):
        load_sample(sample)


# --- bad files in a whole tree -------------------------------------------------------------

def _damage(root):
    """Truncate one image, put value 4 in one trimap, delete another trimap; return the bad files."""
    samples = find_samples(root)
    truncated, bad_value = samples["trainval"][0], samples["test"][0]
    missing = samples["test"][1]
    truncated.image.write_bytes(truncated.image.read_bytes()[:300])
    trimap = np.asarray(Image.open(bad_value.trimap)).copy()
    trimap[0, 0] = 4
    _write_trimap(bad_value.trimap, trimap)
    missing.trimap.unlink()
    return [truncated.image, bad_value.trimap, missing.trimap]


def test_bad_files_are_an_error_naming_each_without_skip_bad(pet_root_copy):
    bad_files = _damage(pet_root_copy)
    with pytest.raises(DatasetError) as err:
        build_datasets(pet_root_copy, 32, None)
    assert all(str(path) in str(err.value) for path in bad_files)


def test_skip_bad_skips_and_lists_each_bad_file(pet_root_copy, capsys):
    bad_files = _damage(pet_root_copy)
    samples = find_samples(pet_root_copy)
    good, problems = scan_samples(samples["trainval"] + samples["test"])
    assert len(good) == 17 and sorted(p for p, _ in problems) == sorted(map(str, bad_files))

    datasets = build_datasets(pet_root_copy, 32, None, augment=None, skip_bad=True)
    assert sum(len(d) for d in datasets.values()) == 17
    bad_names = {path.stem for path in bad_files}
    assert not bad_names & {s.name for d in datasets.values() for s in d.samples}
    warnings = capsys.readouterr().err
    assert all(str(path) in warnings for path in bad_files)


# --- split ---------------------------------------------------------------------------------

def test_split_is_50_25_25_and_deterministic(pet_root):
    samples = find_samples(pet_root)
    split = make_split(samples, seed=0)
    assert split["train"] == sorted(s.name for s in samples["trainval"])
    assert sorted(split["val"] + split["test"]) == sorted(s.name for s in samples["test"])
    assert abs(len(split["val"]) - len(split["test"])) <= 1
    reordered = {k: list(reversed(v)) for k, v in samples.items()}
    assert make_split(reordered, seed=0) == split, "listing order must not matter"
    assert make_split(samples, seed=1)["val"] != split["val"]


def test_split_round_trips_through_json(pet_root, tmp_path):
    samples = find_samples(pet_root)
    split = make_split(samples, seed=5)
    path = save_split(split, tmp_path / "split.json")
    assert load_split(path, samples) == split
    datasets = build_datasets(pet_root, 32, path, augment=None)
    assert [s.name for s in datasets["val"].samples] == split["val"]


def test_split_with_unknown_names_is_an_error_naming_the_file(pet_root, tmp_path):
    samples = find_samples(pet_root)
    split = make_split(samples)
    split["val"].append("Sphynx_999")
    path = save_split(split, tmp_path / "old_split.json")
    with pytest.raises(DatasetError, match="old_split.json.*Sphynx_999"):
        load_split(path, samples)


# --- normalisation -------------------------------------------------------------------------

def test_mean_std_matches_numpy_and_is_cached(pet_root, tmp_path, monkeypatch):
    train = find_samples(pet_root)["trainval"]
    pixels = np.stack([np.asarray(Image.open(s.image).convert("RGB").resize((24, 24), Image.BILINEAR))
                       for s in train]).astype(np.float64) / 255
    loads = []
    counting = lambda path: loads.append(path) or load_image(path)  # noqa: E731
    monkeypatch.setattr(normalisation, "load_image", counting)

    mean, std = compute_mean_std(train, 24, cache_dir=tmp_path)
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)), atol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 1, 2)), atol=1e-9)
    assert len(loads) == len(train)

    assert compute_mean_std(train, 24, cache_dir=tmp_path) == (mean, std)
    assert len(loads) == len(train), "second call must read the cache"
    compute_mean_std(train, 32, cache_dir=tmp_path)
    assert len(loads) == 2 * len(train), "another size is another cache entry"


def test_cache_notices_a_changed_file(pet_root_copy, tmp_path):
    train = find_samples(pet_root_copy)["trainval"]
    before = compute_mean_std(train, 24, cache_dir=tmp_path)
    Image.new("RGB", Image.open(train[0].image).size, (255, 255, 255)).save(train[0].image)
    os.utime(train[0].image, ns=(1, 1))
    assert compute_mean_std(train, 24, cache_dir=tmp_path) != before


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_noticed_only_with_verify_data(pet_root_copy, tmp_path):
    from petseg.data.files import fingerprint, verify_contents
    train = find_samples(pet_root_copy)["trainval"]
    before = {verify: (verify_contents(verify), fingerprint(train, "x", with_trimaps=True))[1] for verify in (0, 1)}
    stat = train[0].image.stat()
    content = bytearray(train[0].image.read_bytes())
    content[-3] ^= 0xFF  # same size; its mtime is put back below, as some sync tools do
    train[0].image.write_bytes(bytes(content))
    os.utime(train[0].image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    try:
        verify_contents(False)
        assert fingerprint(train, "x", with_trimaps=True) == before[0]  # by size and mtime: unseen
        verify_contents(True)
        assert fingerprint(train, "x", with_trimaps=True) != before[1]
    finally:
        verify_contents(False)


def test_items_have_the_contract_shapes_and_are_normalised(pet_root):
    datasets = build_datasets(pet_root, 32, None, augment=None)
    train = datasets["train"]
    images, masks = zip(*(train[i] for i in range(len(train))))
    images, masks = torch.stack(images), torch.stack(masks)
    assert images.shape == (len(train), 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (len(train), 32, 32) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) == {0, 1, 2}
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(images.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2, rtol=0)
    assert datasets["val"].mean.tolist() == train.mean.tolist(), "val uses train's statistics"


def test_resize_keeps_only_known_class_ids(pet_root):
    dataset = PetSegmentation(find_samples(pet_root)["trainval"], size=37)
    _, mask = dataset[0]
    assert mask.shape == (37, 37) and set(mask.unique().tolist()) <= {0, 1, 2}


# --- augmentation --------------------------------------------------------------------------

def test_only_train_is_augmented_offline_by_default(pet_root):
    datasets = build_datasets(pet_root, 32, None)
    samples = find_samples(pet_root)
    assert len(datasets["train"]) == 2 * len(samples["trainval"])
    assert len(datasets["val"]) + len(datasets["test"]) == len(samples["test"])
    assert datasets["val"].augment is None and datasets["test"].augment is None


def test_offline_copies_are_fixed_and_differ_from_originals(pet_root):
    train = find_samples(pet_root)["trainval"]
    count = len(train)
    first = PetSegmentation(train, size=32, augment="offline", seed=0)
    second = PetSegmentation(train, size=32, augment="offline", seed=0)
    plain = PetSegmentation(train, size=32)
    assert len(first) == 2 * count and len(first.names) == 2 * count
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    forward = [first[i] for i in range(len(first))]
    assert torch.equal(torch.rand(3), expected_next), "dataset access must not move the global RNG"
    backward = [second[i] for i in reversed(range(len(second)))][::-1]
    for (img_a, mask_a), (img_b, mask_b) in zip(forward, backward):
        assert torch.equal(img_a, img_b) and torch.equal(mask_a, mask_b)
    for i in range(count):
        assert torch.equal(forward[i][0], plain[i][0]), "the first half are the originals"
        assert not torch.equal(forward[count + i][0], plain[i][0]), "the second half is augmented"
    reseeded = PetSegmentation(train, size=32, augment="offline", seed=1)
    assert not torch.equal(reseeded[count][0], forward[count][0])


def test_offline_copies_do_not_depend_on_dataloader_workers(pet_root):
    dataset = PetSegmentation(find_samples(pet_root)["trainval"], size=32, augment="offline")
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    in_workers = torch.cat([images for images, _ in loader])
    assert torch.equal(in_workers, torch.stack([dataset[i][0] for i in range(len(dataset))]))


def test_online_augmentation_is_fresh_on_each_access(pet_root):
    dataset = PetSegmentation(find_samples(pet_root)["trainval"], size=32, augment="online")
    assert len(dataset) == len(dataset.samples)
    torch.manual_seed(0)
    assert not torch.equal(dataset[0][0], dataset[0][0])


def _encoded_pair(size=48):
    """An asymmetric mask and an image whose grey level encodes it (pet 255, border 128, bg 0)."""
    mask = torch.full((size, size), BACKGROUND, dtype=torch.uint8)
    mask[4:30, 6:20] = 2
    mask[6:28, 8:18] = 0
    grey = torch.tensor([255, 0, 128], dtype=torch.uint8)[mask.long()]
    return tv_tensors.Image(grey.expand(3, size, size).clone()), tv_tensors.Mask(mask)


def _decode(image):
    grey = image[0].float()
    return torch.where(grey > 192, 0, torch.where(grey > 64, 2, BACKGROUND))


def test_augmentation_moves_image_and_mask_together_and_leaves_mask_colours_alone():
    image, mask = _encoded_pair()
    full = augmentation(BACKGROUND)
    geometry = v2.Compose(full.transforms[:2])  # rotation and flip
    for seed in range(20):
        torch.manual_seed(seed)
        _, aug_mask = full(image, mask)
        torch.manual_seed(seed)
        geo_image, geo_mask = geometry(image, mask)
        assert torch.equal(aug_mask, geo_mask), "colour jitter and blur must not touch the mask"
        assert set(aug_mask.unique().tolist()) <= {0, 1, 2}
        agreement = (_decode(geo_image) == geo_mask).float().mean().item()
        assert agreement > 0.95, f"seed {seed}: image and mask geometry differ"


def test_rotation_fills_mask_corners_with_background():
    pet_everywhere = tv_tensors.Mask(torch.zeros(48, 48, dtype=torch.uint8))
    image = tv_tensors.Image(torch.full((3, 48, 48), 200, dtype=torch.uint8))
    torch.manual_seed(0)
    corners = []
    for _ in range(20):
        _, mask = augmentation(BACKGROUND)(image, pet_everywhere)
        assert set(mask.unique().tolist()) <= {0, BACKGROUND}
        corners.append(mask[[0, 0, -1, -1], [0, -1, 0, -1]])
    assert (torch.stack(corners) == BACKGROUND).float().mean() > 0.9


# --- CLI -----------------------------------------------------------------------------------

def test_cli_passes_a_good_tree(pet_root, capsys):
    assert check_tree(["--root", str(pet_root)]) == 0
    out = capsys.readouterr().out
    assert "train 10" in out and "val 5" in out and "test 5" in out
    assert "pet" in out and "background" in out and "border" in out and "%" in out


def test_cli_fails_on_a_bad_tree_and_names_each_file(pet_root_copy, capsys):
    bad_files = _damage(pet_root_copy)
    assert check_tree(["--root", str(pet_root_copy)]) == 1
    out = capsys.readouterr().out
    assert all(str(path) in out for path in bad_files)


def test_cli_fails_on_a_missing_tree(tmp_path, capsys):
    assert check_tree(["--root", str(tmp_path / "nowhere")]) == 1
    assert "--download" in capsys.readouterr().err


def test_sample_is_immutable(pet_root):
    sample = _first(pet_root)
    assert isinstance(sample, Sample)
    with pytest.raises(AttributeError):
        sample.name = "other"


def test_resize_image_gives_the_square_size():
    assert resize_image(Image.new("RGB", (50, 30)), 16).size == (16, 16)
