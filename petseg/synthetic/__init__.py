"""Small generated datasets in exactly the real on-disk layouts (Oxford-IIIT Pet, Pascal VOC, SBD, ADE20K, a folder
dataset),
so tests and smoke runs take the real code path after the files. Kept apart from the runtime data code."""
from .folder import write_folder
from .pets import MIN_IMAGES, MIN_SIZE, breed_ids, write_dataset
from .seg import voc_image_id, write_ade20k, write_sbd, write_voc

GENERATORS = {"pets": write_dataset, "folder": write_folder, "voc": write_voc, "sbd": write_sbd,
              "ade20k": write_ade20k}

__all__ = ["GENERATORS", "MIN_IMAGES", "MIN_SIZE", "breed_ids", "voc_image_id", "write_ade20k", "write_dataset",
           "write_folder", "write_sbd", "write_voc"]
