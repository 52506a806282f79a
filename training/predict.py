"""Replace the background of photos locally, without a server.

Writes ``<name>_mask.png`` and ``<name>_composite.png`` for each photo into --out.

    python training/predict.py photo.jpg --out out/ --background "#00b140"
    python training/predict.py *.jpg --out out/ --background beach.jpg
    python training/predict.py photo.jpg --out out/ --background blur
    python training/predict.py photo.jpg --out out/ --background transparent   # RGBA cut-out
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

from PIL import Image

from segmenter import checkpoint
from segmenter.imaging import (
    ImageError,
    blurred,
    composite,
    cover,
    cutout,
    encode_png,
    load_image,
    parse_color,
)
from segmenter.inference import TTA_MODES, Segmenter
from segmenter.refine import METHODS


def make_background(spec: str, image: Image.Image, background_image: Image.Image | None):
    """The new background for one photo: a colour tuple, a PIL image, or None for transparent."""
    if spec == "transparent":
        return None
    if spec == "blur":
        return blurred(image)
    if background_image is not None:
        return cover(background_image, image.size)
    return parse_color(spec)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="photos to process")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--background", default="#FFFFFF", help="FILE, #RRGGBB, blur or transparent (default white)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped model)")
    p.add_argument("--refine", choices=METHODS, default="guided")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="flip: average with the mirrored photo (more accurate, about twice the model time)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bg_spec = args.background
        bg_image = None
        if bg_spec not in ("blur", "transparent") and not bg_spec.startswith("#"):
            bg_image = load_image(bg_spec)
        elif bg_spec.startswith("#"):
            parse_color(bg_spec)
        ckpt = args.checkpoint or checkpoint.default_weights()
        segmenter = Segmenter.from_checkpoint(ckpt, args.device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"predict.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"predict.py: model {ckpt}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in args.images:
        mask_path = args.out / f"{path.stem}_mask.png"
        comp_path = args.out / f"{path.stem}_composite.png"
        try:
            if not args.overwrite and (mask_path.exists() or comp_path.exists()):
                raise FileExistsError(f"{mask_path} or {comp_path} exists (pass --overwrite to replace)")
            image = load_image(path)
            mask = segmenter.predict_one(image, args.refine, args.tta)
            background = make_background(bg_spec, image, bg_image)
            result = cutout(image, mask) if background is None else composite(image, mask, background)
            mask_path.write_bytes(encode_png(mask))
            comp_path.write_bytes(encode_png(result))
            print(f"{path}: {image.width}x{image.height} -> {mask_path.name}, {comp_path.name}", file=sys.stderr)
        except (ImageError, FileExistsError, OSError) as exc:
            failures += 1
            print(f"predict.py: error: {exc}", file=sys.stderr)
    if failures:
        print(f"predict.py: {failures} of {len(args.images)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
