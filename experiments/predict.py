"""Run each variant's best checkpoint of a study on your own photos and save side-by-side overlays.

    python experiments/predict.py --study results/NAME --output DIR photo1.jpg photo2.png [--variants k1,k2]
    python experiments/predict.py --checkpoint A.pt --checkpoint B.pt --output DIR photo.webp

Photos may be any size, JPEG/PNG/WebP, grayscale or colour; they are turned upright by their EXIF
orientation. Each is predicted at the checkpoint's image size and the logits are upsampled to the
photo's own size, capped at 4 megapixels (petseg.train.inference.MAX_MASK_PIXELS, aspect ratio
kept; photos within the cap get exactly their full-size masks). Masks are uint8, and every overlay is
drawn at the panel's display size (at most 1024 pixels high and 4096 wide per photo), so beyond the
decoded photo itself (3 bytes a pixel) a 100-megapixel photo needs no more memory than a 4-megapixel
one: under 200 MB with six variants. DIR/<photo name>.png shows the photo, then one overlay per
variant (each class's colour blended in; a legend names them); the time each variant took per photo is
printed (after one untimed warm-up pass per model). A photo that cannot be read is named on stderr
and skipped: exit code 1 if any was, 0 otherwise, 2 for unusable checkpoints or flags. Repeat
--checkpoint for several files; it can be combined with --study.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from petseg.drawing import comparison_panel
from petseg.errors import CheckpointError, DatasetError, PetsegError
from petseg.report.labels import checkpoint_provenance, model_name
from petseg.train.engine import default_device
from petseg.train.inference import (checkpoint_classes, load_best, load_photo, predict_photo, study_checkpoints,
                                    warm_up)


def parse_args(argv):
    """The command line: checkpoints (a study or files), the output folder and the photos."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photos to segment")
    parser.add_argument("--study", help="a finished study's results folder, results/NAME (uses checkpoints/*.pt)")
    # One file per flag (repeat it), so the photos after it are never taken for checkpoints.
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                        help="a best checkpoint file to run; repeat the flag for several")
    parser.add_argument("--variants", help="comma-separated variant keys of the study to run (default: all)")
    parser.add_argument("--output", required=True, help="folder for the side-by-side PNGs")
    args = parser.parse_args(argv)
    if not args.study and not args.checkpoint:
        parser.error("give --study results/NAME or --checkpoint FILE")
    if args.variants and not args.study:
        parser.error("--variants selects from --study; with --checkpoint, list the files you want")
    return args


def output_path(folder: Path, photo: Path, used: set[str]) -> Path:
    """folder/<photo stem>.png, numbered (-2, -3, ...) when another photo of this run took that name."""
    name, number = f"{photo.stem}.png", 1
    while name in used:
        number += 1
        name = f"{photo.stem}-{number}.png"
    used.add(name)
    return folder / name


def load_models(args, device) -> tuple[list[tuple[str, object, dict]], tuple[str, ...]]:
    """(caption, warmed-up model, data spec) per checkpoint, captioned with the report's label (a label used twice
    gets its study's name), and the class names they all predict."""
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    paths = (study_checkpoints(args.study, variants) if args.study else []) + [Path(p) for p in args.checkpoint]
    loaded = [(path, *load_best(path, device)) for path in paths]
    classes = {path: checkpoint_classes(checkpoint) for path, _, checkpoint in loaded}
    if len(set(classes.values())) > 1:
        listing = "; ".join(f"{path}: {', '.join(names)}" for path, names in classes.items())
        raise CheckpointError(f"the checkpoints predict different classes ({listing}); run the checkpoints of one "
                              "dataset together")
    names = [model_name(checkpoint_provenance(checkpoint)) for _, _, checkpoint in loaded]
    models = []
    for name, (path, model, checkpoint) in zip(names, loaded):
        caption = f"{name} ({path.parent.parent.name})" if names.count(name) > 1 else name
        warm_up(model, checkpoint["data"]["size"], device)
        models.append((caption, model, checkpoint["data"]))
    return models, next(iter(classes.values()))


def segment(image, models, device) -> tuple[dict, list[str]]:
    """Each model's uint8 mask of `image` (caption -> mask at the photo's size, capped at MAX_MASK_PIXELS) and
    '<caption> <seconds> s' per model."""
    masks, timings = {}, []
    for caption, model, data in models:
        started = time.perf_counter()
        # predict_photo returns a CPU tensor, so on CUDA the timing includes the GPU's work.
        masks[caption] = predict_photo(model, image, data["size"], data["mean"], data["std"], device)
        timings.append(f"{caption} {time.perf_counter() - started:.3f} s")
    return masks, timings


def main(argv=None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    device = default_device()
    output = Path(args.output)
    try:
        models, class_names = load_models(args, device)
        output.mkdir(parents=True, exist_ok=True)
    except (PetsegError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed, used = 0, set()
    for photo in map(Path, args.images):
        try:
            image = load_photo(photo)
        except DatasetError as err:
            print(f"error: {photo}: cannot read it as an image ({err.__cause__ or 'no such file'}); skipped",
                  file=sys.stderr)
            failed += 1
            continue
        masks, timings = segment(image, models, device)
        path = output_path(output, photo, used)
        comparison_panel(image, masks, class_names).save(path)
        print(f"{photo} ({image.width}x{image.height}): {', '.join(timings)} -> {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
