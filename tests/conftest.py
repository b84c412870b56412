"""Shared pytest fixtures."""

import shutil

import pytest

from petseg.synthetic import write_dataset


@pytest.fixture(scope="session")
def pet_root(tmp_path_factory):
    """A small generated dataset in the real Oxford-IIIT Pet layout (20 images, ~48 px); do not modify."""
    return write_dataset(tmp_path_factory.mktemp("pets"), num_images=20, size=48, seed=0)


@pytest.fixture
def pet_root_copy(pet_root, tmp_path):
    """A private copy of pet_root that a test may damage."""
    shutil.copytree(pet_root / "oxford-iiit-pet", tmp_path / "oxford-iiit-pet")
    return tmp_path
