"""Every palette and mask picture petseg draws: class colours, image | truth | prediction strips
(TensorBoard), overlays and side-by-side panels of photos (predict.py), for figures and the logs alike."""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

# pet, background, border: distinct under common colour-vision deficiencies.
PALETTE = torch.tensor([[230, 97, 1], [40, 40, 40], [253, 219, 96]], dtype=torch.uint8)


def colourize(mask: torch.Tensor, palette: torch.Tensor = PALETTE) -> torch.Tensor:
    """[H, W] class ids -> [3, H, W] uint8 colours (`palette`: [classes, 3] uint8, one row per id)."""
    return palette.to(mask.device)[mask.long()].permute(2, 0, 1)


def denormalize(image: torch.Tensor, mean, std) -> torch.Tensor:
    """A normalised [3, H, W] float image back to uint8 for display."""
    mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return ((image * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def strip(image: torch.Tensor, target: torch.Tensor, prediction: torch.Tensor, mean, std,
          palette: torch.Tensor = PALETTE) -> torch.Tensor:
    """One [3, H, 3W] uint8 panel: the image, its ground truth and the prediction, side by side."""
    return torch.cat([denormalize(image, mean, std), colourize(target, palette), colourize(prediction, palette)],
                     dim=2)


def voc_palette() -> list[int]:
    """The 256-entry Pascal VOC colour map as a flat [r, g, b, ...] list (255 = (224, 224, 192))."""
    palette = []
    for index in range(256):
        rgb, bits = [0, 0, 0], index
        for shift in range(7, -1, -1):  # each 3 bits of the index add one bit per channel, high first
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        palette.extend(rgb)
    return palette


def palette_for(num_classes: int) -> torch.Tensor:
    """256 colours: Pets' own 3 first for a 3-class dataset, else the Pascal VOC colour map (so ignore 255, drawn
    in a ground truth, has its colour too)."""
    palette = torch.tensor(voc_palette(), dtype=torch.uint8).view(256, 3)
    if num_classes == len(PALETTE):
        palette[: len(PALETTE)] = PALETTE
    return palette


def overlay(image: Image.Image, mask: torch.Tensor, alpha: float = 0.5, palette: torch.Tensor = PALETTE) -> Image.Image:
    """The photo blended with its mask's class colours (`palette`), `alpha` of colour; a mask of another size
    (a capped one of petseg.train.inference.predict_photo) is stretched over the photo."""
    colours = Image.fromarray(colourize(mask, palette).permute(1, 2, 0).numpy())
    if colours.size != image.size:
        # Bilinear (antialiased when shrinking), so class edges look as in an overlay drawn full size then resized.
        colours = colours.resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), colours, alpha)


def display_height(height: int, low: int = 256, high: int = 1024) -> int:
    """Height a panel is shown at: small photos enlarged so captions fit, huge ones shrunk to keep files small."""
    return min(max(height, low), high)


def display_size(width: int, height: int, widest: int = 4096) -> tuple[int, int]:
    """(width, height) a photo is shown at: display_height's height, its aspect ratio kept, at most `widest` wide
    (so a panorama's panel stays small too)."""
    shown = display_height(height)
    across = max(1, round(width * shown / height))
    if across <= widest:
        return across, shown
    return widest, max(1, round(height * widest / width))


def _captioned(panel: Image.Image, caption: str, band: int) -> Image.Image:
    """The panel under a white band holding its caption."""
    out = Image.new("RGB", (panel.width, panel.height + band), "white")
    out.paste(panel, (0, band))
    font = ImageFont.load_default(size=band * 2 // 3)
    ImageDraw.Draw(out).text((band // 4, band // 6), caption, fill="black", font=font)
    return out


def _legend(width: int, band: int, class_names, palette: torch.Tensor) -> Image.Image:
    """White bands with one coloured square and name per class, wrapped into as many rows as `width` needs."""
    font = ImageFont.load_default(size=band * 2 // 3)
    places, left, row = [], band // 4, 0
    for name in class_names:
        entry = band + round(font.getlength(name)) + band  # square, name, space before the next
        if left + entry > width and left > band // 4:
            left, row = band // 4, row + 1
        places.append((left, row * band))
        left += entry
    out = Image.new("RGB", (width, band * (row + 1)), "white")
    draw = ImageDraw.Draw(out)
    for index, (name, (left, top)) in enumerate(zip(class_names, places)):
        draw.rectangle((left, top + band // 6, left + band * 2 // 3, top + band * 5 // 6),
                       fill=tuple(palette[index].tolist()))
        draw.text((left + band, top + band // 6), name, fill="black", font=font)
    return out


def comparison_panel(image: Image.Image, masks: dict[str, torch.Tensor], class_names,
                     alpha: float = 0.5) -> Image.Image:
    """The photo, then one captioned overlay per entry of `masks` (caption -> mask of any size), side by side, with
    a legend of `class_names` (their colours from palette_for), all at display_size."""
    palette = palette_for(len(class_names))
    width, height = display_size(image.width, image.height)
    band = max(16, height // 12)
    gap = band // 3  # white space between panels, so neighbouring overlays do not merge
    # Resized once and every overlay blended at that size, so a huge photo is never copied at full size.
    photo = image if image.mode == "RGB" else image.convert("RGB")
    photo = photo.resize((width, height), Image.Resampling.BILINEAR)
    panels = [("photo", photo)] + [(caption, overlay(photo, mask, alpha, palette)) for caption, mask in masks.items()]
    shown = [_captioned(panel, caption, band) for caption, panel in panels]
    across = (width + gap) * len(shown) - gap
    legend = _legend(across, band, class_names, palette)
    out = Image.new("RGB", (across, height + band + legend.height), "white")
    for index, panel in enumerate(shown):
        out.paste(panel, (index * (width + gap), 0))
    out.paste(legend, (0, height + band))
    return out
