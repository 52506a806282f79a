"""Make docs/gimp-dialog.png: the plug-in's dialog with every option at its default, from a real GIMP 3.

Runs the GIMP 3 root the tests use (``make gimp-root``, as root) under a virtual display, opens
Filters ▸ Enhance ▸ Replace Background… on the test photo, screenshots the dialog and crops it.
Where no server is running, pressing OK then ends with the "cannot reach the server" message, which
changes nothing.

    sudo .venv/bin/python docs/images/make_gimp_dialog.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.gimp.gimp_harness import in_job, run_gimp, ui_unavailable_reason  # noqa: E402

PHOTO = ROOT / "tests/gimp/data/astronaut.jpg"
MARGIN = 8  # px of the black virtual screen kept around the dialog


def crop_to_window(screen: Image.Image) -> Image.Image:
    """The dialog alone: the virtual screen is black everywhere else (no window manager, no desktop)."""
    pixels = np.asarray(screen.convert("RGB"))
    ys, xs = np.nonzero(pixels.max(axis=2) > 0)
    if not len(xs):
        raise SystemExit("the screenshot is empty: no dialog was drawn")
    box = (max(xs.min() - MARGIN, 0), max(ys.min() - MARGIN, 0), xs.max() + 1 + MARGIN, ys.max() + 1 + MARGIN)
    return screen.crop(box)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs/gimp-dialog.png"))
    args = p.parse_args()
    reason = ui_unavailable_reason()
    if reason:
        raise SystemExit(f"cannot take the screenshot: {reason}")
    with tempfile.TemporaryDirectory(prefix="gimp-dialog-") as tmp:
        job = Path(tmp)
        case = {"name": "dialog", "input": in_job(job, PHOTO), "run_mode": "interactive", "args": {}}
        run = run_gimp(job, [case], ui=True, timeout=300)
        shot = job / "dialog-1.png"
        if not shot.exists():
            raise SystemExit("no dialog appeared; GIMP's output:\n" + run.log[-3000:])
        dialog = crop_to_window(Image.open(shot))
    dialog.save(args.out, optimize=True)
    print(f"wrote {args.out} ({dialog.width}x{dialog.height}, {Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
