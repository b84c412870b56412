"""Data: files -> the segmentation dataset base -> dataset sources behind one protocol (Oxford-IIIT Pet, a folder
dataset, VOC / ADE20K, and any registered from outside) -> the typed data spec.

    python -m petseg.data --root DIR                      # check a whole Oxford-IIIT Pet tree
    python -m petseg.data --dataset folder --root DIR     # or any registered study dataset
"""
from ..errors import DatasetError
from .dataset import AUGMENT_MODES, SegmentationDataset
from .files import INPUT_VERSION, decoding, fingerprint, load_image, open_decoded, resize_image, resize_mask
from .normalisation import IMAGENET_MEAN, IMAGENET_STD, compute_mean_std
from .pets import (BACKGROUND, CLASS_NAMES, NUM_CLASSES, PARTS, PetSegmentation, Sample, build_datasets,
                   class_pixel_counts, find_samples, load_sample, load_split, load_trimap, make_split, save_split,
                   scan_samples, split_samples)
from .source import (Check, Classes, DatasetSource, Pair, SourceDataset, Tree, get_source, load_image_and_mask,
                     pretraining_kinds, ratio_split, register_source, study_kinds)
from .spec import DataSpec, datasets_from_spec, ensure_dataset, make_data_spec
from .transforms import augmentation, offline_seed
from .pretraining import VocAdeSegmentation
from .source import IGNORE
from . import ade20k, folder, voc  # each registers its source

__all__ = [
    "AUGMENT_MODES", "BACKGROUND", "CLASS_NAMES", "Check", "Classes", "DataSpec", "DatasetError", "DatasetSource",
    "IGNORE", "IMAGENET_MEAN", "IMAGENET_STD", "INPUT_VERSION", "NUM_CLASSES", "PARTS", "Pair", "PetSegmentation", "Sample",
    "SegmentationDataset", "SourceDataset", "Tree", "VocAdeSegmentation", "augmentation", "build_datasets",
    "class_pixel_counts", "compute_mean_std", "datasets_from_spec", "decoding", "ensure_dataset", "find_samples",
    "fingerprint", "get_source", "load_image", "load_image_and_mask", "load_sample", "load_split", "load_trimap",
    "make_data_spec", "make_split", "offline_seed", "open_decoded", "pretraining_kinds", "ratio_split",
    "register_source", "resize_image", "resize_mask", "save_split", "scan_samples", "split_samples", "study_kinds",
]
