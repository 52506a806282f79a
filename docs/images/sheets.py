"""What the picture scripts in this folder share: the test photo, the shipped model's edge, a contact sheet.

Each picture is made the way the server makes its answer (``segmenter``'s code, the shipped weights), so a
picture in the docs shows what users get.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from segmenter import imaging, matting
from segmenter.inference import Segmenter

ROOT = Path(__file__).resolve().parents[2]
TEST_PHOTO = ROOT / "tests/gimp/data/astronaut.jpg"


def arguments(description: str, out: str) -> argparse.Namespace:
    """``--photo`` (default: the public-domain test photo) and ``--out`` (default: ``docs/images/<out>``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", default=str(TEST_PHOTO))
    p.add_argument("--out", default=str(ROOT / "docs/images" / out))
    return p.parse_args()


def cut_out(path: str, tta: str = "none") -> tuple[Image.Image, matting.Matte]:
    """The upright photo and the edge stage's matte of its person, from the shipped model."""
    photo = imaging.load_image(path)
    mask = Segmenter.from_checkpoint().predict_one(photo, tta=tta)
    return photo, matting.matte(photo, mask)


def save_sheet(panels: Sequence[Image.Image], height: int, gap: int, out: str) -> None:
    """The panels side by side at ``height`` px, on white, saved as an optimised PNG."""
    width = round(height * panels[0].width / panels[0].height)
    sheet = Image.new("RGB", (len(panels) * (width + gap) - gap, height), (255, 255, 255))
    for k, panel in enumerate(panels):
        sheet.paste(panel.resize((width, height), Image.Resampling.LANCZOS), (k * (width + gap), 0))
    sheet.save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size // 1024} KB)")
