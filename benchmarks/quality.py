"""Side-by-side quality: our model vs MediaPipe's selfie segmenter on the same photos, in one run.

Both are scored the same way (person IoU, Dice and boundary F per image at the original
resolution, averaged over images, threshold 0.5). MediaPipe runs in its own venv
(``make mediapipe-venv``), never as a project dependency.

    python benchmarks/quality.py --data datasets/eg1800 --data datasets/ccp \
        --val-list training/splits/shared_val.txt --grid docs/images/quality_grid.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
from PIL import Image

from evaluation.data_options import add_data_options, all_pairs
from evaluation.metrics import image_metrics, mean_metrics
from evaluation.progress import Progress
from segmenter import checkpoint
from segmenter.imaging import load_image, load_mask
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MP_PYTHON = REPO / ".venv-mediapipe" / "bin" / "python"


class MediaPipe:
    """A long-lived worker process in the MediaPipe venv."""

    def __init__(self, python: Path) -> None:
        self.proc = subprocess.Popen([str(python), str(REPO / "benchmarks" / "mediapipe_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)

    def mask(self, image: Path, out: Path) -> np.ndarray:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"image": str(image), "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("MediaPipe worker died")
        with Image.open(out) as m:
            return np.asarray(m)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _error_tile(pred: np.ndarray, truth: np.ndarray, height: int = 160) -> Image.Image:
    """Mask with errors coloured: white = person, red = false person, blue = missed person."""
    rgb = np.zeros((*truth.shape, 3), np.uint8)
    rgb[pred & truth] = 255
    rgb[pred & ~truth] = (230, 40, 40)
    rgb[~pred & truth] = (40, 90, 230)
    img = Image.fromarray(rgb)
    return img.resize((max(1, round(img.width * height / img.height)), height), Image.Resampling.NEAREST)


def save_grid(cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Rows of truth | ours | MediaPipe, masks only (the photos' licences do not allow copying them)."""
    rows = [[_error_tile(t, t), _error_tile(o, t), _error_tile(m, t)] for _, t, o, m in cases]
    width = max(sum(t.width for t in r) + 8 for r in rows)
    sheet = Image.new("RGB", (width, 164 * len(rows)), (255, 255, 255))
    for y, r in enumerate(rows):
        x = 0
        for tile in r:
            sheet.paste(tile, (x, y * 164))
            x += tile.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p)
    p.add_argument("--mediapipe-python", type=Path, default=DEFAULT_MP_PYTHON)
    p.add_argument("--no-tta", action="store_true",
                   help="skip the 'ours + flip' column (the served option tta=flip, docs/API.md)")
    p.add_argument("--grid", type=Path, help="write a picture grid of typical and worst cases here")
    p.add_argument("--json", type=Path, help="write the summary as JSON here")
    args = p.parse_args(argv)
    if not args.mediapipe_python.exists():
        print(f"quality.py: error: {args.mediapipe_python} not found; run `make mediapipe-venv` "
              "(a separate venv with mediapipe==0.10.21)", file=sys.stderr)
        return 2
    ckpt = args.checkpoint or checkpoint.default_weights()
    seg = Segmenter.from_checkpoint(ckpt)
    pairs = all_pairs(args)
    columns = ["ours"] + ([] if args.no_tta else ["ours_flip"]) + ["mediapipe"]
    titles = {"ours": "ours", "ours_flip": "ours + flip", "mediapipe": "MediaPipe"}
    cut = round(THRESHOLD * 255)
    mp = MediaPipe(args.mediapipe_python)
    results: dict[str, dict[str, list]] = {}
    cases = []
    bar = Progress(len(pairs), "quality")
    with tempfile.TemporaryDirectory() as tmp:
        for pair in pairs:
            truth = load_mask(pair.mask)
            image = load_image(pair.image)
            ours = seg.predict_one(image) >= cut
            theirs = mp.mask(pair.image, Path(tmp) / "m.png") >= cut
            t = torch.from_numpy(truth)
            per = results.setdefault(pair.root.name, {who: [] for who in columns})
            per["ours"].append(image_metrics(torch.from_numpy(ours), t))
            if "ours_flip" in columns:
                flip = seg.predict_one(image, tta="flip") >= cut
                per["ours_flip"].append(image_metrics(torch.from_numpy(flip), t))
            per["mediapipe"].append(image_metrics(torch.from_numpy(theirs), t))
            cases.append((pair.name, truth, ours, theirs, per["ours"][-1]["iou"]))
            bar.update()
    mp.close()
    summary = {root: {who: mean_metrics(rows) for who, rows in r.items()} for root, r in results.items()}
    print(f"\nmodel: {ckpt}\n")
    heads = [f"{titles[c]} IoU" for c in columns] + [f"{titles[c]} boundary F" for c in columns]
    print("| set | pairs | " + " | ".join(heads) + " |")
    print("| --- " * (2 + len(heads)) + "|")
    for root, s in summary.items():
        cells = [f"{s[c]['iou']:.4f}" for c in columns] + [f"{s[c]['boundary_f']:.4f}" for c in columns]
        print(f"| {root} | {s['ours']['count']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(ckpt), "summary": summary}, indent=2))
    if args.grid and cases:
        ranked = sorted(cases, key=lambda c: c[4])
        mid = len(ranked) // 2
        picks = ranked[:3] + ranked[max(3, mid - 1):mid + 2]
        save_grid([(n, t, o, m) for n, t, o, m, _ in picks], args.grid)
        print(f"\ngrid (worst 3 by our IoU, then 3 typical): {args.grid}; names: {', '.join(c[0] for c in picks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
