"""A user's own dataset, registered from outside petseg by importing this module (README shows the same)."""
from pathlib import Path

from petseg.data import DatasetSource, Pair, load_image_and_mask, register_source


class Flat(DatasetSource):
    """DIR/<name>.jpg with its mask DIR/<name>_mask.png: 0 background, 1 object, 255 not scored."""

    name = "flat"
    class_names = ("background", "object")

    def find(self, root, download=False):
        """Every photo with the mask it should have (a missing mask is reported when it is read)."""
        photos = sorted(Path(root).glob("*.jpg"))
        return [Pair(p.stem, p, p.with_name(f"{p.stem}_mask.png")) for p in photos], []

    def load_pair(self, sample, classes):
        """The photo as RGB and the mask's values as class ids."""
        return load_image_and_mask(sample.image, sample.labels)


register_source(Flat())
