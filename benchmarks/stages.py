"""Where the time of one request goes, and how close the model runs to this CPU's peak.

    python benchmarks/stages.py                       # shipped weights, 1 and 12 megapixels
    python benchmarks/stages.py --megapixels 1 12 24 --threads 2 --repeats 5

Times the served path stage by stage, with the handler's own functions: decode
(``imaging.decode_image``), the model input (``Segmenter.model_input``: letterbox, canvas, normalise),
the model (forward + sigmoid), edge refinement (``refine.upsample``, uint8 out) and
encoding (PNG mask; for the composite also the blurred background, the blend and a JPEG).
Medians of ``--repeats`` runs after one warm-up.

The model line is set against the machine's measured peak: the best of a large fp32 and a bf16
matmul on the same threads (what the convolutions lower to), and the network's FLOPs from
``torch.utils.flop_counter``; 'of peak' is achieved/peak for the dtype the server uses.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.photos import jpeg_bytes, synthetic_photo
from benchmarks.timing import median_time
from segmenter import imaging
from segmenter.inference import Segmenter, autocast
from segmenter.refine import upsample


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul: a practical compute ceiling for convolutions here."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def model_flops(seg: Segmenter, image: Image.Image) -> int:
    """FLOPs of one forward pass on this photo's input (its canvas, not the full square)."""
    x = seg.model_input([image])[0].float()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        seg.model(x)
    return counter.get_total_flops()


def stages(seg: Segmenter, data: bytes, repeats: int) -> dict[str, float]:
    """Seconds per stage for a mask and the extra stages of a blur composite (JPEG out)."""
    out: dict[str, float] = {}
    out["decode"], image = median_time(lambda: imaging.decode_image(data), repeats)
    out["resize to model input"], (batch, [(w, h)]) = median_time(lambda: seg.model_input([image]), repeats)

    def forward() -> torch.Tensor:
        with torch.inference_mode(), autocast(seg.device, seg.amp):
            return torch.sigmoid(seg.model(batch).float())[0, 0, :h, :w]

    out["model"], prob = median_time(forward, repeats)
    out["edge refinement"], mask = median_time(lambda: upsample(prob, image, "guided"), repeats)
    out["encode PNG mask"], _ = median_time(lambda: imaging.encode_png(mask), repeats)
    out["blur background"], bg = median_time(lambda: imaging.blurred(image), repeats)
    out["blend"], comp = median_time(lambda: imaging.composite(image, mask, bg), repeats)
    out["encode JPEG"], _ = median_time(lambda: imaging.encode_jpeg(comp), repeats)
    return out


MASK_STAGES = ("decode", "resize to model input", "model", "edge refinement", "encode PNG mask")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    p.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 12.0])
    p.add_argument("--aspect", type=float, default=4 / 3,
                   help="photo width / height (default 4:3 landscape; 0.75: a 3:4 portrait, which the "
                        "encoder model runs on a narrower canvas)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), bf16 autocast: {seg.amp}, "
          f"input {seg.image_size}px")

    results = {}
    images = {}
    for mp in args.megapixels:
        image = images[mp] = synthetic_photo(mp, aspect=args.aspect)
        data = jpeg_bytes(image)
        results[mp] = stages(seg, data, args.repeats)
        print(f"  {mp:g} MP: {image.width}x{image.height}, JPEG {len(data) / 1e6:.2f} MB", file=sys.stderr)

    header = "| stage | " + " | ".join(f"{mp:g} MP (ms)" for mp in args.megapixels) + " |"
    print("\n" + header + "\n|" + " --- |" * (len(args.megapixels) + 1))
    for name in results[args.megapixels[0]]:
        print(f"| {name} | " + " | ".join(f"{results[mp][name] * 1e3:.1f}" for mp in args.megapixels) + " |")
    print("| **mask total** | " + " | ".join(
        f"**{sum(results[mp][s] for s in MASK_STAGES) * 1e3:.1f}**" for mp in args.megapixels) + " |")
    print("| composite total (blur, JPEG) | " + " | ".join(f"{sum(results[mp].values()) * 1e3:.1f}"
                                                       for mp in args.megapixels) + " |")

    flops = model_flops(seg, images[args.megapixels[0]])
    model_s = statistics.median(results[mp]["model"] for mp in args.megapixels)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    achieved = flops / model_s
    peak = peak16 if seg.amp else peak32
    print(f"\nmodel: {flops / 1e9:.2f} GFLOP per image in {model_s * 1e3:.1f} ms = {achieved / 1e9:.0f} GFLOP/s; "
          f"matmul peak fp32 {peak32 / 1e9:.0f}, bf16 {peak16 / 1e9:.0f} GFLOP/s; "
          f"{achieved / peak:.0%} of the {'bf16' if seg.amp else 'fp32'} peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
