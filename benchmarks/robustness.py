"""Hard cases the validation split has few of, ours vs MediaPipe on the same images in one run.

Real users photograph groups, people far from the camera and people cut by the frame; the
validation split is mostly one person filling the frame. This benchmark builds such photos
from the validation pairs, deterministically, with their truth masks built the same way:

- ``as is``: the validation photo itself (the reference row);
- ``cut by frame``: the left 55% of the photo (the person cut by the frame's edge);
- ``group of two``: the photo side by side with the next pair's photo, scaled to one height;
- ``small, far``: the next pair's person pasted at 40% of the height onto this photo, bottom
  right (a far person beside a near one; the truth is both people);
- ``small group``: 3-6 people cut from other pairs, each 8-30% of the frame's height, on a part of this
  photo that its mask marks as background (``training/scenes.py``, the definition training draws from);
- ``people behind``: the same kind of small people behind this photo's own person.

The scene cases are drawn with a seed per photo, so every run and every model sees the same scenes.
A background is only as person-free as its mask says: a street photo may hold unlabelled passers-by.

Both models are scored per image (person IoU and boundary F at the built image's resolution,
threshold 0.5) and averaged. MediaPipe runs in its own venv (``make mediapipe-venv``).

    python benchmarks/robustness.py --data datasets/eg1800 --data datasets/ccp \
        --val-list training/splits/shared_val.txt --limit 60
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
from PIL import Image, ImageFilter

from benchmarks.quality import DEFAULT_MP_PYTHON, MediaPipe
from evaluation.data_options import add_crowd_options, add_data_options, read_pairs
from evaluation.metrics import image_metrics, mean_metrics
from evaluation.progress import Progress
from segmenter import checkpoint
from segmenter.imaging import load_image, load_mask
from segmenter.inference import TTA_MODES, Segmenter
from segmenter.preprocess import THRESHOLD
from training import scenes

Sample = tuple[Image.Image, np.ndarray]  # RGB photo, bool truth mask of the same size


def cut_by_frame(a: Sample, b: Sample) -> Sample:
    image, truth = a
    w = max(16, round(image.width * 0.55))
    return image.crop((0, 0, w, image.height)), truth[:, :w]


def _to_height(sample: Sample, height: int) -> Sample:
    image, truth = sample
    w = max(1, round(image.width * height / image.height))
    mask = Image.fromarray(truth.astype(np.uint8) * 255).resize((w, height), Image.Resampling.BILINEAR)
    return image.resize((w, height), Image.Resampling.BILINEAR), np.asarray(mask) >= 128


def group_of_two(a: Sample, b: Sample) -> Sample:
    (ai, at), (bi, bt) = a, _to_height(b, a[0].height)
    canvas = Image.new("RGB", (ai.width + bi.width, ai.height))
    canvas.paste(ai, (0, 0))
    canvas.paste(bi, (ai.width, 0))
    return canvas, np.concatenate([at, bt], axis=1)


def small_far(a: Sample, b: Sample) -> Sample:
    """``b``'s person at 40% of ``a``'s height, feathered by a pixel, in ``a``'s bottom-right corner."""
    image, truth = a
    small, small_truth = _to_height(b, max(16, round(image.height * 0.4)))
    if small.width > image.width:
        return image, truth
    x, y = image.width - small.width, image.height - small.height
    alpha = Image.fromarray(small_truth.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(0.8))
    out = image.copy()
    out.paste(small, (x, y), alpha)
    merged = truth.copy()
    merged[y:, x:] |= small_truth
    return out, merged


def _scene_people(samples: Sequence[Sample], i: int, rng: np.random.Generator) -> list[scenes.Scene]:
    return scenes.draw_people([(np.asarray(img), t) for img, t in samples], rng, exclude=i)


