"""Edge-band colour error of served composites: plain blend, our edge stage, and rembg's alpha matting.

    python benchmarks/tuning/matting_quality.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 24 [--crops docs/images]

The truth is known only where we make it: each validation photo's person is put onto background A
(``--from``, pure green by default) through a known matte, and that image is what the server gets. The
server puts it onto background B (``--to``, white); the ideal answer is the same person through the same
matte directly on B. The error is the mean absolute RGB difference (0-255) in the **edge band**, the pixels
within ``band`` of the true outline, where a fringe of A shows. Two mattes, two sets:

- **soft**: the binary truth blurred (a soft outline);
- **fine**: the soft matte plus the photo's own high-frequency detail in a ring around the outline, so the
  matte has strands and holes a pixel or two wide, as hair has, which no blur of a mask can show.

Every method gets the same mask, the model's (``Segmenter.predict_lowres`` + ``refine.upsample``, the
handler's own steps), and goes through the handler's ``render`` where it is ours:

- *plain blend*: ``render`` with ``matting=False``;
- *edge stage*: ``render`` with the served default (segmenter/matting.py);
- *rembg's alpha matting*: rembg's ``alpha_matting_cutout`` with its defaults (trimap from the mask at
  240/10, eroded by a 10 x 10 square; pymatting's closed-form alpha and multi-level foreground), blended
  onto B. pymatting is a benchmark-only dependency (requirements-compare.txt, ``make matting-compare``);
  without it the row is skipped with a note.

``--speed 1 12`` also times the edge stage alone (``matting.matte``) on synthetic photos of those
megapixels: wall and CPU time; the stage runs on one thread, so its CPU time is what it takes on an idle
core even when the machine is busy. ``--crops`` writes before/after crops (input on A | plain blend |
rembg | edge stage | ideal) of the photo with the largest improvement in each set.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import time
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from benchmarks.photos import synthetic_photo
from evaluation.data_options import SHARED, add_data_options, all_pairs
from handler.person_handler import render
from handler.request import Job, Options
from segmenter import imaging, matting
from segmenter.inference import Segmenter
from segmenter.refine import upsample

# Softening of the true mask (Gaussian sigma) and the half-width of the scored band, as fractions of the
# photo's diagonal: about 1.5 and 6 pixels on the 0.45-MP validation photos.
SOFTEN_FRACTION = 0.0015
SCORE_BAND_FRACTION = 0.006
# The fine set: detail finer than this Gaussian (fraction of the diagonal) is "strands"; it is added to the
# soft matte at this gain (in standard deviations of the detail) in a ring this wide around the outline.
FINE_DETAIL_FRACTION = 0.001
FINE_GAIN = 0.35
FINE_RING_FRACTION = 0.004
# rembg's alpha_matting_cutout defaults (rembg/bg.py): sure person above 240, sure background below 10,
# both eroded by a square of this size.
REMBG_FOREGROUND, REMBG_BACKGROUND, REMBG_ERODE = 240, 10, 10
SETS = ("soft", "fine")
METHODS = ("plain", "edge", "rembg")


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float map in [0, 1] (Pillow, 8-bit: what a soft matte is stored as)."""
    img = Image.fromarray(np.clip(values * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(sigma)), np.float32) / 255


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a 1x1xHxW float map, edges replicated (Pillow's blur takes 8-bit only)."""
    r = max(1, round(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def soft_matte(truth: np.ndarray) -> np.ndarray:
    """The binary truth blurred: float32 in [0, 1], what the photo's person is composited through."""
    return _blur(truth.astype(np.float32), max(1.0, SOFTEN_FRACTION * float(np.hypot(*truth.shape))))


def fine_matte(person: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The soft matte with strands: the photo's own fine luminance detail, in a ring around the outline.

    Where the person's texture is fine (hair, fur, lace), the matte gets holes and strands a pixel or two
    wide that follow it, so a method must read the photo's colours to find them: the model's mask cannot
    show them and neither can a blur.
    """
    diag = float(np.hypot(*truth.shape))
    luma = torch.from_numpy(person.astype(np.float32).mean(2))[None, None]
    detail = (luma - _gaussian(luma, max(1.0, FINE_DETAIL_FRACTION * diag)))[0, 0].numpy()
    wide = _blur(truth.astype(np.float32), max(1.0, FINE_RING_FRACTION * diag))
    ring = 4 * wide * (1 - wide)  # 1 on the outline, 0 away from it
    spread = float(detail[ring > 0.5].std()) + 1e-6
    return np.clip(soft_matte(truth) + FINE_GAIN * ring * detail / spread, 0, 1)


def edge_band(truth: np.ndarray) -> np.ndarray:
    """Pixels within the score band's half-width of the true outline."""
    r = max(2, round(SCORE_BAND_FRACTION * float(np.hypot(*truth.shape))))
    t = torch.from_numpy(truth.astype(np.float32))[None, None]
    grow = F.max_pool2d(t, 2 * r + 1, stride=1, padding=r)
    shrink = -F.max_pool2d(-t, 2 * r + 1, stride=1, padding=r)
    return (grow != shrink)[0, 0].numpy()


def blend(person: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The person through ``alpha`` onto a flat colour, in float and rounded once: the input and the ideal."""
    out = person.astype(np.float32) * alpha[..., None] + np.float32(colour) * (1 - alpha[..., None])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def served(image: Image.Image, mask: np.ndarray, background: tuple[int, int, int], matting: bool) -> np.ndarray:
    """The handler's composite answer (PNG), decoded."""
    job = Job(image, Options(mode="composite", background=background, matting=matting))
    job.mask = mask
    return np.asarray(Image.open(io.BytesIO(render(job))).convert("RGB"))


def rembg_available() -> str | None:
    """None when pymatting and scipy are importable, else the reason the rembg row is skipped."""
    missing = [m for m in ("pymatting", "scipy") if importlib.util.find_spec(m) is None]
    return None if not missing else (f"{' and '.join(missing)} not installed: `make matting-compare` "
                                     "installs requirements-compare.txt")


def rembg_composite(given: np.ndarray, mask: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """rembg's ``alpha_matting_cutout`` (its defaults) on our mask, then its RGBA cut-out onto ``background``."""
    import pymatting
    from scipy.ndimage import binary_erosion

    structure = np.ones((REMBG_ERODE, REMBG_ERODE), np.uint8)
    sure_person = binary_erosion(mask > REMBG_FOREGROUND, structure=structure)
    sure_background = binary_erosion(mask < REMBG_BACKGROUND, structure=structure, border_value=1)
    trimap = np.full(mask.shape, 0.5)
    trimap[sure_person] = 1
    trimap[sure_background] = 0
    image = given / 255.0
    try:
        alpha = pymatting.estimate_alpha_cf(image, trimap)
        foreground = pymatting.estimate_foreground_ml(image, alpha)
        cutout = np.clip(np.dstack([foreground, alpha]) * 255, 0, 255).astype(np.uint8)  # what rembg returns
    except ValueError:  # a trimap with no sure person or background: rembg falls back to the mask as alpha
        cutout = np.dstack([given, mask])
    a = cutout[..., 3:].astype(np.float32) / 255
    return np.clip(cutout[..., :3] * a + np.float32(background) * (1 - a) + 0.5, 0, 255).astype(np.uint8)


def band_error(result: np.ndarray, ideal: np.ndarray, band: np.ndarray) -> float:
    """Mean absolute RGB difference over the band only: away from the outline every variant is exact."""
    return float(np.abs(result[band].astype(np.float32) - ideal[band].astype(np.float32)).mean())


def crop_box(band: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """A ``size`` square around the top of the band (heads and hair), inside the photo."""
    ys, xs = np.nonzero(band)
    top = ys.min()
    x = int(np.median(xs[ys < top + max(4, size // 8)]))
    h, w = band.shape
    x0 = min(max(0, x - size // 2), max(0, w - size))
    y0 = min(max(0, top - size // 4), max(0, h - size))
    return x0, y0, x0 + min(size, w), y0 + min(size, h)


def measure(seg: Segmenter, photo_path: Path, mask_path: Path, args: argparse.Namespace) -> dict:
    """One photo's errors and times per set and method, and the crop material."""
    person = np.asarray(imaging.load_image(photo_path))
    truth = imaging.load_mask(mask_path)
    band = edge_band(truth)
    row: dict = {"name": photo_path.stem, "size": truth.shape[::-1]}
    for which in SETS:
        alpha = soft_matte(truth) if which == "soft" else fine_matte(person, truth)
        given = Image.fromarray(blend(person, alpha, args.source))
        ideal = blend(person, alpha, args.target)
        with torch.inference_mode():
            mask = upsample(seg.predict_lowres([given])[0], given, "guided")
        results = {}
        for method in METHODS:
            if method == "rembg" and args.no_rembg:
                continue
            t = time.perf_counter()
            if method == "rembg":
                results[method] = rembg_composite(np.asarray(given), mask, args.target)
            else:
                results[method] = served(given, mask, args.target, method == "edge")
            row[which, method, "s"] = time.perf_counter() - t
            row[which, method] = band_error(results[method], ideal, band)
        row[which, "crop"] = (np.asarray(given), results, ideal, band)
    return row


def write_crops(rows: list[dict], which: str, folder: Path, size: int) -> Path:
    """input | plain blend | rembg | edge stage | ideal, for the photo the stage helped most, 2x enlarged."""
    best = max(rows, key=lambda r: r[which, "plain"] - r[which, "edge"])
    given, results, ideal, band = best[which, "crop"]
    x0, y0, x1, y1 = crop_box(band, size)
    panels = [given, results["plain"], *([results["rembg"]] if "rembg" in results else []), results["edge"], ideal]
    tiles = [Image.fromarray(a[y0:y1, x0:x1]).resize(((x1 - x0) * 2, (y1 - y0) * 2), Image.Resampling.NEAREST)
             for a in panels]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), tiles[0].height), (128, 128, 128))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 6
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / ("matting_before_after.png" if which == "soft" else "matting_fine_before_after.png")
    sheet.save(out, optimize=True)
    names = " | ".join(["input on A", "plain blend", *(["rembg"] if "rembg" in results else []), "edge stage",
                        "ideal"])
    print(f"crop ({which}): {best['name']} ({x0},{y0})-({x1},{y1}) -> {out}  [{names}]")
    return out


def speed(megapixels: list[float], seg: Segmenter, repeats: int = 5) -> None:
    """Median wall and CPU seconds of the edge stage alone, on the synthetic photos of benchmarks/photos.py."""
    print("\n| photo | band pixels | edge stage wall (ms) | edge stage CPU (ms) |\n| --- | --- | --- | --- |")
    for mp in megapixels:
        image = synthetic_photo(mp)
        with torch.inference_mode():
            mask = upsample(seg.predict_lowres([image])[0], image, "guided")
        matting.matte(image, mask)  # warm-up
        walls, cpus = [], []
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            result = matting.matte(image, mask)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        band = int(np.count_nonzero(result.alpha != mask))
        print(f"| {mp:g} MP ({image.width}x{image.height}) | {band:,} | {statistics.median(walls) * 1e3:.0f} "
              f"| {statistics.median(cpus) * 1e3:.0f} |")


def table(rows: list[dict], methods: list[str]) -> None:
    """One line per set: each method's mean error, its ratio to the plain blend, and its median time."""
    labels = {"plain": "plain blend", "edge": "edge stage (served)", "rembg": "rembg alpha matting"}
    head = " | ".join(labels[m] for m in methods)
    ratios = " | ".join(f"{labels[m]} / plain" for m in methods[1:])
    times = " | ".join(f"{labels[m]} ms" for m in methods[1:])
    print(f"| set | {head} | {ratios} | {times} |")
    print("| --- " * (1 + 3 * len(methods) - 2) + "|")
    for which in SETS:
        mean = {m: statistics.mean(r[which, m] for r in rows) for m in methods}
        ms = {m: statistics.median(r[which, m, "s"] for r in rows) * 1e3 for m in methods}
        print(f"| {which} | " + " | ".join(f"{mean[m]:.2f}" for m in methods) + " | "
              + " | ".join(f"**{mean[m] / mean['plain']:.3f}**" for m in methods[1:]) + " | "
              + " | ".join(f"{ms[m]:.0f}" for m in methods[1:]) + " |")


def main(argv: list[str] | None = None) -> int:
    """Measure every selected photo, print the per-photo lines (stderr) and the table (stdout)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, val_list_required=True, limit=24, limit_mode=SHARED)
    p.add_argument("--from", dest="source", type=imaging.parse_color, default=imaging.parse_color("#00b140"))
    p.add_argument("--to", dest="target", type=imaging.parse_color, default=imaging.parse_color("#ffffff"))
    p.add_argument("--crops", type=Path, default=None, help="folder for the before/after crops")
    p.add_argument("--crop-size", type=int, default=160)
    p.add_argument("--no-rembg", action="store_true", help="skip rembg's method (slow: a whole-photo solve)")
    p.add_argument("--speed", type=float, nargs="*", default=[], help="also time the stage at these megapixels")
    args = p.parse_args(argv)
    missing = None if args.no_rembg else rembg_available()
    if missing:
        print(f"matting_quality.py: rembg's method skipped: {missing}", file=sys.stderr)
        args.no_rembg = True
    torch.set_num_threads(2)
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    methods = [m for m in METHODS if not (m == "rembg" and args.no_rembg)]
    rows = []
    for pair in all_pairs(args):
        row = measure(seg, pair.image, pair.mask, args)
        rows.append(row)
        print(f"  {row['name']}: " + " | ".join(
            f"{which} " + " ".join(f"{m} {row[which, m]:.2f}" for m in methods) for which in SETS), file=sys.stderr)
    source, target = ("#" + "".join(f"{c:02x}" for c in rgb) for rgb in (args.source, args.target))
    print(f"\n{len(rows)} validation photos, {source} -> {target}; "
          "edge-band mean absolute RGB error (0-255), lower is better; times are the median per photo\n")
    table(rows, methods)
    if args.crops:
        for which in SETS:
            write_crops(rows, which, args.crops, args.crop_size)
    if args.speed:
        speed(args.speed, seg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
