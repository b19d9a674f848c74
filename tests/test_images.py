import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from spidergan.images import ImageRejected, load_gray, load_rgb


def _bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, format=fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "RGBA", "I;16", "I", "1"])
def test_modes_become_rgb(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    if mode == "I;16":
        im = Image.fromarray((np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16))
    else:
        im = base.convert(mode)
    fmt = {"CMYK": "JPEG", "I": "TIFF"}.get(mode, "PNG")
    out = load_rgb(_bytes(im, fmt))
    assert out.mode == "RGB" and out.size == (50, 40)


def test_16bit_scaled_not_clipped():
    im = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert np.asarray(load_rgb(_bytes(im, "PNG"))).min() == 255


def test_alpha_flattened_on_white():
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert np.asarray(load_rgb(_bytes(im, "PNG"))).min() == 255


def test_exif_orientation_applied():
    im = Image.new("RGB", (60, 30), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    out = load_rgb(_bytes(im, "JPEG", exif=exif.tobytes()))
    assert out.size == (30, 60)


@pytest.mark.parametrize("data, reason", [
    (b"<html><body>not found</body></html>", "not_an_image"),
    (b"", "not_an_image"),
])
def test_not_images(data, reason):
    with pytest.raises(ImageRejected) as e:
        load_rgb(data)
    assert e.value.reason == reason


def test_truncated_jpeg_rejected():
    data = _bytes(Image.new("RGB", (200, 200), "green"), "JPEG")
    with pytest.raises(ImageRejected) as e:
        load_rgb(data[: len(data) // 2])
    assert e.value.reason == "corrupt"


def test_bomb_header_rejected_before_decoding():
    data = bytearray(_bytes(Image.new("L", (10, 10)), "PNG"))
    data[16:24] = (40000).to_bytes(4, "big") + (40000).to_bytes(4, "big")  # IHDR width/height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid header CRC
    with pytest.raises(ImageRejected) as e:
        load_rgb(bytes(data), max_pixels=100_000_000)
    assert e.value.reason == "too_large"


def test_min_side(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (100, 40)).save(p)
    with pytest.raises(ImageRejected) as e:
        load_rgb(p, min_side=64)
    assert e.value.reason == "too_small"
    with pytest.raises(ImageRejected) as e:
        load_rgb(tmp_path / "missing.png")
    assert e.value.reason == "missing"


def _pillow_draft(data, size, orientation=1):
    im = Image.open(io.BytesIO(data))
    im.draft("L", size)
    im.load()
    return np.asarray(im if orientation == 1 else ImageOps.exif_transpose(im))


@pytest.mark.parametrize("wh,draft", [((640, 480), (64, 64)), ((333, 517), (64, 64)),
                                      ((300, 200), (64, 64)), ((90, 70), (64, 64))])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_gray_draft_equals_pillow_draft(tmp_path, wh, draft, mode):
    """The reduced-scale JPEG path decodes exactly the pixels of Pillow's draft mode."""
    rng = np.random.default_rng(wh[0])
    im = Image.fromarray(rng.integers(0, 255, (wh[1] // 8, wh[0] // 8, 3), dtype=np.uint8)).resize(wh)
    data = _bytes(im.convert(mode), "JPEG", quality=85)
    (tmp_path / "a.jpg").write_bytes(data)
    want = _pillow_draft(data, draft)
    for src in (tmp_path / "a.jpg", str(tmp_path / "a.jpg"), data):
        got = load_gray(src, draft=draft)
        assert got.mode == "L" and np.array_equal(np.asarray(got), want)


def test_gray_draft_orientation_cmyk_and_truncation(tmp_path):
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).resize((600, 400))
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = _bytes(im, "JPEG", quality=90, exif=exif)
        got = np.asarray(load_gray(data, draft=(64, 64)))
        assert np.array_equal(got, _pillow_draft(data, (64, 64), orientation))
    cmyk = _bytes(im.convert("CMYK"), "JPEG")  # not the fast path: Pillow decodes it
    assert load_gray(cmyk, draft=(64, 64)).mode == "L"
    whole = _bytes(im, "JPEG", quality=90)
    with pytest.raises(ImageRejected) as e:
        load_gray(whole[: len(whole) // 2], draft=(64, 64))
    assert e.value.reason == "corrupt"
