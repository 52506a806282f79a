"""Write the test input corpus: files a user might send that the server must refuse, and odd but
valid photos it must serve upright and aligned.

Regenerate (deterministic: fixed seeds, Pillow and numpy only, no timestamps in the files):

    .venv/bin/python tests/corpus/make_corpus.py          # rewrites the files next to this script

``BAD`` and ``VALID`` below say what each file must do (status and error words; upright size and
where the subject is), so the files and their expectations have one source:
``tests/handler/test_corpus.py`` imports them. The files are committed so that a change of Pillow
or of this script shows up as a diff instead of silently testing something else.

Every valid photo shows the same synthetic subject: a bright rectangle (values 215-245) on a dark,
slightly noisy background (10-40), off-centre and asymmetric in both directions, so that a
missed or wrong EXIF rotation, a mirrored image or the wrong GIF frame moves the subject somewhere
a test can see.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS_DIR = Path(__file__).resolve().parent
# Upright size (W, H) of every valid photo and where its subject is (x0, y0, x1, y1, exclusive):
# right of centre and above centre, so a flip or a 90-degree turn either way moves it.
SIZE = (160, 112)
BOX = (94, 14, 142, 80)
# Frame 1 of the animated GIF has its subject here instead: decoding the wrong frame is visible.
GIF_OTHER_BOX = (12, 40, 60, 104)


@dataclass(frozen=True)
class Bad:
    """A file the server must refuse: ``status`` and every word of ``words`` in the JSON ``error``.

    ``field`` is where it is sent: ``image`` (the raw body) or ``background`` (the uploaded
    background of a ``composite``, next to a valid photo).
    """

    name: str
    status: int
    words: tuple[str, ...]
    why: str
    field: str = "image"


@dataclass(frozen=True)
class Valid:
    """An odd but valid photo: served with status 200 and a mask of ``size`` (upright: after EXIF
    orientation), subject at ``BOX``."""

    name: str
    why: str
    size: tuple[int, int] = SIZE
    box: tuple[int, int, int, int] = BOX


BAD = (
    Bad("empty.jpg", 400, ("empty",), "zero bytes (an upload that lost its content)"),
    Bad("text.txt", 400, ("not an image",), "a text file picked by mistake"),
    Bad("truncated.jpg", 400, ("truncated",), "a JPEG cut in half (an interrupted copy)"),
    Bad("truncated.png", 400, ("truncated",), "a PNG cut inside its pixel data"),
    Bad("one_pixel.png", 400, ("1x1", "at least 16"), "a 1x1 image: nothing to segment"),
    Bad("bomb_50000x50000.png", 413, ("megapixels", "before decoding"),
        "a 1 KB PNG whose header (valid CRC) claims 50,000 x 50,000: refused before decoding"),
    Bad("background_not_an_image.pdf", 400, ("background image", "not an image"),
        "a PDF uploaded as the background of a composite", field="background"),
)

VALID = (
    Valid("cmyk.jpg", "a CMYK JPEG (print workflows)"),
    Valid("grey16.png", "a 16-bit greyscale PNG (scans, scientific cameras)"),
    Valid("grey.jpg", "an 8-bit greyscale JPEG"),
    Valid("palette_transparent.png", "a palette PNG whose background is transparent (flattened onto black)"),
    Valid("animated.gif", "an animated GIF: frame 0 is used; frame 1 has the subject elsewhere"),
    Valid("exif_rotate_6.jpg", "a phone JPEG stored sideways with EXIF orientation 6 (rotate 90 CW to show)"),
    Valid("exif_rotate_8.jpg", "a phone JPEG stored sideways with EXIF orientation 8 (rotate 90 CCW to show)"),
)

# Kept small: the whole folder must stay well under 1 MB.
MAX_CORPUS_BYTES = 400_000


def _grey(seed: int, box: tuple[int, int, int, int] = BOX, size: tuple[int, int] = SIZE) -> np.ndarray:
    """HxW uint8: dark noise with a bright noisy rectangle at ``box``."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = rng.integers(10, 41, (h, w), dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = rng.integers(215, 246, (y1 - y0, x1 - x0), dtype=np.uint8)
    return arr


