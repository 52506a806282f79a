"""Training-sample cost from camera-size photos, before and after ``training/shrink.py``.

    python benchmarks/data_loading.py                      # 6 generated 12-MP photos, copy at 640 px
    python benchmarks/data_loading.py --data ~/photos/Dataset --limit 20    # shrinks all of it, times 20

Times ``SegmentationDataset[i]`` (decode photo and mask, augment, crop to the input size: all a data
worker does per sample) on the original files and on a reduced copy, and prints milliseconds per
sample and their ratio. Compare with a training step: 16 filters at 256 px take 60-90 ms per
sample on a 2-core CPU (benchmarks/training_speed.py), so a loader slower than that starves the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import torch

from benchmarks.photos import figure_mask, synthetic_photo
from evaluation.pairs import find_pairs
from training.data import SegmentationDataset
from training.shrink import shrink_root

REPO = Path(__file__).resolve().parent.parent


def make_dataset(root: Path, count: int, megapixels: float) -> Path:
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    for i in range(count):
        photo = synthetic_photo(megapixels, seed=i)
        photo.save(root / "Images" / f"p{i:04d}.jpg", quality=90)
        figure_mask(photo.size).save(root / "Masks" / f"p{i:04d}.png")
    return root


def ms_per_sample(root: Path, image_size: int, rounds: int, limit: int | None) -> float:
    pairs = find_pairs([root])[:limit] if limit else find_pairs([root])
    data = SegmentationDataset(pairs, image_size, paste_prob=0.3, crop_prob=0.3, side_prob=0.1)
    torch.manual_seed(0)
    data[0]  # warm-up: first calls pay for allocation and caches
    start = time.perf_counter()
    for _ in range(rounds):
        for i in range(len(data)):
            data[i]
    return (time.perf_counter() - start) * 1000 / (rounds * len(data))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a real dataset root (default: generated photos)")
    p.add_argument("--limit", type=int, help="at most N pairs of --data")
    p.add_argument("--count", type=int, default=6, help="generated photos")
    p.add_argument("--megapixels", type=float, default=12.0, help="size of the generated photos")
    p.add_argument("--long-side", type=int, default=640, help="the reduced copy's long side")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3, help="passes over the pairs per timing")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one data worker's view: a worker process runs on one thread
    with tempfile.TemporaryDirectory() as tmp:
        src = args.data or make_dataset(Path(tmp) / "orig", args.count, args.megapixels)
        small = Path(tmp) / "small"
        t = time.perf_counter()
        count = shrink_root(src, small, args.long_side, show_progress=False)
        shrink_s = time.perf_counter() - t
        before = ms_per_sample(src, args.image_size, args.rounds, args.limit)
        after = ms_per_sample(small, args.image_size, args.rounds, args.limit)
    print(f"{'data':<34} {'ms/sample':>10}")
    print(f"{'original files':<34} {before:>10.1f}")
    print(f"{'shrunk, long side ' + str(args.long_side):<34} {after:>10.1f}")
    print(f"ratio original/shrunk: {before / after:.1f}x; shrinking {count} pairs took {shrink_s:.1f} s "
          f"({shrink_s / count * 1000:.0f} ms each, once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
