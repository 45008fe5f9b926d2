"""Reading images and masks the user gives, and writing samples, with Pillow.

Any size and mode is accepted and brought to what the model needs (grey or RGB, its size,
its levels), with a note for each change so nothing happens silently:
* transparency is composited onto black (the background of MNIST);
* 16-bit and float images are scaled to 0..255;
* colour is turned into grey (ITU-R 601 luma, as Pillow's "L") for grey models;
* other sizes are resized (box filter when shrinking, bilinear when enlarging);
* for binary models pixels >= 128 become 1 (white), the rest 0.

A file that is missing, empty, truncated or not an image raises one `InputError` naming it.
Masks: white (>= 128 after the same conversion to grey) = regenerate, black = keep. A mask
must have the size of the image it goes with, or the model's size (as the studio's canvas).
A mode Pillow cannot convert (e.g. "La") is an `InputError` naming the file too.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from engines import limits
from engines.atomic import atomic_path
from engines.errors import InputError, file_fault

MAX_PIXELS = limits.MAX_IMAGE_PIXELS  # width x height from the header, checked before decoding


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (C, H, W) uint8 in 0..levels-1 at the model's size
    original_size: tuple[int, int]  # (width, height) of the file
    notes: list[str] = field(default_factory=list)


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    p = Path(path)
    # stat() first: a FIFO would block, a name over the OS limit raises OSError, a device never ends
    limits.check_regular_file(p, what)
    try:
        # Image.open reads only the header; Pillow's own bomb check would warn on stderr there,
        # ours (below, on the same header size and a lower cap) refuses in one line instead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{what} {p} is {w}x{h} pixels, too large to use (at most {MAX_PIXELS:,} pixels; "
                                 "nothing was decoded)")
            im.load()
            return im.copy()
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what} {p} is too large to use (more than {MAX_PIXELS:,} pixels; nothing was decoded)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = file_fault(exc)  # Pillow may quote the file's bytes ("broken PNG file (chunk b'...')")
        raise InputError(f"cannot read {what} {p}: not a readable image (corrupt or truncated?): {detail}") from exc


def _rgb_float(im: Image.Image, notes: list[str], what: str, path: str | os.PathLike | None = None) -> np.ndarray:
    """(H, W, 3) float64 in 0..255, transparency composited onto black; InputError (naming `path`)
    for a mode Pillow cannot convert."""
    try:
        return _rgb_float_unchecked(im, notes, what)
    except (ValueError, TypeError, OSError) as exc:
        where = f" {path}" if path is not None else ""
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot use {what}{where}: its pixel mode {im.mode!r} cannot be converted ({detail}); "
                         "save it as an ordinary grey or RGB PNG") from exc


def _rgb_float_unchecked(im: Image.Image, notes: list[str], what: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            a = a / 257.0
            notes.append(f"{what}: 16-bit values scaled to 8 bits")
        elif mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
            notes.append(f"{what}: floating-point values in [0, 1] scaled to 0..255")
        elif a.size and np.nanmax(a) > 255:
            a = a * (255.0 / np.nanmax(a))
            notes.append(f"{what}: values up to {np.nanmax(np.asarray(im)):g} scaled to 0..255")
        a = np.clip(np.nan_to_num(a), 0, 255)
        return np.repeat(a[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:4] / 255.0
        if (alpha < 1).any():
            notes.append(f"{what}: transparent areas treated as black")
        return rgba[..., :3] * alpha
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """(h, w, c) float 0..255 -> (height, width, c) float, box filter when shrinking."""
    h, w = a.shape[:2]
    if (w, h) == (width, height):
        return a
    method = Image.Resampling.BOX if (width <= w and height <= h) else Image.Resampling.BILINEAR
    chans = [np.asarray(Image.fromarray(a[..., i].astype(np.float32)).resize((width, height), method),
                        dtype=np.float64) for i in range(a.shape[2])]
    return np.stack(chans, axis=2)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as Pillow's convert("L"): (H, W, 3) -> (H, W, 1)."""
    return (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114)[..., None] / 1000.0


def read_image(path: str | os.PathLike, *, channels: int, height: int, width: int, levels: int,
               what: str = "image") -> LoadedImage:
    """An image file as (C, H, W) uint8 model values, with notes on every conversion."""
    im = _open(path, what)
    notes: list[str] = []
    size = im.size
    rgb = _rgb_float(im, notes, what, path)  # (h, w, 3)
    if channels == 1:
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            notes.append(f"{what}: colour converted to grey")
        a = _grey(rgb)
    else:
        a = rgb
    if size != (width, height):
        notes.append(f"{what}: resized from {size[0]}x{size[1]} to {width}x{height}"
                     + (" (aspect ratio changed)" if size[0] * height != size[1] * width else ""))
        a = _resize(a, width, height)
    a = np.clip(np.round(a), 0, 255)
    if levels == 2:
        if np.any((a > 0) & (a < 255)):
            notes.append(f"{what}: binarized (grey levels >= 128 became white, the rest black)")
        q = (a >= 128).astype(np.uint8)
    elif levels == 256:
        q = a.astype(np.uint8)
    else:
        q = np.round(a * (levels - 1) / 255.0).astype(np.uint8)
    return LoadedImage(np.ascontiguousarray(q.transpose(2, 0, 1)), size, notes)


