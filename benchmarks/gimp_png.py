"""The GIMP plug-in's PNG paths, timed inside a real GIMP 3: encoding the layer and decoding the mask.

    python benchmarks/gimp_png.py                          # 12 MP, against the Python encoder of 11b33ed^
    python benchmarks/gimp_png.py --megapixels 24 --repeats 5 --old-rev none

The plug-in sends the layer as a PNG and gets the mask back as one. It used to read the pixels into
Python and encode/check the PNG with ~140 lines of its own; it now lets GIMP's PNG export write the
layer and GIMP's PNG loader read the answer. This times both, in the same GIMP start, on a synthetic
photo (benchmarks/photos.py: its noise makes it compress like a camera photo) and on the mask the
server's own encoder writes for it: "encode" is layer -> PNG bytes, "decode" is answer bytes ->
checked mask bytes in Python. The former code is taken from git (``--old-rev``), so the comparison
stays reproducible after its removal. Needs root and the GIMP 3 root of the GIMP tests
(``make gimp-root``; ``GIMP_ROOT`` overrides the place). Medians of ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.photos import figure_mask, synthetic_photo
from segmenter import imaging

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "benchmarks" / "gimp_png_driver.py"
CHROOT_RUN = REPO / "tests" / "gimp" / "gimp-chroot-run.sh"
OLD_CORE = "gimp_plugin/replace-background/replace_background_core.py"
INSTALLER = REPO / "gimp_plugin" / "install.sh"


def prepare(job: Path, megapixels: float, old_rev: str, repeats: int) -> None:
    """Write the photo, the server's mask for its figure, the installed plug-in and (optionally) the old core."""
    photo = synthetic_photo(megapixels)
    photo.save(job / "photo.png", compress_level=1)  # lossless, so GIMP holds exactly these pixels
    mask = np.asarray(figure_mask(photo.size))
    (job / "mask.png").write_bytes(imaging.encode_png(mask))
    # installed as users install it (install.sh adds handler/contract.py to the plug-in's folder)
    subprocess.run(["bash", str(INSTALLER), str(job / "plug-ins")], check=True, capture_output=True)
    spec = {"photo": "/bench/photo.png", "mask": "/bench/mask.png", "repeats": repeats,
            "plugin": "/bench/plug-ins/replace-background/replace-background.py"}
    if old_rev != "none":
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{old_rev}:{OLD_CORE}"], check=True,
                                capture_output=True, text=True).stdout
        (job / "old_core.py").write_text(source)
        spec["old_core"] = "/bench/old_core.py"
    (job / "gimp_png_driver.py").write_text(DRIVER.read_text())
    (job / "job.json").write_text(json.dumps(spec))


def run_gimp(job: Path, root: str) -> dict:
    """One headless GIMP start running the driver; its result, or exit with GIMP's log tail."""
    warm = Path(root) / "root/.config/GIMP/3.0"
    cmd = ["bash", str(CHROOT_RUN), root, "-b", f"{job}:/bench", "-e", "GIMP3_DIRECTORY=/bench/profile", "--",
           "gimp-console-3.0", "-i", "-d", "-f", "--batch-interpreter=python-fu-eval",
           "-b", 'exec(open("/bench/gimp_png_driver.py").read())', "--quit"]
    if warm.is_dir():
        subprocess.run(["cp", "-a", str(warm), str(job / "profile")], check=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    result = job / "result.json"
    if not result.exists():
        sys.exit(f"GIMP did not finish the benchmark (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-rev", default="11b33ed^",
                        help="git revision whose plug-in core holds the former Python PNG code; 'none' to skip")
    args = parser.parse_args()
    root = os.environ.get("GIMP_ROOT", "/var/cache/replace-background/gimp3-root")
    if os.geteuid() != 0 or not Path(root, "usr/bin/gimp-console-3.0").exists():
        sys.exit(f"needs root and the GIMP 3 root at {root} (make gimp-root)")
    with tempfile.TemporaryDirectory(prefix="rb-gimp-png-") as tmp:
        job = Path(tmp)
        prepare(job, args.megapixels, args.old_rev, args.repeats)
        result = run_gimp(job, root)
    w, h = result["size"]
    print(f"{w}x{h} ({w * h / 1e6:.1f} MP), median of {result['repeats']} after a warm-up")
    print(f"{'path':<44} {'encode s':>9} {'PNG MB':>7} {'decode s':>9}")
    rows = [("GIMP's PNG export + loader (now)", result["new"]),
            (f"Python encoder + checker ({args.old_rev})", result["old"])]
    for name, row in rows:
        if row:
            print(f"{name:<44} {row['encode_s']:>9.2f} {row['png_bytes'] / 1e6:>7.2f} {row['decode_s']:>9.2f}")


if __name__ == "__main__":
    main()
