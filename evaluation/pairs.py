"""Pair finding: dataset roots of ``Images/`` and ``Masks/`` paired by base name (``a.jpg`` <-> ``a.png``).

Training, evaluation and the benchmarks all read data sets through here, so a folder that one
accepts the others accept too. Problems are collected over the whole root and reported together,
naming every file, so a user fixes their folder in one pass instead of one crash per file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from segmenter.imaging import ImageError, load_mask

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class DatasetError(ValueError):
    """The dataset folder has problems; the message lists each offending file."""


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    root: Path

    @property
    def name(self) -> str:
        return self.image.stem


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")}


def _oriented_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        orientation = img.getexif().get(0x0112, 1)
        w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _check_pair(pair: Pair) -> str | None:
    """Cheap per-pair validation: headers readable, sizes equal, mask binary."""
    try:
        isize = _oriented_size(pair.image)
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{pair.image}: unreadable image ({exc})"
    try:
        msize = _oriented_size(pair.mask)
        load_mask(pair.mask)
    except ImageError as exc:
        return str(exc)
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{pair.mask}: unreadable mask ({exc})"
    if isize != msize:
        return f"{pair.image}: image is {isize[0]}x{isize[1]} but its mask {pair.mask.name} is {msize[0]}x{msize[1]}"
    return None


def find_pairs(roots: Iterable[str | Path], skip_bad: bool = False, check: bool = True) -> list[Pair]:
    """All valid pairs under the roots; raises ``DatasetError`` listing every problem unless ``skip_bad``."""
    pairs: list[Pair] = []
    problems: list[str] = []
    for root in map(Path, roots):
        images_dir, masks_dir = root / "Images", root / "Masks"
        missing = [d for d in (images_dir, masks_dir) if not d.is_dir()]
        if missing:
            problems.append(f"{root}: missing folder(s) {', '.join(str(d) for d in missing)}; "
                            "a dataset root must contain Images/ and Masks/")
            continue
        images, masks = _files(images_dir), _files(masks_dir)
        problems += [f"{images[n]}: no mask with the same base name in {masks_dir}" for n in images if n not in masks]
        problems += [f"{masks[n]}: no image with the same base name in {images_dir}" for n in masks if n not in images]
        for name in sorted(images.keys() & masks.keys()):
            pair = Pair(images[name], masks[name], root)
            problem = _check_pair(pair) if check else None
            if problem:
                problems.append(problem)
            else:
                pairs.append(pair)
        if not images and not masks:
            problems.append(f"{root}: Images/ and Masks/ hold no image files")
    if problems:
        if not skip_bad:
            shown = "\n  ".join(problems[:50])
            more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise DatasetError(f"{len(problems)} problem(s) in the dataset "
                               f"(fix them or pass --skip-bad):\n  {shown}{more}")
        for p in problems:
            print(f"warning: skipping: {p}", file=sys.stderr)
    if not pairs:
        raise DatasetError("no usable image/mask pairs found in " + ", ".join(map(str, roots)))
    return pairs


def pairs_of_root(root: str | Path, names: set[str] | None = None, limit: int | None = None,
                  skip_bad: bool = False) -> list[Pair]:
    """The pairs of one root whose base names are in ``names`` (all when None), at most ``limit``.

    What evaluate.py and the benchmarks score: the fixed validation split, root by root.
    """
    found = [p for p in find_pairs([root], skip_bad=skip_bad) if names is None or p.name in names]
    return found[:limit] if limit else found


def read_name_list(path: str | Path) -> set[str]:
    """Names (base names, one per line, '#' comments) of a fixed validation split."""
    lines = Path(path).read_text().splitlines()
    return {ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()}
