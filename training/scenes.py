"""Scenes with several people built from single-person pairs: small groups and people behind the subject.

The training sets are portraits and single full-body people, so a model learns "one central person" and
misses the smaller people around it. These builders make the scenes the sets lack, with exact truth masks:

- ``group_scene``: 3-6 people cut from other photos, each 8-30% of the frame's height, on a background cut
  from the part of a photo that its mask marks as background (so no unlabelled person is in it);
- ``people_behind``: the same small people placed behind a photo's own person, who stays in front;
- ``decoy``: a hard negative for either, a person's outline filled with a piece of background and labelled
  background, so that a pasted, person-shaped thing is not by itself a person.

Training draws them as augmentation (``SegmentationDataset(group_prob=...)``) and the hard-case benchmark
builds them with a fixed seed, so what the model is trained on and what it is judged on are one definition.
Arrays, not tensors: RGB ``uint8`` HxWx3 photos and ``bool`` HxW masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

Scene = tuple[np.ndarray, np.ndarray]  # RGB uint8 HxWx3, bool HxW person mask

# A pasted person's height as a fraction of the frame's: from a far figure to a person a few metres back.
PERSON_HEIGHT = (0.08, 0.30)
PEOPLE = (3, 6)
# A background crop may hold at most this share of person pixels (mask edges, stray labels).
BACKGROUND_MAX_PERSON = 0.002
BACKGROUND_SIDE = (0.3, 1.0)
# A decoy's filling: a smaller piece of background, so it reads as a surface (a wall, foliage), not a view.
DECOY_SIDE = (0.1, 0.4)


def _resize(image: np.ndarray, mask: np.ndarray, width: int, height: int) -> Scene:
    img = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img), np.asarray(m) >= 128


def cut_out(image: np.ndarray, mask: np.ndarray) -> Scene | None:
    """The person's bounding box (photo and mask), or None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return image[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def background_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    tries: int = 40, side: tuple[float, float] = BACKGROUND_SIDE) -> np.ndarray | None:
    """A random rectangle of the photo with (almost) no person in it, or None when none was found.

    Sides are drawn as fractions of the photo's (``side``), aspect between 1:2 and 2:1; the summed-area
    table makes each try O(1).
    """
    h, w = mask.shape
    table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    lo, hi = side
    for _ in range(tries):
        ch = max(16, int(h * rng.uniform(lo, hi)))
        cw = max(16, int(ch * rng.uniform(0.5, 2.0)))
        if ch > h or cw > w:
            continue
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        person = table[y + ch, x + cw] - table[y, x + cw] - table[y + ch, x] + table[y, x]
        if person <= BACKGROUND_MAX_PERSON * ch * cw:
            return image[y:y + ch, x:x + cw]
    return None


def _alpha(mask: np.ndarray) -> np.ndarray:
    """The person's mask feathered by about a pixel: a hard pasted edge must not become a shortcut."""
    soft = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(soft, dtype=np.float32)[..., None] / 255.0


def paste_people(canvas: np.ndarray, truth: np.ndarray, people: Sequence[Scene],
                 rng: np.random.Generator, height: tuple[float, float] = PERSON_HEIGHT,
                 person: bool = True) -> Scene:
    """Paste each cut-out at a random size and place; returns the new photo and the union of the masks.

    Heights are drawn in ``height`` (fractions of the canvas height); a person may be cut by the frame's
    sides or bottom, as in a real crowd, but their top stays inside so they are never only a pair of feet.
    With ``person=False`` the cut-outs are decoys: what they cover becomes background in the truth.
    """
    out = canvas.astype(np.float32)
    merged = truth.copy()
    h, w = truth.shape
    for image, mask in people:
        ph = max(8, round(h * rng.uniform(*height)))
        pw = max(2, round(image.shape[1] * ph / image.shape[0]))
        if pw > 2 * w:
            continue
        img, m = _resize(image, mask, pw, ph)
        x = int(rng.integers(-pw // 4, max(1, w - pw * 3 // 4)))
        y = int(rng.integers(0, max(1, h - ph // 2)))
        # The part of the cut-out that falls inside the frame.
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
        if x1 <= x0 or y1 <= y0:
            continue
        sub_img, sub_m = img[y0 - y:y1 - y, x0 - x:x1 - x], m[y0 - y:y1 - y, x0 - x:x1 - x]
        a = _alpha(sub_m)
        out[y0:y1, x0:x1] = sub_img * a + out[y0:y1, x0:x1] * (1 - a)
        if person:
            merged[y0:y1, x0:x1] |= sub_m
        else:
            merged[y0:y1, x0:x1] &= a[..., 0] < 0.5
    return np.clip(out.round(), 0, 255).astype(np.uint8), merged


def decoy(outline: np.ndarray, filling: np.ndarray) -> Scene:
    """A person's outline (``cut_out``'s mask) filled with ``filling`` stretched to its box.

    The hard negative of the scenes: pasted people teach "a pasted, person-shaped thing is a person", and
    without decoys that includes towers, coats on stands and sofas. Paste it with ``person=False``.
    """
    h, w = outline.shape
    return np.asarray(Image.fromarray(filling).resize((w, h), Image.Resampling.BILINEAR)), outline


def _crowd(canvas: np.ndarray, truth: np.ndarray, people: Sequence[Scene], rng: np.random.Generator,
           decoys: Sequence[Scene]) -> Scene:
    """The decoys, then the people over them: a person may stand in front of a decoy, never behind one."""
    if decoys:
        canvas, truth = paste_people(canvas, truth, decoys, rng, person=False)
    return paste_people(canvas, truth, people, rng)


def group_scene(background: np.ndarray, people: Sequence[Scene], rng: np.random.Generator,
                decoys: Sequence[Scene] = ()) -> Scene:
    """Several small people on a person-free background, over ``decoys`` when given."""
    return _crowd(background, np.zeros(background.shape[:2], bool), people, rng, decoys)


def people_behind(subject: Scene, people: Sequence[Scene], rng: np.random.Generator,
                  decoys: Sequence[Scene] = ()) -> Scene:
    """Small people (over ``decoys`` when given) pasted into ``subject``'s photo, then its own person put
    back on top of them."""
    image, mask = subject
    crowd, merged = _crowd(image, mask, people, rng, decoys)
    a = _alpha(mask)
    front = image * a + crowd * (1 - a)
    return np.clip(front.round(), 0, 255).astype(np.uint8), merged | mask


def draw_people(samples: Sequence[Scene], rng: np.random.Generator, exclude: int,
                count: tuple[int, int] = PEOPLE) -> list[Scene]:
    """``count`` cut-outs from random samples other than ``exclude`` (empty masks skipped)."""
    n = int(rng.integers(count[0], count[1] + 1))
    others = [i for i in range(len(samples)) if i != exclude]
    picks = rng.choice(others, size=min(n, len(others)), replace=False)
    cuts = (cut_out(*samples[int(i)]) for i in picks)
    return [c for c in cuts if c is not None]
