"""Photos of groups and small people: a second network trained on such scenes, chosen by the first look.

The main network learnt "one central person" from portrait and full-body data sets. Training it on scenes of
several small people finds them (+0.03 to +0.06 IoU on those scenes) but costs single-person photos up to
0.010, and no dose of scenes removed that conflict (docs/research/zoom-pass.md). So the project serves two
networks: the main one looks first, and only where its map shows a group, the *crowd network*, trained with
most of its samples turned into scenes, replaces that look. A portrait costs what it did; a group photo costs
one more pass.

What counts as a group is read from the first look's confident regions: the largest spans under
``LARGEST_HEIGHT`` of the photo's height, or there are ``MIN_REGIONS`` regions or more and the largest spans
under ``GROUP_MAX_HEIGHT``. The constants are measured by ``benchmarks/studies/group_expert.py``
(docs/research/crowd-network.md): the rule sends no single-person photo of the hard cases (as is, cut by the
frame, side by side, small and far) and most scenes of small people. The height bound on the second clause
keeps a full-length person whose map falls into pieces (legs apart, a stray blob) with the main network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segmenter import checkpoint, people

CROWD_MODES = ("off", "auto", "on")
# The server's default: "auto" looks at each photo's first map, so portraits keep the main network's mask.
DEFAULT_CROWD = "auto"
CONFIDENT = 0.5
LARGEST_HEIGHT = 0.5  # the largest region spans under this share of the map's rows ...
MIN_REGIONS = 3  # ... or the map holds at least this many regions ...
GROUP_MAX_HEIGHT = 0.9  # ... and the largest spans under this share
SPECK = 0.001  # regions under this share of the map are specks, not people
SHIPPED_CROWD = Path(__file__).resolve().parent / "weights" / "person_crowd.pt"


def _labelled(prob: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The map's confident regions (``people.label``) and each label's area, the background's set to 0."""
    labels, n = people.label((prob >= CONFIDENT).numpy())
    area = np.bincount(labels.ravel(), minlength=n + 1)
    area[0] = 0
    return labels, area


def largest_region(prob: torch.Tensor) -> np.ndarray:
    """The largest confident region of the map as a boolean map: the main person (empty when there is none)."""
    labels, area = _labelled(prob)
    return labels == int(np.argmax(area)) if area.any() else np.zeros(labels.shape, bool)


def regions(prob: torch.Tensor) -> tuple[int, float]:
    """How many people the map shows (confident regions above ``SPECK``) and the share of its rows that the
    largest of them spans."""
    labels, area = _labelled(prob)
    if not area.any():
        return 0, 0.0
    count = int((area[1:] >= SPECK * labels.size).sum())
    return count, float((labels == int(np.argmax(area))).any(axis=1).mean())


def is_group(prob: torch.Tensor) -> bool:
    """Whether the first look shows a group: the largest person is not tall in the photo (nobody at all
    included: the crowd network may find people too small for the first look), or there are several people
    and the largest is not of full height."""
    return looks_like_group(*regions(prob))


def looks_like_group(count: int, height: float) -> bool:
    """``is_group`` from ``regions``' two numbers (the study that set the constants scores it on stored ones)."""
    return height < LARGEST_HEIGHT or (count >= MIN_REGIONS and height < GROUP_MAX_HEIGHT)


def check_mode(mode: str) -> str:
    if mode not in CROWD_MODES:
        raise ValueError(f"unknown crowd {mode!r}; expected one of: {', '.join(CROWD_MODES)}")
    return mode


def wants_crowd(prob: torch.Tensor, mode: str) -> bool:
    """Whether ``mode`` sends the photo whose first look is ``prob`` to the crowd network."""
    return check_mode(mode) == "on" or (mode == "auto" and is_group(prob))


def present(path: str | Path | None) -> Path | None:
    """``path``, or None where it is None or the shipped crowd network in a checkout without it
    (``checkpoint.optional_file``): without it every photo keeps the main network's look."""
    return checkpoint.optional_file(path, SHIPPED_CROWD)


def default_for(main: str | Path) -> Path | None:
    """The shipped crowd network for the shipped main network; none for any other (a model trained on one's
    own data is measured alone unless a crowd network is named with it)."""
    same = Path(main).resolve() == checkpoint.SHIPPED_WEIGHTS.resolve()
    return present(SHIPPED_CROWD) if same else None


def check_fits(config: dict[str, Any], main: dict[str, Any], path: str | Path) -> None:
    """Refuse a crowd network that the main network's pre-processing would feed wrongly."""
    for key in ("image_size", "encoder"):
        if config.get(key) != main.get(key):
            raise ValueError(f"{path}: a crowd network needs the main network's {key} ({main.get(key)!r}); "
                             f"this one has {config.get(key)!r}")


def load(path: str | Path, main: dict[str, Any]) -> nn.Module:
    """The crowd network in ``path``, checked to fit the main network whose config is ``main``."""
    model, config = checkpoint.load_model(path)
    check_fits(config, main, path)
    return model
