"""Reading and normalising input images (paths or PIL images) for every stage."""

from __future__ import annotations

import numbers
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = ["MAX_PIXELS", "MAX_ASPECT", "load_image"]

MAX_PIXELS = 1024 * 1024  # larger images are downscaled (aspect kept) before any processor sees them
MAX_ASPECT = 200  # longer side / shorter side; Qwen2-VL-family processors refuse anything thinner
# (those processors also keep each side >= 28 px, so an image thinner than max_pixels/784 : 1 gets more than
# their max_pixels; with the presets' 448x448 cap every image load_image accepts stays under it)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^data:", re.ASCII)


def _open(path: Path) -> Image.Image:
    """The decoded image at ``path``; ``ImageError`` when it is missing, corrupt or a decompression bomb."""
    if not path.exists():
        raise ImageError(f"image file {path} does not exist; check the path (relative paths start from {Path.cwd()}).")
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)  # upright, as cameras mean it; a copy either way
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


def _value_range(a: np.ndarray, mode: str) -> tuple[float, float]:
    """The range a high-bit-depth image's values live in: its bit depth's, or 0..1 / 0..255 for floats, else min..max."""
    if mode.startswith("I;16"):
        return 0.0, 65535.0
    lo, hi = float(a.min()), float(a.max())
    if mode == "F" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    for top in (255.0, 65535.0):
        if lo >= 0 and hi <= top:
            return 0.0, top
    return (lo, hi) if hi > lo else (lo, lo + 1)


def _to_8bit(image: Image.Image) -> Image.Image:
    """A grey "L" image from a 16-bit, 32-bit integer or float one, scaled by its value range (not clipped)."""
    a = np.asarray(image, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ImageError(f"the {image.mode} image ({image.width}x{image.height}) holds NaN or infinite pixel values; fix or replace it.")
    lo, hi = _value_range(a, image.mode)
    return Image.fromarray(np.clip(np.rint((a - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB: high bit depths scaled to 8 bits, alpha composited on white, other modes converted."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return image.convert("RGB") if image.mode != "RGB" else image


def _fit(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """``image`` downscaled (aspect kept, bicubic) to at most ``max_pixels`` pixels; thin ones never overshoot."""
    if max_pixels is None or image.width * image.height <= max_pixels:
        return image
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    short, long_ = sorted(image.size)
    s = max(1, int(short * scale))  # the short side floors at 1 pixel, so the long side gets what is left
    n = max(1, min(int(long_ * scale), max_pixels // s))
    w, h = (s, n) if image.width <= image.height else (n, s)
    return image.resize((w, h), Image.BICUBIC)


def load_image(image: Any, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """An RGB PIL image from a path or PIL image; EXIF-rotated, converted to 8-bit RGB, huge ones downscaled.

    JPEG/TIFF EXIF orientation is applied (the image is used upright). Grayscale, palette and CMYK
    images are converted to RGB; 16-bit, 32-bit integer and float images are scaled to 8 bits by the
    range their values live in (16-bit: 0..65535; float: 0..1 when all values lie in it, else
    0..255, else min..max), not clipped; images with an alpha channel are composited on white; images
    over ``max_pixels`` pixels are downscaled (bicubic, aspect ratio kept, never above the cap). The
    caller's image is never modified. ``ImageError`` for a URL (download the file first), a missing,
    corrupt, truncated or decompression-bomb-sized file, something that is not an image, NaN pixels,
    or an image more than ``MAX_ASPECT`` times longer than wide (Qwen2-VL processors refuse those).
    """
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1):
        raise ImageError(f"max_pixels must be None or a whole number >= 1, got {max_pixels!r}.")
    if isinstance(image, str) and _URL.match(image.strip()):
        raise ImageError(f"URLs are not supported; download the file and pass its path (got {image.strip()[:200]!r}).")
    if isinstance(image, (str, os.PathLike)):
        image = _open(Path(image))
    elif isinstance(image, Image.Image) and image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)  # a copy; the caller's image keeps its EXIF tag
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a path or a PIL image, got {type(image).__name__}.")
    if image.width < 1 or image.height < 1:
        raise ImageError(f"image has no pixels ({image.width}x{image.height}).")
    if max(image.size) > MAX_ASPECT * min(image.size):
        raise ImageError(
            f"image is {image.width}x{image.height}: one side is over {MAX_ASPECT} times the other, which "
            "Qwen2-VL-family processors refuse and no model can read. Crop it, or pad it towards a square."
        )
    return _fit(_to_rgb(image), max_pixels)