def read_mask(path: str | os.PathLike, *, height: int, width: int,
              image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """A mask file as (H, W) bool, True (white) = regenerate.

    With `image_size` (the init file's size) the mask must be that size or the model's
    (width x height, what the studio's canvas and a saved sample have); InputError otherwise."""
    im = _open(path, "mask")
    notes: list[str] = []
    if image_size is not None and im.size not in (tuple(image_size), (width, height)):
        also = f" (or {width}x{height}, the model's size)" if tuple(image_size) != (width, height) else ""
        raise InputError(f"the mask {path} is {im.size[0]}x{im.size[1]} but the image is "
                         f"{image_size[0]}x{image_size[1]}{also}: they must be the same size")
    a = _grey(_rgb_float(im, notes, "mask", path))
    if im.size != (width, height):
        notes.append(f"mask: resized from {im.size[0]}x{im.size[1]} to {width}x{height} (a pixel is regenerated "
                     "when at least half of its area is white)")
        a = _resize(a, width, height)
    mask = a[..., 0] >= 127.5
    return mask, notes


def check_mask_coverage(mask: np.ndarray) -> None:
    if not mask.any():
        raise InputError("the mask has no white pixels: there is nothing to regenerate "
                         "(white = regenerate, black = keep)")
    if mask.all():
        raise InputError("the mask is white everywhere: every pixel would be regenerated and nothing of the image kept; "
                         "leave out --init and --mask to generate from scratch")


def to_8bit(pixels: np.ndarray, levels: int) -> np.ndarray:
    """(C, H, W) model values -> (H, W) or (H, W, 3) uint8 0..255 for display or saving."""
    p = np.asarray(pixels, dtype=np.float64)
    a = np.round(p * (255.0 / (levels - 1))).clip(0, 255).astype(np.uint8)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def to_pil(pixels: np.ndarray, levels: int, scale: int = 1):
    """(C, H, W) model values as a PIL image (L or RGB), `scale` times larger without smoothing."""
    a = to_8bit(pixels, levels)
    im = Image.fromarray(np.ascontiguousarray(a))  # uint8: L or RGB
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    return im


MAX_SCALE = 64  # a display copy of a 28x28 sample at 64x is 1792x1792


def check_scale(scale) -> int:
    """A display scale as an int in 1..MAX_SCALE; InputError otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise InputError(f"scale {scale!r} is invalid: must be a whole number in 1..{MAX_SCALE}")
    return scale


def scaled_path(path: str | os.PathLike, scale: int) -> Path:
    """Where the display copy of a sample goes: `s.png` at 8x -> `s@8x.png` beside it."""
    p = Path(path)
    return p.with_name(f"{p.stem}@{scale}x{p.suffix or '.png'}")


def write_image(path: str | os.PathLike, pixels: np.ndarray, levels: int, request_json=None, *,
                scale: int = 1) -> None:
    """Save (C, H, W) model values as a PNG (written atomically: a failure leaves no half file),
    `scale` times larger (nearest neighbour), with `request_json` in its text chunk when given."""
    im = to_pil(pixels, levels, scale)
    if request_json is not None:
        from engines.requests import embed_in_png

        embed_in_png(path, im, request_json)
        return
    with atomic_path(path) as tmp:
        try:
            im.save(tmp, format="PNG")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc}") from exc


def write_sample(path: str | os.PathLike, pixels: np.ndarray, levels: int, request_json=None,
                 scale: int = 1) -> str | None:
    """The model-size PNG at `path` and, with `scale` > 1, its display copy `NAME@{scale}x.png`
    beside it; both carry `request_json`. The display copy's path (None without one)."""
    write_image(path, pixels, levels, request_json)
    if scale == 1:
        return None
    big = scaled_path(path, scale)
    write_image(big, pixels, levels, request_json, scale=scale)
    return str(big)


def png_bytes(pixels: np.ndarray, levels: int, request_json=None, scale: int = 1) -> bytes:
    """The PNG file `write_image` would write, as bytes (for a history store)."""
    import io

    from PIL import PngImagePlugin

    from engines.requests import PNG_CHUNK_KEY, dumps

    info = None
    if request_json is not None:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(PNG_CHUNK_KEY, dumps(request_json), zip=True)
    buf = io.BytesIO()
    to_pil(pixels, levels, scale).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
