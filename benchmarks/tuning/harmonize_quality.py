"""Match the light: how much of a change of light ``segmenter.harmonize`` undoes, and what it harms.

    python benchmarks/tuning/harmonize_quality.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 30

Built the way published harmonisation sets are built (a person whose colours alone were changed, put back
on their own photo, compared with the untouched photo), from the validation pairs and their truth masks:

- each photo gets a random but realistic change of light (exposure, white balance, saturation, gamma;
  seeded by its index), applied to the scene the person was "taken in";
- ``same scene``: that scene is the photo itself under the changed light;
- ``other scene``: the person was taken in front of the next pair's photo (scaled to cover), under the
  changed light, so the old and new backgrounds differ in content as well as light, as in real use;
- the composite (the changed person through the true matte, feathered by a pixel, over the untouched
  photo) is harmonised toward the untouched photo, and compared with it inside the person: foreground MSE
  (mean squared error of the person's pixels, 0-255 levels) and PSNR, at strengths 0 (no harmonisation),
  0.5 and 1; "exact" is the CIELAB map itself at strength 1, applied per pixel (what the served colour
  matrix approximates);
- the harm: with no change of light, PSNR of the whole composite against the photo, for the same scene
  and for another scene (content differs, light does not).

Then the cost: a 12-MP composite onto an image with and without harmonisation (median of 3). ``--sweep``
scores instead the limits ``segmenter.harmonize`` holds the change to (lightness shift, chroma shift, spread
ratio) at strength 1: the served ones are the best trade between the two scenes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
from PIL import Image, ImageFilter

from evaluation.data_options import add_data_options, read_pairs
from evaluation.progress import Progress
from segmenter import harmonize, imaging
from segmenter.imaging import load_image, load_mask

STRENGTHS = (0.0, 0.5, 1.0)
# the random change of light, drawn uniformly in these ranges
EXPOSURE_EV = (-0.6, 0.6)
TEMPERATURE = (-0.15, 0.15)  # red gain 1 + t, blue gain 1 - t (in linear light)
TINT = (-0.05, 0.05)  # green gain 1 + t
SATURATION = (0.75, 1.25)
GAMMA = (0.85, 1.18)


def change_of_light(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``photo`` (uint8 RGB) under a random, realistic change of light and camera rendering."""
    c = photo.astype(np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t, tint = rng.uniform(*TEMPERATURE), rng.uniform(*TINT)
    linear = linear * 2 ** rng.uniform(*EXPOSURE_EV) * np.array([1 + t, 1 + tint, 1 - t])
    linear = np.clip(linear, 0, 1)
    c = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    luma = (c @ np.array([0.2126, 0.7152, 0.0722]))[..., None]
    c = np.clip(luma + rng.uniform(*SATURATION) * (c - luma), 0, 1) ** rng.uniform(*GAMMA)
    return np.clip(c * 255 + 0.5, 0, 255).astype(np.uint8)


def soft(truth: np.ndarray) -> np.ndarray:
    """The true mask feathered by about a pixel, as uint8 alpha."""
    return np.asarray(Image.fromarray((truth * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)))


def exact(foreground: Image.Image, alpha: np.ndarray, photo: Image.Image, background: Image.Image,
          strength: float) -> Image.Image:
    """The CIELAB map itself on every pixel (slow): what ``harmonize.harmonize``'s colour matrix approximates."""
    change = harmonize.light_change(photo, alpha, background)
    if change is None:
        return foreground
    lab = harmonize.rgb_to_lab(np.asarray(foreground, np.float64))
    rgb = np.clip(harmonize.lab_to_rgb(change.apply(lab, strength)) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(alpha[..., None] > 0, rgb, np.asarray(foreground)))


def _mse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(((a[where].astype(np.float64) - b[where]) ** 2).mean())


def _psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def score(photo: Image.Image, truth: np.ndarray, other: Image.Image, rng: np.random.Generator,
          quick: bool = False) -> dict[str, float]:
    """Foreground MSE per case and strength, and the PSNR of the unchanged-light composites (``quick``:
    strengths 0 and 1 only)."""
    original = np.asarray(photo)
    alpha = soft(truth)
    away = imaging.cover(other, photo.size)
    scenes = {"same scene": original, "other scene": imaging.composite(photo, alpha, away)}
    state = rng.bit_generator.state
    row: dict[str, float] = {}
    for name, scene in scenes.items():
        rng.bit_generator.state = state  # one change of light per photo, whichever scene it lit
        source = Image.fromarray(change_of_light(scene, rng))
        for s in (0.0, 1.0) if quick else STRENGTHS:
            moved = harmonize.harmonize(source, alpha, source, photo, s)
            row[f"{name} {s:g}"] = _mse(imaging.composite(moved, alpha, photo), original, truth)
        if quick:
            continue
        moved = exact(source, alpha, source, photo, 1.0)
        row[f"{name} exact"] = _mse(imaging.composite(moved, alpha, photo), original, truth)
        unchanged = Image.fromarray(scene)
        for s in (0.5, 1.0):
            out = imaging.composite(harmonize.harmonize(unchanged, alpha, unchanged, photo, s), alpha, photo)
            row[f"harm {name} {s:g}"] = _psnr(_mse(out, original, np.ones_like(truth)))
            row[f"harm fg {name} {s:g}"] = _psnr(_mse(out, original, truth))
    return row


# (max lightness shift, max chroma shift, max spread ratio, lightness damping)
SWEEP = ((4.0, 2.0, 1.1, 0.8), (6.0, 3.0, 1.1, 0.8), (8.0, 4.0, 1.15, 0.8), (8.0, 4.0, 1.15, 0.5),
         (8.0, 4.0, 1.15, 1.0), (12.0, 6.0, 1.2, 0.8), (25.0, 12.0, 1.35, 0.8))
_LIMITS = ("MAX_LIGHTNESS_SHIFT", "MAX_CHROMA_SHIFT", "MAX_SPREAD_RATIO", "LIGHTNESS_DAMPING")


def sweep(samples: list[tuple[Image.Image, np.ndarray, Image.Image, int]]) -> None:
    """Foreground MSE at strength 1 per setting of the limits, both scenes (the first photo's change is
    the same for every setting: seeded by index)."""
    served = tuple(getattr(harmonize, name) for name in _LIMITS)
    print("| max lightness shift | max chroma shift | max spread ratio | lightness damping | same scene, no / 1 | "
          "other scene, no / 1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setting in SWEEP:
        for name, value in zip(_LIMITS, setting, strict=True):
            setattr(harmonize, name, value)
        rows = [score(photo, truth, other, np.random.default_rng(i), quick=True) for photo, truth, other, i in samples]
        cells = [f"{np.mean([r[f'{c} 0'] for r in rows]):.1f} / {np.mean([r[f'{c} 1'] for r in rows]):.1f}"
                 for c in ("same scene", "other scene")]
        mark = " (served)" if setting == served else ""
        print(f"| {setting[0]:g}{mark} | {setting[1]:g} | {setting[2]:g} | {setting[3]:g} | {cells[0]} | {cells[1]} |")
    for name, value in zip(_LIMITS, served, strict=True):
        setattr(harmonize, name, value)


def timing(photo: Image.Image, truth: np.ndarray, background: Image.Image, repeats: int = 3) -> tuple[float, float]:
    """Median milliseconds of a 12-MP composite onto an image without and with harmonisation (strength 1)."""
    size = (4000, 3000)
    big = photo.resize(size, Image.Resampling.BILINEAR)
    alpha = np.asarray(Image.fromarray(soft(truth)).resize(size, Image.Resampling.BILINEAR))
    fitted = imaging.cover(background, size)
    plain, matched = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        imaging.composite(big, alpha, fitted)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        imaging.composite(harmonize.harmonize(big, alpha, big, fitted, 1.0), alpha, fitted)
        matched.append(time.perf_counter() - start)
    return float(np.median(plain)) * 1000, float(np.median(matched)) * 1000


def report(rows: dict[str, list[dict[str, float]]]) -> None:
    print("Foreground MSE (PSNR dB) inside the person against the untouched photo:\n")
    heads = " | ".join(f"strength {s:g}" for s in STRENGTHS)
    print(f"| set | case | photos | {heads} | exact map, 1 | MSE fall at 1 |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in STRENGTHS) + " | --- | --- |")
    every = [r for rs in rows.values() for r in rs]
    for name, rs in [*rows.items(), ("all", every)]:
        for case in ("same scene", "other scene"):
            mse = {s: float(np.mean([r[f"{case} {s:g}"] for r in rs])) for s in STRENGTHS}
            cells = " | ".join(f"{mse[s]:.1f} ({_psnr(mse[s]):.1f})" for s in STRENGTHS)
            ex = float(np.mean([r[f"{case} exact"] for r in rs]))
            print(f"| {name} | {case} | {len(rs)} | {cells} | {ex:.1f} ({_psnr(ex):.1f}) | "
                  f"{1 - mse[1.0] / mse[0.0]:.0%} |")
    print("\nHarm with no change of light: PSNR dB of the composite against the photo, whole (inside the person),"
          " mean and worst photo:\n")
    print("| case | strength | whole, mean | whole, worst | person, mean | person, worst |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in ("same scene", "other scene"):
        for s in (0.5, 1.0):
            whole = [min(r[f"harm {case} {s:g}"], 99.0) for r in every]
            person = [min(r[f"harm fg {case} {s:g}"], 99.0) for r in every]
            print(f"| {case} | {s:g} | {np.mean(whole):.1f} | {np.min(whole):.1f} | {np.mean(person):.1f} | "
                  f"{np.min(person):.1f} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=30, checkpoint=False)
    p.add_argument("--no-timing", action="store_true", help="skip the 12-MP timing")
    p.add_argument("--sweep", action="store_true", help="score the limits of the change instead")
    args = p.parse_args(argv)
    roots = read_pairs(args)
    if args.sweep:
        loaded = [(load_image(q.image), load_mask(q.mask)) for pairs in roots.values() for q in pairs]
        sweep([(photo, truth, loaded[(i + 1) % len(loaded)][0], i) for i, (photo, truth) in enumerate(loaded)
               if truth.any() and not truth.all()])
        return 0
    rows: dict[str, list[dict[str, float]]] = {}
    bar = Progress(sum(len(v) for v in roots.values()), "harmonize")
    first = None
    for root, pairs in roots.items():
        samples = [(load_image(q.image), load_mask(q.mask)) for q in pairs]
        for i, (photo, truth) in enumerate(samples):
            if not truth.any() or truth.all():
                bar.update()
                continue
            other = samples[(i + 1) % len(samples)][0]
            rows.setdefault(root.name, []).append(score(photo, truth, other, np.random.default_rng(i)))
            first = first or (photo, truth, other)
            bar.update()
    print()
    report(rows)
    if first is not None and not args.no_timing:
        plain, matched = timing(*first)
        print(f"\n12-MP composite onto an image: {plain:.0f} ms without, {matched:.0f} ms with harmonisation "
              f"(+{matched - plain:.0f} ms; median of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
