"""Open, validate and normalise one image: the single place that decodes untrusted files.

Every image entering the pipeline passes `load_rgb` (or `validate_bytes`): it must decode fully,
is guarded against decompression bombs before decoding, has its EXIF orientation applied, is
converted to 8-bit RGB from L, LA, P, CMYK, I;16, I, F or RGBA (alpha flattened on white), and
must reach a minimum size. A rejected file raises `ImageRejected` whose `reason` is a short
machine-readable code and whose message is for people.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
# rejection reasons that depend on the file's content only: fetching it again will not help
CONTENT_REASONS = frozenset({"empty", "not_an_image", "corrupt", "too_large"})


class ImageRejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _open(src) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(src)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise ImageRejected("not_an_image", str(e)) from None
        raise ImageRejected("too_large", str(e)) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageRejected("corrupt", str(e)) from None
    except ImportError as e:  # a plugin hook (e.g. ultralytics' HEIF patch) lacking its package
        raise ImageRejected("not_an_image", str(e)) from None


def _open_checked(src, max_pixels: int) -> Image.Image:
    """Open (not decode) `src`: path, bytes or file object; size checked against `max_pixels`."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    elif isinstance(src, (str, Path)) and not Path(src).is_file():
        raise ImageRejected("missing", str(src))
    im = _open(src)
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageRejected("corrupt", f"size {w}x{h}")
    # checked before decoding: a header may claim 40000x40000 in a 100-byte file
    if w * h > max_pixels:
        raise ImageRejected("too_large", f"{w}x{h} exceeds {max_pixels} pixels")
    return im


def to_rgb(im: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """8-bit RGB from any PIL mode; transparency is flattened onto `background`."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            a = a / 257.0
        elif im.mode == "I" and a.max(initial=0) > 255:
            a = a / (a.max() / 255.0)
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode == "RGB;16" or im.mode.startswith("RGB"):
        return im.convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, P


def load_rgb(src, *, min_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
             exif: bool = True) -> Image.Image:
    """Decode `src` (path, bytes or file object) fully into an RGB image, or raise ImageRejected."""
    im = _open_checked(src, max_pixels)
    try:
        im.load()
        if exif:
            im = ImageOps.exif_transpose(im)
        rgb = to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageRejected("corrupt", str(e)) from None
    if min(rgb.size) < min_side:
        raise ImageRejected("too_small", f"{rgb.size[0]}x{rgb.size[1]} below min_side {min_side}")
    return rgb


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_gray(src, *, draft: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
              exif: bool = True) -> Image.Image:
    """Decode `src` into an 8-bit "L" image, or raise ImageRejected (for hashing).

    Without `draft` the pixels equal `load_rgb(src).convert("L")`, with less copying: no RGB
    copy is made when the orientation is already upright. With `draft=(w, h)` a JPEG is decoded
    at a reduced DCT scale (1/2, 1/4 or 1/8, staying at least `draft` large) straight to
    grayscale, which skips most of the decoding work; the pixels then differ slightly.
    """
    im = _open_checked(src, max_pixels)
    try:
        orientation = im.getexif().get(0x0112, 1) if exif else 1  # 0x0112: Orientation
        if draft is not None and im.format == "JPEG":
            fast = _jpeg_gray_reduced(src, im, draft)
            if fast is not None:
                return fast.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else fast
            im.draft("L", (max(1, int(draft[0])), max(1, int(draft[1]))))
        im.load()
        if orientation in _TRANSPOSE:
            im = im.transpose(_TRANSPOSE[orientation])
        if im.mode == "L":
            return im
        if im.mode == "RGB":
            return im.convert("L")
        return to_rgb(im).convert("L")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageRejected("corrupt", str(e)) from None


# EXIF orientation -> the transpose that makes the image upright (ImageOps.exif_transpose's
# mapping; the fast path's decoded pixels carry no EXIF for that function to read)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _jpeg_gray_reduced(src, im: Image.Image, draft: tuple[int, int]) -> Image.Image | None:
    """The pixels Pillow's `draft("L", draft)` decodes, through OpenCV's libjpeg call, which
    costs about 12% less per image (Pillow feeds its decoder in Python-driven chunks). None when
    this path does not apply; the caller then decodes with Pillow, which judges the file.

    Only complete baseline files come here: OpenCV fills a truncated JPEG with gray and does not
    fail, so a file that does not end with the JPEG end marker goes to Pillow, which rejects it.
    """
    import cv2

    if im.mode not in ("L", "RGB"):  # CMYK and other rare JPEGs: Pillow's path
        return None
    if isinstance(src, (str, Path)):
        data = Path(src).read_bytes()
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        return None
    if data.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return None
    # Pillow's choice of DCT scale: the largest of 8, 4, 2 that keeps both sides >= draft
    ratio = min(im.size[0] // max(1, int(draft[0])), im.size[1] // max(1, int(draft[1])))
    scale = next((s for s in (8, 4, 2) if ratio >= s), 1)  # smaller than draft: full size
    reduced = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
               4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
    flags = reduced[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if gray is None or gray.ndim != 2:
        return None
    return Image.fromarray(gray, "L")


class Validated:
    """The outcome of `validate_bytes`: the RGB image and whether the original bytes can be kept.

    `keep_original` is true for a plain 8-bit RGB JPEG or PNG without an EXIF rotation: those
    are stored byte for byte (so the sha256 matches the source). Anything else (grayscale, CMYK,
    16-bit, palette, alpha, rotated, WebP, TIFF) is stored re-encoded from `image`, with the
    suffix `suffix` (.jpg for JPEG sources, .png otherwise).
    """

    __slots__ = ("image", "format", "keep_original", "suffix")

    def __init__(self, image: Image.Image, format: str, keep_original: bool, suffix: str):
        self.image = image
        self.format = format
        self.keep_original = keep_original
        self.suffix = suffix

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def validate_bytes(data: bytes, *, min_side: int = 0,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> Validated:
    """Validate an encoded image fully (see `load_rgb`) and decide how to store it."""
    if not data:
        raise ImageRejected("empty", "0 bytes")
    probe = _open(io.BytesIO(data))
    fmt = probe.format or ""
    mode = probe.mode
    try:
        orientation = probe.getexif().get(0x0112, 1) if fmt in ("JPEG", "PNG", "MPO") else 1
    except Exception:  # a broken EXIF block is not a reason to reject the pixels
        orientation = 1
    rgb = load_rgb(data, min_side=min_side, max_pixels=max_pixels)
    keep = fmt in ("JPEG", "PNG") and mode == "RGB" and orientation in (None, 1) \
        and "transparency" not in probe.info
    # MPO (phone photos: a JPEG with extra frames appended) is stored as its first frame, JPEG
    suffix = ".jpg" if fmt in ("JPEG", "MPO") else ".png"
    return Validated(rgb, fmt, keep, suffix)


def encode(v: Validated) -> bytes:
    """The bytes to store for a validated image whose original cannot be kept."""
    buf = io.BytesIO()
    if v.suffix == ".jpg":
        v.image.save(buf, format="JPEG", quality=95, subsampling=0)
    else:
        v.image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
