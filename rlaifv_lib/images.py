"""Reading and normalising input images (paths or PIL images) for every stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import ImageError

__all__ = ["MAX_PIXELS", "load_image"]

MAX_PIXELS = 1024 * 1024  # larger images are downscaled (aspect kept) before any processor sees them


def load_image(image: Any, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """An RGB PIL image from a path or PIL image; grayscale/RGBA converted, huge ones downscaled.

    Grayscale, palette, CMYK and 16-bit images are converted to RGB; images with an alpha channel are
    composited on white; images over ``max_pixels`` pixels are downscaled (bicubic, aspect ratio kept).
    The caller's image is never modified. ``ImageError`` for a missing, corrupt, truncated or
    decompression-bomb-sized file, or for something that is not an image.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise ImageError(f"image file {path} does not exist; check the path (relative paths start from {Path.cwd()}).")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except Image.DecompressionBombError as e:  # not an OSError: would escape as a raw PIL error
            raise ImageError(
                f"image file {path} is too large to decode safely ({e}). Downscale it first, or, if you trust the "
                "file, raise PIL.Image.MAX_IMAGE_PIXELS (load_image then downscales it to max_pixels)."
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ImageError(
                f"image file {path} cannot be decoded ({type(e).__name__}: {e}); it is corrupt or not "
                "an image. Replace or remove it."
            ) from None
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a path or a PIL image, got {type(image).__name__}.")
    if image.width < 1 or image.height < 1:
        raise ImageError(f"image has no pixels ({image.width}x{image.height}).")
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.getchannel("A"))
            image = bg
        else:
            image = image.convert("RGB")
    if max_pixels is not None and image.width * image.height > max_pixels:
        scale = (max_pixels / (image.width * image.height)) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.BICUBIC)
    return image