def _rgb(seed: int, box: tuple[int, int, int, int] = BOX) -> Image.Image:
    """The subject photo in colour: the same layout, each channel its own noise."""
    return Image.fromarray(np.dstack([_grey(seed * 3 + c, box) for c in range(3)]))


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _exif_jpeg(upright: Image.Image, orientation: int) -> bytes:
    """Store ``upright`` turned so that a viewer honouring EXIF ``orientation`` shows it upright.

    6 = "rotate 90 degrees clockwise to display", so the stored pixels are turned counter-clockwise;
    8 is the opposite.
    """
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(upright.transpose(turn), "JPEG", quality=95, exif=exif.tobytes())


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``, like a decompression
    bomb's header, followed by a little zlib data; only a size check before decoding stops it cheaply."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _palette_with_transparent_background() -> bytes:
    """A P-mode PNG: the background is palette index 0, fully transparent (tRNS); the subject uses
    eight opaque bright greys (indices 1-8)."""
    grey = _grey(20)
    idx = np.zeros(grey.shape, np.uint8)
    x0, y0, x1, y1 = BOX
    idx[y0:y1, x0:x1] = 1 + (grey[y0:y1, x0:x1] - 215) // 4
    palette = [0, 0, 255] + [v for i in range(8) for v in (215 + 4 * i,) * 3]  # a blue that must not show
    img = Image.fromarray(idx, "P")
    img.putpalette(palette + [0] * (768 - len(palette)))
    return _encode(img, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [_rgb(30, BOX), _rgb(31, GIF_OTHER_BOX)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)


def _sixteen_bit() -> bytes:
    arr16 = _grey(40).astype(np.uint16) * 257  # full 16-bit scale: 255 -> 65535
    return _encode(Image.fromarray(arr16), "PNG")


def build() -> dict[str, bytes]:
    """Every corpus file's name and bytes (same bytes on every run with the same Pillow)."""
    jpeg = _encode(_rgb(1), "JPEG", quality=90)
    png = _encode(_rgb(2), "PNG")
    files = {
        "empty.jpg": b"",
        "text.txt": b"Shopping list:\n- milk\n- bread\nThis is a text file, not a photo.\n",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) * 3 // 5],
        "one_pixel.png": _encode(Image.new("RGB", (1, 1), (200, 200, 200)), "PNG"),
        "bomb_50000x50000.png": _bomb_png(50_000, 50_000),
        # Binary (not short printable text), so the server takes it for an uploaded file, not a colour.
        "background_not_an_image.pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
                                        + bytes(range(256)) + b"\n%%EOF\n"),
        "cmyk.jpg": _encode(_rgb(3).convert("CMYK"), "JPEG", quality=92),
        "grey16.png": _sixteen_bit(),
        "grey.jpg": _encode(Image.fromarray(_grey(50)), "JPEG", quality=92),
        "palette_transparent.png": _palette_with_transparent_background(),
        "animated.gif": _animated_gif(),
        "exif_rotate_6.jpg": _exif_jpeg(_rgb(6), 6),
        "exif_rotate_8.jpg": _exif_jpeg(_rgb(8), 8),
    }
    expected = {c.name for c in (*BAD, *VALID)}
    assert set(files) == expected, set(files) ^ expected
    return files


def write(folder: Path = CORPUS_DIR) -> list[Path]:
    """Write the corpus into ``folder`` (removing files of it that the corpus no longer has)."""
    files = build()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file() and old.suffix not in (".py", ".md") and old.name not in files:
            old.unlink()
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def main() -> int:
    paths = write(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS_DIR)
    total = sum(p.stat().st_size for p in paths)
    for p in paths:
        print(f"{p.stat().st_size:8,d}  {p}")
    print(f"{total:8,d}  bytes in {len(paths)} files")
    if total > MAX_CORPUS_BYTES:
        print(f"corpus is over its budget of {MAX_CORPUS_BYTES:,} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
