"""Run MediaPipe's selfie segmenter (general 256x256 model) on photos; used by quality.py.

Runs inside its own venv (mediapipe==0.10.21 pins numpy<2 and ships TensorFlow Lite), never the
project's. Reads JSON lines {"image": path, "out": path} on stdin and writes each soft mask as an
8-bit PNG at the photo's resolution; answers one JSON line per request.
"""

from __future__ import annotations

import json
import sys

import mediapipe as mp
import numpy as np
from PIL import Image, ImageOps


def main() -> int:
    seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    for line in sys.stdin:
        job = json.loads(line)
        with Image.open(job["image"]) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        prob = seg.process(rgb).segmentation_mask
        Image.fromarray(np.clip(prob * 255 + 0.5, 0, 255).astype(np.uint8)).save(job["out"])
        print(json.dumps({"ok": job["out"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
