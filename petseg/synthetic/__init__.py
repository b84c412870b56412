"""Small generated datasets in exactly the real on-disk layouts (Oxford-IIIT Pet, Pascal VOC, SBD, ADE20K),
so tests and smoke runs take the real code path after the files. Kept apart from the runtime data code."""
from .pets import MIN_IMAGES, MIN_SIZE, breed_ids, write_dataset
from .seg import voc_image_id, write_ade20k, write_sbd, write_voc

GENERATORS = {"pets": write_dataset, "voc": write_voc, "sbd": write_sbd, "ade20k": write_ade20k}

__all__ = ["GENERATORS", "MIN_IMAGES", "MIN_SIZE", "breed_ids", "voc_image_id", "write_ade20k", "write_dataset",
           "write_sbd", "write_voc"]
