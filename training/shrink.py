"""Write a reduced copy of a dataset root so that training decodes small files, not camera originals.

    python training/shrink.py ~/photos/Dataset --out ~/photos/Dataset-640 --long-side 640

Training looks at every photo at most at ``--image-size`` x 1.6 (the largest scale jitter), yet it
decodes the whole file once per epoch: a 12-megapixel phone JPEG and its PNG mask take far longer to
decode than a training step on a 2-core CPU, and ``load_validation`` keeps every validation photo in
memory at full size. Shrinking once, here, fixes both. The copy has the same layout
(``Images/``, ``Masks/``, same base names) and keeps the root's other files (``split.tsv``,
``SOURCE.md``), so ``--val-list`` and every other option work on it unchanged.

Photos are decoded by the training decoder (EXIF rotation applied, CMYK/16-bit/alpha brought to
RGB), reduced with Lanczos and written as JPEG (or PNG/WebP by ``--format``). Masks are reduced by
area and cut at half, so they stay binary and as fat as the person was. Photos already small enough
are decoded and written too, so every copy is upright RGB. The source is only read.

Figures quoted in the README are measured on original-resolution validation photos; a model
validated on a shrunk copy is validated at that copy's resolution.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
from PIL import Image

from evaluation.progress import Progress
from segmenter.imaging import ImageError, load_image, load_mask
from training.data import DatasetError, Pair, find_pairs

FORMATS = {"jpg": ".jpg", "png": ".png", "webp": ".webp"}


def reduced_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The size with the long side at most ``long_side``, aspect kept (never enlarged, sides >= 1)."""
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink_pair(pair: Pair, images_out: Path, masks_out: Path, long_side: int, fmt: str,
                quality: int) -> tuple[int, int]:
    """Write the reduced photo and mask; returns the new (width, height)."""
    photo = load_image(pair.image)
    mask = load_mask(pair.mask)
    size = reduced_size(*photo.size, long_side)
    if size != photo.size:
        photo = photo.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    soft = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    if size != soft.size:
        soft = soft.resize(size, Image.Resampling.BOX)
    binary = Image.fromarray(((np.asarray(soft) >= 128) * 255).astype(np.uint8), "L")
    target = images_out / (pair.name + FORMATS[fmt])
    if fmt == "jpg":
        photo.save(target, quality=quality, subsampling=0)
    elif fmt == "webp":
        photo.save(target, quality=quality, method=4)
    else:
        photo.save(target, compress_level=6)
    binary.save(masks_out / (pair.name + ".png"), optimize=True)
    return size


def shrink_root(root: Path, out: Path, long_side: int, fmt: str = "jpg", quality: int = 92,
                skip_bad: bool = False, show_progress: bool = True) -> int:
    """Copy one dataset root to ``out`` reduced; returns the pairs written.

    Refuses an ``out`` that is the source, lies inside it or already holds files, so a slip of the
    keyboard cannot mix two copies or touch the originals.
    """
    root, out = root.resolve(), out.resolve()
    if out == root or root in out.parents:
        raise DatasetError(f"{out}: the copy must not be the source or inside it ({root})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: already exists and is not an empty folder; choose a new folder")
    pairs = find_pairs([root], skip_bad=skip_bad)
    images_out, masks_out = out / "Images", out / "Masks"
    images_out.mkdir(parents=True, exist_ok=True)
    masks_out.mkdir(exist_ok=True)
    try:
        for extra in sorted(root.iterdir()):
            if extra.is_file() and not extra.name.startswith("."):
                shutil.copy2(extra, out / extra.name)
        bar = Progress(len(pairs), f"shrink {root.name}", enabled=show_progress)
        for pair in pairs:
            shrink_pair(pair, images_out, masks_out, long_side, fmt, quality)
            bar.update()
        bar.close()
    except BaseException:
        shutil.rmtree(out)  # a half-written copy would train on a silently smaller data set
        raise
    return len(pairs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="dataset root with Images/ and Masks/")
    p.add_argument("--out", type=Path, required=True, help="new folder for the reduced copy")
    p.add_argument("--long-side", type=int, default=640,
                   help="longest side of the copies in pixels (default 640: 2.5x the 256-px input, "
                        "above the 1.6x largest training zoom)")
    p.add_argument("--format", choices=sorted(FORMATS), default="jpg", help="photo file format (masks: PNG)")
    p.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality")
    p.add_argument("--skip-bad", action="store_true", help="warn about and skip bad pairs instead of failing")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.long_side < 16:
        print(f"shrink.py: error: --long-side {args.long_side} is below 16 pixels", file=sys.stderr)
        return 2
    try:
        count = shrink_root(args.root, args.out, args.long_side, args.format, args.quality, args.skip_bad)
    except (DatasetError, ImageError, OSError) as exc:
        print(f"shrink.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"shrink.py: {count} pairs from {args.root} written to {args.out} "
          f"(long side <= {args.long_side} px)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