def small_group(samples: Sequence[Sample], i: int) -> Sample:
    """Small people on a person-free part of photo ``i`` (or of the next photo that has one)."""
    rng = np.random.default_rng(1000 + i)
    for k in range(len(samples)):
        image, truth = samples[(i + k) % len(samples)]
        background = scenes.background_crop(np.asarray(image), truth, rng)
        if background is not None:
            break
    else:
        return samples[i]
    photo, mask = scenes.group_scene(background, _scene_people(samples, i, rng), rng)
    return Image.fromarray(photo), mask


def people_behind(samples: Sequence[Sample], i: int) -> Sample:
    """Small people behind photo ``i``'s own person."""
    rng = np.random.default_rng(2000 + i)
    image, truth = samples[i]
    photo, mask = scenes.people_behind((np.asarray(image), truth), _scene_people(samples, i, rng), rng)
    return Image.fromarray(photo), mask


def _pair_case(build: Callable[[Sample, Sample], Sample]) -> Callable[[Sequence[Sample], int], Sample]:
    """A case built from photo ``i`` and the next one."""
    return lambda samples, i: build(samples[i], samples[(i + 1) % len(samples)])


CASES: dict[str, Callable[[Sequence[Sample], int], Sample]] = {
    "as is": lambda samples, i: samples[i],
    "cut by frame": _pair_case(cut_by_frame),
    "group of two": _pair_case(group_of_two),
    "small, far": _pair_case(small_far),
    "small group": small_group,
    "people behind": people_behind,
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=60)
    add_crowd_options(p)
    p.add_argument("--tta", choices=TTA_MODES, default="none", help="our model's test-time augmentation")
    p.add_argument("--mediapipe-python", type=Path, default=DEFAULT_MP_PYTHON)
    p.add_argument("--case", action="append", choices=sorted(CASES), dest="cases",
                   help="score only this case (repeatable; default: all)")
    args = p.parse_args(argv)
    if not args.mediapipe_python.exists():
        print(f"robustness.py: error: {args.mediapipe_python} not found; run `make mediapipe-venv`", file=sys.stderr)
        return 2
    ckpt = args.checkpoint or checkpoint.default_weights()
    seg = Segmenter.from_checkpoint(ckpt, crowd_path=args.crowd_checkpoint)
    roots = {root.name: pairs for root, pairs in read_pairs(args).items()}
    mp = MediaPipe(args.mediapipe_python)
    scores: dict[tuple[str, str, str], list[dict]] = {}
    cases = {name: CASES[name] for name in args.cases or CASES}
    bar = Progress(sum(len(v) for v in roots.values()) * len(cases), "robustness")
    cut = round(THRESHOLD * 255)
    with tempfile.TemporaryDirectory() as tmp:
        for root, pairs in roots.items():
            samples = [(load_image(q.image), load_mask(q.mask)) for q in pairs]
            for i in range(len(samples)):
                for case, build in cases.items():
                    image, truth = build(samples, i)
                    path = Path(tmp) / "case.png"
                    image.save(path)
                    t = torch.from_numpy(truth)
                    ours = seg.predict_one(image, tta=args.tta, crowd=args.crowd) >= cut
                    theirs = mp.mask(path, Path(tmp) / "m.png") >= cut
                    scores.setdefault((root, case, "ours"), []).append(image_metrics(torch.from_numpy(ours), t))
                    scores.setdefault((root, case, "mp"), []).append(image_metrics(torch.from_numpy(theirs), t))
                    bar.update()
    mp.close()
    crowd = f"crowd {args.crowd}, {'a crowd network' if seg.crowd_model is not None else 'no crowd network'}"
    print(f"\nmodel: {ckpt} (tta {args.tta}, {crowd})\n")
    print("| set | case | images | ours IoU | MediaPipe IoU | ours boundary F | MediaPipe boundary F |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for root in roots:
        for case in cases:
            o, m = mean_metrics(scores[(root, case, "ours")]), mean_metrics(scores[(root, case, "mp")])
            print(f"| {root} | {case} | {o['count']} | {o['iou']:.4f} | {m['iou']:.4f} | "
                  f"{o['boundary_f']:.4f} | {m['boundary_f']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
