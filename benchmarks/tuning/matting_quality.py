"""Edge-band colour error of served composites, with the edge stage (segmenter/matting.py) on and off.

    python benchmarks/tuning/matting_quality.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 24 [--crops docs/images]

The truth is known only where we make it: each validation photo's person is put onto background A
(``--from``, pure green by default) through its **softened true mask** (the binary truth blurred, the
matte), and that image is what the server gets. The server puts it onto background B (``--to``, white);
the ideal answer is the same person through the same matte directly on B. The error is the mean absolute
RGB difference (0-255) in the **edge band**, the pixels within ``band`` of the true outline, where a
fringe of A shows. Four rows: the model's mask and the true matte itself handed to ``render`` as the mask
(what the stage does given a perfect segmentation), each with the stage on and off. 'off' on the model's
mask is the plain blend; the stage earns its cost when 'on' is at most 0.8 x that.

Every answer goes through ``handler.person_handler.render`` with the model's mask from
``Segmenter.predict_lowres`` + ``refine.upsample``, the handler's own steps, so the figures are what is
served. ``--speed 1 12`` also times the stage alone (``matting.matte``) on synthetic photos of those
megapixels: wall and CPU time; the stage runs on one thread, so its CPU time is what it takes on an idle
core even when the machine is busy. ``--crops`` writes a before/after crop (input on A | plain blend |
edge stage | ideal) of the photo with the largest improvement.
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


def soft_matte(truth: np.ndarray) -> np.ndarray:
    """The binary truth blurred: float32 in [0, 1], what the photo's person is composited through."""
    sigma = max(1.0, SOFTEN_FRACTION * float(np.hypot(*truth.shape)))
    img = Image.fromarray((truth * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(img, np.float32) / 255


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
    """One photo's four errors (model mask / true matte x stage off / on), render times, and crop material."""
    person = np.asarray(imaging.load_image(photo_path))
    truth = imaging.load_mask(mask_path)
    alpha = soft_matte(truth)
    given = Image.fromarray(blend(person, alpha, args.source))
    ideal = blend(person, alpha, args.target)
    band = edge_band(truth)
    with torch.inference_mode():
        model_mask = upsample(seg.predict_lowres([given])[0], given, "guided")
    true_mask = np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    row: dict = {"name": photo_path.stem, "size": given.size}
    images = {}
    for which, mask in (("model", model_mask), ("truth", true_mask)):
        for on in (False, True):
            t = time.perf_counter()
            result = served(given, mask, args.target, on)
            row[f"{which}_{'on' if on else 'off'}_s"] = time.perf_counter() - t
            row[f"{which}_{'on' if on else 'off'}"] = band_error(result, ideal, band)
            images[which, on] = result
    row["crop"] = (np.asarray(given), images["model", False], images["model", True], ideal, band)
    return row


def write_crops(rows: list[dict], folder: Path, size: int) -> Path:
    """input | plain blend | edge stage | ideal, for the photo the stage helped most, 2x enlarged."""
    best = max(rows, key=lambda r: r["model_off"] - r["model_on"])
    given, off, on, ideal, band = best["crop"]
    x0, y0, x1, y1 = crop_box(band, size)
    tiles = [Image.fromarray(a[y0:y1, x0:x1]).resize(((x1 - x0) * 2, (y1 - y0) * 2), Image.Resampling.NEAREST)
             for a in (given, off, on, ideal)]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), tiles[0].height), (128, 128, 128))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 6
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "matting_before_after.png"
    sheet.save(out, optimize=True)
    print(f"crop: {best['name']} ({x0},{y0})-({x1},{y1}) -> {out}  [input on A | plain blend | edge stage | ideal]")
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


def main(argv: list[str] | None = None) -> int:
    """Measure every selected photo, print the per-photo lines (stderr) and the table (stdout)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, val_list_required=True, limit=24, limit_mode=SHARED)
    p.add_argument("--from", dest="source", type=imaging.parse_color, default=imaging.parse_color("#00b140"))
    p.add_argument("--to", dest="target", type=imaging.parse_color, default=imaging.parse_color("#ffffff"))
    p.add_argument("--crops", type=Path, default=None, help="folder for the before/after crop")
    p.add_argument("--crop-size", type=int, default=160)
    p.add_argument("--speed", type=float, nargs="*", default=[], help="also time the stage at these megapixels")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    rows = []
    for pair in all_pairs(args):
        row = measure(seg, pair.image, pair.mask, args)
        rows.append(row)
        print(f"  {row['name']}: model off {row['model_off']:.2f} on {row['model_on']:.2f} | "
              f"truth off {row['truth_off']:.2f} on {row['truth_on']:.2f} | "
              f"on {row['model_on_s'] * 1e3:.0f} ms, off {row['model_off_s'] * 1e3:.0f} ms", file=sys.stderr)
    source, target = ("#" + "".join(f"{c:02x}" for c in rgb) for rgb in (args.source, args.target))
    print(f"\n{len(rows)} validation photos, {source} -> {target}; "
          "edge-band mean absolute RGB error (0-255), lower is better\n")
    print("| mask handed to render | stage off (plain blend) | stage on | on / off | render on / off (time) |")
    print("| --- | --- | --- | --- | --- |")
    for which, label in (("model", "model's mask (served)"), ("truth", "softened true mask")):
        off = statistics.mean(r[f"{which}_off"] for r in rows)
        on = statistics.mean(r[f"{which}_on"] for r in rows)
        time_ratio = statistics.median(r[f"{which}_on_s"] / r[f"{which}_off_s"] for r in rows)
        print(f"| {label} | {off:.2f} | {on:.2f} | {on / off:.3f} | {time_ratio:.2f} |")
    if args.crops:
        write_crops(rows, args.crops, args.crop_size)
    if args.speed:
        speed(args.speed, seg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
