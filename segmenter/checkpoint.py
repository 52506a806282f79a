"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors and numbers, loaded with ``weights_only=True`` so a
file from an untrusted source cannot run code. It carries the model's configuration, so
the handler and the CLI rebuild the exact network that was trained.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segmenter.model import build_model

# The weights the project ships; make serve, evaluate.py and predict.py use them by default.
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "person_unet.pt"


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files ``save_atomic(…, path)`` left behind when killed mid-write; return them.

    A SIGKILL (or power loss) inside ``save_atomic`` skips its clean-up, and each such kill would
    leave a checkpoint-sized ``.NAME.xxxx.tmp`` in the run folder for ever. Only call this when no
    other process is saving to ``path`` (e.g. when training starts).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise ValueError(f"{path}: not a readable checkpoint ({_reason(exc)})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a checkpoint of this project (no 'model'/'config' entries)")
    return ckpt


def _reason(exc: Exception) -> str:
    """Why torch refused the file, without its advice to retry with ``weights_only=False``.

    That advice would run whatever code the file carries; our message says what was found instead.
    """
    text = str(exc)
    if not text.startswith("Weights only load failed"):
        return (text.strip().splitlines() or [type(exc).__name__])[0][:300]
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    code = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line), None)
    if code:
        return ("weights-only load refused: the file holds Python objects, not only weights, and loading it "
                f"could run code from it; {code}")
    return "damaged, or not a PyTorch checkpoint (the weights-only loader could not read it)"


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Model in eval mode plus its config (encoder, image_size, ...); old and new checkpoints alike."""
    ckpt = load(path)
    try:
        model = build_model(ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: weights do not fit the recorded architecture ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, dict(ckpt["config"])


def optional_file(path: str | Path | None, shipped: Path) -> Path | None:
    """``path``, or None where it is None or the ``shipped`` file in a checkout without it: a shipped extra
    network is optional, a path a caller names is not (loading it then says what is wrong)."""
    if path is None or (Path(path) == shipped and not shipped.is_file()):
        return None
    return Path(path)


def default_weights() -> Path:
    """The shipped weights, or a clear error saying how to get a model."""
    if not SHIPPED_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"{SHIPPED_WEIGHTS}: no shipped model found; train one with `python training/train.py` "
            "and pass --checkpoint runs/<run>/best.pt")
    return SHIPPED_WEIGHTS
