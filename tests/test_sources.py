"""Datasets behind one protocol: a source defined here (and the README's, tests/user_dataset.py) works through
the registry alone: data spec, datasets, checker, class count, cache plan, a checkpoint's split, config checks."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg.data import (DataSpec, DatasetSource, Pair, datasets_from_spec, get_source, load_image_and_mask,
                         make_data_spec, register_source, study_kinds)
from petseg.data.__main__ import main as check_data
from petseg.data.spec import class_count
from petseg.errors import ConfigError, DatasetError
from petseg.train.inference import checkpoint_dataset
from petseg.tune.cache_plan import estimated_items
from petseg.tune.config import resolve_config

REPO = Path(__file__).resolve().parents[1]
NAMES = ("sea", "sand", "rock", "weed")
COUNT = 12


class Beach(DatasetSource):
    """A layout petseg does not know: DIR/img_<n>.png with DIR/lbl_<n>.png, four classes, 255 not scored."""

    name = "beach"
    class_names = NAMES
    marker = "done.txt"

    def find(self, root, download=False):
        """Every image with its label file."""
        images = sorted(Path(root).glob("img_*.png"))
        return [Pair(p.stem[4:], p, p.with_name(f"lbl_{p.stem[4:]}.png")) for p in images], []

    def load_pair(self, sample, classes):
        """The image and its label values."""
        return load_image_and_mask(sample.image, sample.labels)

    def generate(self, root, num_images, size, seed):
        """Random images whose labels use all four classes and a few unscored pixels."""
        rng = np.random.default_rng(seed)
        root.mkdir(parents=True, exist_ok=True)
        for index in range(num_images):
            labels = rng.integers(0, len(NAMES), (size, size), dtype=np.uint8)
            labels[0, :3] = 255
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"img_{index:02d}.png")
            Image.fromarray(labels).save(root / f"lbl_{index:02d}.png")
        (root / self.marker).write_text("complete\n")


register_source(Beach())


def load_script(name: str):
    """experiments/<name>.py as a module, so its main() runs in this process."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def beach(tmp_path_factory) -> tuple[DataSpec, Path]:
    """A generated beach tree (through the source's generator) and its spec."""
    root = tmp_path_factory.mktemp("beach") / "tree"
    spec = make_data_spec("beach", root, size=16, augment="offline", seed=3,
                          synthetic={"num_images": COUNT, "size": 20, "seed": 0})
    return spec, root


def test_a_registered_source_makes_a_spec_that_survives_json(beach):
    spec, root = beach
    assert (root / "done.txt").is_file() and len(list(root.glob("img_*.png"))) == COUNT
    assert spec.kind == "beach" and spec.num_classes == 4 and spec.class_names == NAMES
    assert spec.parts == ("train", "val", "test") and not spec.pretraining
    names = [n for part in spec.parts for n in spec.split[part]]
    assert sorted(names) == [f"{i:02d}" for i in range(COUNT)]  # every sample in exactly one part
    assert [len(spec.split[p]) for p in spec.parts] == [6, 3, 3]  # the default 0.5 / 0.25 / 0.25 cut
    assert DataSpec.from_json(spec.to_json()) == spec
    assert "beach" in study_kinds() and class_count("beach", root, generated=False) == 4


def test_its_datasets_hold_its_classes_and_unscored_pixels(beach):
    spec, _ = beach
    datasets = datasets_from_spec(spec)
    assert set(datasets) == {"train", "val", "test"}
    assert len(datasets["train"]) == 2 * len(spec.split["train"])  # offline: one augmented copy per image
    assert len(datasets["val"]) == len(spec.split["val"])
    image, mask = datasets["val"][0]
    assert tuple(image.shape) == (3, 16, 16) and tuple(mask.shape) == (16, 16)
    assert datasets["val"].class_names == NAMES and datasets["val"].num_classes == 4
    values = set(np.unique(np.concatenate([datasets["val"][i][1].numpy().ravel() for i in range(3)])).tolist())
    assert values <= {0, 1, 2, 3, 255} and 255 in values


