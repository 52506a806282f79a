"""The small core shared by training, the TorchServe handler and the command-line tools.

Everything that decides what a pixel becomes lives here exactly once: the model, the image
decoding rules, the pre-processing constants and the edge-aware upsampling. Training and
serving both import it, so what is measured is what is served.

The names below are its public API, in the manner of segmentation_models_pytorch's package::

    from segmenter import Segmenter, decode_image, upsample
    seg = Segmenter.from_checkpoint()            # the shipped model
    mask = seg.predict_one(decode_image(data))   # uint8 mask at the photo's size

They are resolved on first use (PEP 562), so ``import segmenter`` stays cheap and a submodule may
import a sibling without going round through this file: ``handler.request`` needs only
``segmenter.imaging`` and must not pay for torch's model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it. A name must not be a submodule's own name (``harmonize``):
# ``from segmenter import harmonize`` has to keep giving the module.
_EXPORTS = {
    "Segmenter": "inference",
    "TTA_MODES": "inference",
    "build_model": "model",
    "describe": "model",
    "fold_batchnorm": "model",
    "load_model": "checkpoint",
    "default_weights": "checkpoint",
    "SHIPPED_WEIGHTS": "checkpoint",
    "ImageError": "imaging",
    "decode_image": "imaging",
    "load_image": "imaging",
    "load_mask": "imaging",
    "encode_png": "imaging",
    "composite": "imaging",
    "cutout": "imaging",
    "upsample": "refine",
    "matte": "matting",
    "zoomed": "zoom",
    "keep_people": "people",
    "keep_chosen": "people",
    "Chooser": "chooser",
    "THRESHOLD": "preprocess",
}

__all__ = [
    "SHIPPED_WEIGHTS",
    "Chooser",
    "THRESHOLD",
    "TTA_MODES",
    "ImageError",
    "Segmenter",
    "build_model",
    "composite",
    "cutout",
    "decode_image",
    "default_weights",
    "describe",
    "encode_png",
    "fold_batchnorm",
    "keep_chosen",
    "keep_people",
    "load_image",
    "load_mask",
    "load_model",
    "matte",
    "upsample",
    "zoomed",
]

if TYPE_CHECKING:
    from segmenter.checkpoint import SHIPPED_WEIGHTS, default_weights, load_model
    from segmenter.chooser import Chooser
    from segmenter.imaging import ImageError, composite, cutout, decode_image, encode_png, load_image, load_mask
    from segmenter.inference import TTA_MODES, Segmenter
    from segmenter.matting import matte
    from segmenter.model import build_model, describe, fold_batchnorm
    from segmenter.people import keep_chosen, keep_people
    from segmenter.preprocess import THRESHOLD
    from segmenter.refine import upsample
    from segmenter.zoom import zoomed


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segmenter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"segmenter.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
