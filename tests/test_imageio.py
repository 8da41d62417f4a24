"""Decoding odd files into upright 8-bit RGB: every mode, EXIF, 16 bit, alpha, GIF, bad bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from face_emotion.imageio import (
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    is_image_path,
    load_image,
)
from support import odd_images as odd
from support.images import encode


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def close(actual, expected, tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tolerance))


@pytest.mark.parametrize("name", sorted(odd.READABLE))
def test_every_readable_kind_decodes_to_rgb_uint8_of_the_right_size(name):
    build, _ = odd.READABLE[name]
    source = Image.open(io.BytesIO(build()))
    image = decode_image(build())
    array = np.asarray(image)
    width, height = odd.expected_size(name)
    assert image.mode == "RGB"
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)
    # The table really covers the odd modes it claims to (so this test is not vacuous).
    expected_source_mode = {
        "grayscale_jpg": "L", "palette_png": "P", "la_png": "LA", "rgba_png": "RGBA",
        "sixteen_bit_png": "I;16", "cmyk_tiff": "CMYK",
    }.get(name)
    if expected_source_mode:
        assert source.mode == expected_source_mode


@pytest.mark.parametrize("name", sorted(odd.READABLE))
def test_load_image_reads_files_with_each_extension(tmp_path, name):
    build, extension = odd.READABLE[name]
    path = tmp_path / f"picture{extension}"
    path.write_bytes(build())
    assert is_image_path(path)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(decode_image(build())))


def test_exif_orientation_rotates_the_pixels():
    plain = pixels(decode_image(odd.plain_jpeg()))
    rotated = pixels(decode_image(odd.exif_rotated_jpeg()))
    # Without the tag: 48 x 32 with the red block top-left.
    assert plain.shape[:2] == (32, 48)
    assert close(plain[3, 3], odd.RED) and close(plain[3, -4], odd.BLUE)
    # Orientation 6 (rotate 90 degrees clockwise): 32 x 48, the red block moved to the top-right.
    assert rotated.shape[:2] == (48, 32)
    assert close(rotated[3, -4], odd.RED)
    assert close(rotated[3, 3], odd.BLUE)
    assert close(rotated[-4, -4], odd.BLUE) and close(rotated[-4, 3], odd.BLUE)
    # It is exactly the stored image turned clockwise.
    assert np.abs(rotated - np.rot90(plain, k=-1)).mean() < 3


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white():
    image = pixels(decode_image(odd.sixteen_bit_png()))
    # 64 * 257 and 192 * 257 in 16 bit are 64 and 192 in 8 bit; clipping would make both 255.
    assert close(image[5, 5], (64, 64, 64), tolerance=1)
    assert close(image[5, -5], (192, 192, 192), tolerance=1)
    dark = pixels(decode_image(odd.sixteen_bit_png(left=0, right=65535)))
    assert close(dark[5, 5], (0, 0, 0), 0) and close(dark[5, -5], (255, 255, 255), 0)


@pytest.mark.parametrize(
    "build, opaque_colour",
    [(odd.palette_png_transparent, odd.RED), (odd.la_png, (0, 0, 0)), (odd.rgba_png, odd.GREEN)],
    ids=["palette", "LA", "RGBA"],
)
def test_transparent_pixels_are_composited_on_white(build, opaque_colour):
    image = pixels(decode_image(build()))
    # The transparent half hides black pixels; a naive convert("RGB") would show them black.
    assert close(image[5, 5], odd.WHITE, 0)
    assert close(image[5, -5], opaque_colour, 0)


def test_half_transparent_pixels_are_blended():
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[..., 3] = 128  # black at half opacity over white -> mid grey
    image = pixels(decode_image(encode(Image.fromarray(array, mode="RGBA"), "PNG")))
    assert close(image[4, 4], (127, 127, 127), tolerance=2)


def test_cmyk_becomes_rgb():
    image = pixels(decode_image(odd.cmyk_tiff()))
    assert close(image[5, 5], (0, 255, 255), 0)  # full cyan
    assert close(image[5, -5], (255, 255, 255), 0)  # no ink


def test_grayscale_is_replicated_to_three_equal_channels():
    image = pixels(decode_image(odd.grayscale_jpeg()))
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert close(image[5, 5, 0], 40, 6) and close(image[5, -5, 0], 200, 6)


def test_animated_gif_gives_its_first_frame():
    data = odd.animated_gif()
    assert Image.open(io.BytesIO(data)).n_frames == 2
    image = pixels(decode_image(data))
    assert close(image[5, 5], odd.RED, 0) and close(image[-5, -5], odd.RED, 0)


@pytest.mark.parametrize(
    "data, words",
    [
        (odd.truncated_jpeg(), "truncated"),
        (odd.garbage_bytes(), "not a recognised image"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n", ""),  # the signature and nothing else
        (odd.png_header_only(40, 30), ""),  # a valid header but no pixel data
    ],
    ids=["truncated-jpeg", "text", "empty", "png-signature-only", "png-without-data"],
)
def test_unreadable_bytes_raise_image_decode_error(data, words):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert type(info.value) is ImageDecodeError  # not mistaken for "too large"
    assert words in str(info.value)
    assert info.value.code == "invalid_image"


def test_load_image_of_a_corrupt_file_raises_image_decode_error(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(odd.truncated_jpeg())
    with pytest.raises(ImageDecodeError):
        load_image(path)


def test_pixel_limit_refuses_before_decoding():
    # 8000 x 8000 = 64 M pixels: over our 40 M default, under Pillow's own bomb warning (89 M).
    # The file holds no pixel data, so had the decoder started it would have raised a plain
    # (truncated) ImageDecodeError instead.
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(odd.png_header_only(8_000, 8_000))
    assert "8000x8000" in str(info.value)
    assert info.value.code == "image_too_large"
    with pytest.raises(ImageTooLargeError):
        decode_image(odd.png_header_only(100, 100), max_pixels=9_999)
    # Just under the limit it is not "too large" (but still unreadable: no data).
    with pytest.raises(ImageDecodeError) as info:
        decode_image(odd.png_header_only(100, 100), max_pixels=10_000)
    assert type(info.value) is ImageDecodeError


def test_decompression_bomb_beyond_pillows_own_limit_is_too_large_even_without_our_limit():
    with pytest.raises(ImageTooLargeError):
        decode_image(odd.png_header_only(20_000, 20_000), max_pixels=None)


def test_a_real_image_within_the_limit_decodes():
    image = decode_image(odd.plain_jpeg(), max_pixels=48 * 32)
    assert image.size == (48, 32)


def test_is_image_path_is_case_insensitive_and_rejects_other_files(tmp_path):
    assert is_image_path(tmp_path / "A.JPG") and is_image_path(tmp_path / "b.Jfif")
    assert not is_image_path(tmp_path / "notes.txt") and not is_image_path(tmp_path / "noextension")
