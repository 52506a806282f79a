"""In-process time of a mask and a blur composite, this checkout against another one (a speed regression check).

    git worktree add /tmp/before <commit>
    python benchmarks/compare_checkouts.py /tmp/before          # then: git worktree remove /tmp/before

Each checkout's ``segmenter`` package runs in its own process on the same synthetic photos
(benchmarks/photos.py) and the same weights (this checkout's shipped model, or --checkpoint):
decode + ``Segmenter.predict_one`` + PNG encode for a mask; plus blurred background, blend and
JPEG for a composite. Medians of a few runs; the ratio column is what to read on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def measure(checkout: Path, checkpoint: Path, sizes: list[float]) -> dict[str, float]:
    """Run inside a child process whose ``segmenter`` comes from ``checkout``."""
    sys.path.insert(0, str(checkout))
    sys.path.insert(1, str(HERE))
    from benchmarks.photos import jpeg_bytes, synthetic_photo
    from benchmarks.timing import median_time
    from segmenter import imaging
    from segmenter.inference import Segmenter

    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    out = {}
    for mp in sizes:
        data = jpeg_bytes(synthetic_photo(mp))

        def mask(data: bytes = data) -> bytes:
            return imaging.encode_png(seg.predict_one(imaging.decode_image(data)))

        def blur(data: bytes = data) -> bytes:
            image = imaging.decode_image(data)
            alpha = seg.predict_one(image)
            return imaging.encode_jpeg(imaging.composite(image, alpha, imaging.blurred(image)))

        repeats = 5 if mp < 20 else 3
        out[f"{mp:g} MP mask"] = median_time(mask, repeats)[0] * 1e3
        out[f"{mp:g} MP blur composite"] = median_time(blur, repeats)[0] * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("other", type=Path, help="the other checkout (e.g. a git worktree of an older commit)")
    p.add_argument("--checkpoint", type=Path, default=HERE / "segmenter" / "weights" / "person_unet.pt")
    p.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 12.0, 24.0])
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.checkpoint, args.megapixels)))
        return 0
    results = {}
    for name, checkout in (("other", args.other.resolve()), ("this", HERE)):
        cmd = [sys.executable, __file__, str(args.other), "--child", str(checkout), "--checkpoint",
               str(args.checkpoint.resolve()), "--megapixels", *map(str, args.megapixels)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n| work | {args.other} (ms) | this checkout (ms) | speed-up |\n| --- | --- | --- | --- |")
    for key, before in results["other"].items():
        after = results["this"][key]
        print(f"| {key} | {before:.0f} | {after:.0f} | {before / after:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
