"""TorchServe handler (minimal first version: mask mode only; see docs/API.md for the full contract)."""

from __future__ import annotations

import os
import sys

import torch
from ts.torch_handler.base_handler import BaseHandler

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from segmenter import checkpoint  # noqa: E402
from segmenter.imaging import decode_image, encode_png  # noqa: E402
from segmenter.inference import Segmenter  # noqa: E402


class PersonSegmenterHandler(BaseHandler):
    def initialize(self, context) -> None:
        model_dir = context.system_properties["model_dir"]
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        model, config = checkpoint.load_model(os.path.join(model_dir, "weights.pt"))
        self.segmenter = Segmenter(model, config["image_size"], "cpu")
        self.context = context
        self.initialized = True

    def preprocess(self, data):
        return [decode_image(row.get("data") or row.get("body") or row.get("image") or b"") for row in data]

    def inference(self, data, *args, **kwargs):
        return self.segmenter.predict(data)

    def postprocess(self, data):
        for i in range(len(data)):
            self.context.set_response_content_type(i, "image/png")
        return [encode_png(m) for m in data]