def test_the_checker_runs_any_registered_source(tmp_path, capsys):
    get_source("beach").generate(tmp_path, 8, 12, 1)
    assert check_data(["--dataset", "beach", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "split (seed 0): train 4, val 2, test 2" in out and "4 classes, pixel shares: sea" in out
    labels = np.array(Image.open(tmp_path / "lbl_03.png"))
    labels[5, 5] = 9  # no such class
    Image.fromarray(labels).save(tmp_path / "lbl_03.png")
    Image.fromarray(labels[:-2]).save(tmp_path / "lbl_05.png")  # 2 rows short of its image
    (tmp_path / "lbl_06.png").unlink()
    assert check_data(["--dataset", "beach", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "3 unusable file(s)" in out
    assert f"{tmp_path / 'lbl_03.png'}: mask values [9] are outside the classes 0..3" in out
    assert f"{tmp_path / 'lbl_05.png'}: mask is 12x10 but its image" in out
    assert f"{tmp_path / 'lbl_06.png'}: mask file is missing" in out


def test_a_spec_with_an_unusable_file_names_it(tmp_path):
    get_source("beach").generate(tmp_path, 8, 12, 1)
    Image.fromarray(np.full((12, 12), 4, np.uint8)).save(tmp_path / "lbl_02.png")
    with pytest.raises(DatasetError, match=r"1 unusable file\(s\).*--dataset beach") as raised:
        make_data_spec("beach", tmp_path, size=8, augment="none", seed=0)
    assert raised.value.path == tmp_path / "lbl_02.png"


def test_a_checkpoint_rebuilds_its_split_through_the_source(beach):
    spec, root = beach
    dataset = checkpoint_dataset({"data": spec.to_json()}, root, "test")
    assert [s.name for s in dataset.samples] == spec.split["test"]
    assert dataset.augment is None and dataset.size == spec.size and dataset.class_names == NAMES


def test_a_study_config_and_its_cache_plan_take_a_registered_dataset(tmp_path, beach):
    _, root = beach
    config = resolve_config("smoke", None, {"dataset": "beach", "data_root": str(root), "synthetic_images": 0})
    assert config.search.dataset == "beach" and config.search.augment == "offline" and config.search.feature_cache
    assert estimated_items(config) == (2 * 6, 3)  # the tree's own cut, train doubled by its augmented copies
    with pytest.raises(ConfigError, match="must be one of .*beach.*got 'nowhere'"):
        resolve_config("smoke", None, {"dataset": "nowhere"})
    with pytest.raises(ConfigError, match="cannot fetch a beach dataset"):
        resolve_config("smoke", None, {"dataset": "beach", "download": True})


def test_compare_dry_run_plans_a_registered_dataset(beach, capsys):
    _, root = beach
    code = load_script("compare").main(["--dataset", "beach", "--data-root", str(root), "--variants",
                                        "lraspp_mobilenet_v3_large", "--dry-run", "--preset", "smoke"])
    assert code == 0
    assert "train and 3 val items" in capsys.readouterr().out


def test_unknown_datasets_are_named_with_the_known_ones(capsys):
    with pytest.raises(DatasetError, match="'nowhere' is not registered; known: .*beach"):
        get_source("nowhere")
    with pytest.raises(SystemExit) as exit_info:
        check_data(["--dataset", "nowhere", "--root", "."])
    assert exit_info.value.code == 2 and "--dataset 'nowhere': use one of" in capsys.readouterr().err


def test_a_name_taken_by_another_source_is_refused():
    class Other(Beach):
        """Another layout under a taken name."""

    with pytest.raises(ValueError, match="'beach' is already registered"):
        register_source(Other())
    assert type(register_source(Beach())) is Beach  # the same source again (a module imported twice) is fine


def test_the_readme_example_registers_on_import(tmp_path, capsys):
    import tests.user_dataset  # noqa: F401  (importing it is all a user does)

    for index in range(4):
        mask = np.zeros((10, 12), np.uint8)
        mask[2:6, 3:9] = 1
        Image.fromarray(np.full((10, 12, 3), 40 * index, np.uint8)).save(tmp_path / f"photo{index}.jpg")
        Image.fromarray(mask).save(tmp_path / f"photo{index}_mask.png")
    spec = make_data_spec("flat", tmp_path, size=8, augment="none", seed=0)
    assert spec.class_names == ("background", "object") and sum(len(spec.split[p]) for p in spec.parts) == 4
    assert check_data(["--dataset", "flat", "--root", str(tmp_path)]) == 0
    assert "2 classes, pixel shares: background 80.0%, object 20.0%" in capsys.readouterr().out


def test_specs_saved_before_sources_load_with_their_dataset_defaults():
    common = {"root": "/data", "size": 64, "augment": "offline", "seed": 0, "mean": [0.5] * 3, "std": [0.2] * 3}
    pets = DataSpec.from_json({**common, "split": {"seed": 0, "train": [], "val": [], "test": []}})  # no kind yet
    assert (pets.kind, pets.num_classes, pets.class_names) == ("pets", 3, ("pet", "background", "border"))
    assert pets.parts == ("train", "val", "test") and pets.mean == (0.5,) * 3
    voc = DataSpec.from_json({**common, "kind": "voc", "samples": {"train": [], "val": []}})
    assert (voc.num_classes, len(voc.class_names), voc.parts, voc.pretraining) == (21, 21, ("train", "val"), True)


def test_two_sources_reading_the_same_files_never_share_feature_caches(beach):
    """Every source's datasets are SourceDatasets: the features' key names the source that makes the items."""
    from torch import nn

    from petseg.data import SourceDataset
    from petseg.train.features import feature_key

    class Gray(Beach):
        """The same files, read as grayscale photos: other items, so other features."""

        name = "gray_beach"

        def load_pair(self, sample, classes):
            image, labels = super().load_pair(sample, classes)
            return image.convert("L").convert("RGB"), labels

    spec, _ = beach
    samples = get_source("beach").part_samples(spec)["val"]

    def key(source):
        dataset = SourceDataset(source, spec.classes, samples, size=spec.size, mean=spec.mean, std=spec.std)
        return feature_key(nn.Conv2d(3, 4, 1), "weights", dataset, "fp32", 1.0)

    assert key(Beach()) == key(Beach()) != key(Gray())
