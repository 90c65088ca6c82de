"""Tests of rlaifv_lib.images.load_image: bit depths, EXIF orientation, thin images, URLs."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rlaifv_lib.errors import ImageError
from rlaifv_lib.images import MAX_ASPECT, load_image


def _png16_rgb(path, rgb16: tuple[int, int, int], size=(6, 4)) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""
    w, h = size
    row = b"\x00" + struct.pack(">HHH", *rgb16) * w
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * h)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("value,expected", [(0, 0), (32768, 128), (65535, 255), (16384, 64)])
def test_16bit_grey_png_scales_by_its_bit_depth(tmp_path, value, expected):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((5, 7), value, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"  # really a 16-bit file
    for source in (path, Image.open(path)):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (7, 5) and out.getpixel((2, 2)) == (expected,) * 3


def test_16bit_rgb_png_keeps_its_colour(tmp_path):
    path = tmp_path / "rgb16.png"
    _png16_rgb(path, (65535, 32768, 0))
    assert load_image(path).getpixel((1, 1)) == (255, 128, 0)


@pytest.mark.parametrize("values,expected", [
    ((0.0, 0.5, 1.0), (0, 128, 255)),  # a 0..1 float image
    ((0.0, 127.0, 255.0), (0, 127, 255)),  # a float image in 0..255
    ((-1.0, 0.0, 1.0), (0, 128, 255)),  # any other range: its min..max
])  # fmt: skip
def test_float_tiff_scales_by_its_value_range(tmp_path, values, expected):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.array([values], dtype=np.float32)).save(path)
    assert Image.open(path).mode == "F"
    out = load_image(path)
    assert [out.getpixel((x, 0))[0] for x in range(3)] == list(expected)


def test_32bit_integer_and_non_finite_images():
    assert load_image(Image.fromarray(np.full((3, 3), 255, dtype=np.int32))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.fromarray(np.full((3, 3), 65535, dtype=np.int32))).getpixel((0, 0)) == (255, 255, 255)
    bad = np.zeros((3, 3), dtype=np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_image(Image.fromarray(bad))


def _sideways_jpeg(path, orientation: int = 6) -> Image.Image:
    """A 40x20 JPEG, left half red and right half blue, tagged with an EXIF orientation."""
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)
    return im


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "photo.jpg"
    _sideways_jpeg(path, orientation=6)  # 6: the camera was turned; show rotated 90 degrees clockwise
    opened = Image.open(path)
    for source in (path, opened):
        out = load_image(source)
        assert out.size == (20, 40)  # upright: portrait
        top, bottom = out.getpixel((10, 3)), out.getpixel((10, 36))
        assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # the left (red) half is now on top
    assert opened.size == (40, 20) and opened.getexif()[0x0112] == 6  # the caller's image is untouched
    _sideways_jpeg(path, orientation=1)
    assert load_image(path).size == (40, 20)


@pytest.mark.parametrize("size", [(1, 150), (150, 1), (2, 399), (3, 500), (7, 1400), (1000, 999), (199, 1)])
@pytest.mark.parametrize("cap", [1, 10, 100, 784, 1000])
def test_downscaled_images_never_exceed_max_pixels(size, cap):
    out = load_image(Image.new("RGB", size, (9, 9, 9)), max_pixels=cap)
    assert out.width * out.height <= cap and min(out.size) >= 1
    if size[0] * size[1] <= cap:
        assert out.size == size


def test_too_thin_images_and_bad_caps_are_clear_errors():
    with pytest.raises(ImageError, match=f"over {MAX_ASPECT} times the other"):
        load_image(Image.new("RGB", (1, MAX_ASPECT + 1)))
    assert load_image(Image.new("RGB", (1, MAX_ASPECT))).size == (1, MAX_ASPECT)
    for cap in (0, -5, 2.5, True):
        with pytest.raises(ImageError, match="max_pixels must be None or a whole number"):
            load_image(Image.new("RGB", (4, 4)), max_pixels=cap)


@pytest.mark.parametrize("url", ["https://example.com/cat.jpg", "http://x/y.png", "  s3://bucket/key.png", "data:image/png;base64,iVBOR"])
def test_urls_are_refused_with_advice(url):
    with pytest.raises(ImageError, match="URLs are not supported; download the file"):
        load_image(url)
