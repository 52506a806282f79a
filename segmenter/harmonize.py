"""Match the light: move the person's colour and brightness from the old scene's light to the new one's.

A person cut from one photo and put on another keeps the first photo's light and colour cast, and looks
pasted on. The server knows more than a harmonisation model usually does: it has the photo the person
was taken in. So the change of light is read from scene to scene, not from person to scene: the
statistics of the old background (the photo outside the matte) and of the new one (the new background
outside the matte, what is seen around the person) are compared in CIELAB, and the affine map per
channel that takes the first to the second (Reinhard et al. 2001's mean and spread transfer) is applied to
the person's colours. The same background gives the identity, so a person put back on their own scene is
untouched; a blurred copy of the photo changes almost nothing, as its light is the photo's own.

Two scenes differ in content as well as light (a white wall, a dark forest), so the map is held to what a
change of light plausibly does:

- the lightness shift is damped (``LIGHTNESS_DAMPING``) and, with every channel's shift, clipped
  (``MAX_LIGHTNESS_SHIFT``, ``MAX_CHROMA_SHIFT``); spreads change by at most ``MAX_SPREAD_RATIO``;
- ``a`` and ``b`` share one spread ratio (the chroma's), so hues are not rotated and skin stays skin;
- the result is clipped to the sRGB gamut, and highlights above ``HIGHLIGHT_KNEE`` are lifted less, so
  they do not burn out.

``strength`` (0..1) blends between the person's own colours and the mapped ones. Statistics are taken at
a reduced size (``STATS_PIXELS``), and the map is applied at full size as the affine map of sRGB levels
nearest to it over the person's colours (one colour-matrix pass), so a 12-MP
composite pays little for it (docs/BENCHMARKS.md, "Matching the light").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

STATS_PIXELS = 32_768  # statistics are taken on copies of about this many pixels
# The limits below were set by benchmarks/tuning/harmonize_quality.py --sweep: wider ones undo a change of
# light between two views of one scene no better, and move a person put into another scene further from
# their true colours (docs/BENCHMARKS.md, "Matching the light").
LIGHTNESS_DAMPING = 0.8  # share of the scenes' lightness difference passed on to the person
MAX_LIGHTNESS_SHIFT = 8.0  # L* units, at strength 1
MAX_CHROMA_SHIFT = 4.0  # a*, b* units, at strength 1
MAX_SPREAD_RATIO = 1.15  # a spread changes by at most this factor (or its inverse)
HIGHLIGHT_KNEE = 85.0  # L* above which a brightening is faded out towards white
MIN_WEIGHT = 1e-3  # share of the picture a scene must show for its statistics to count
STRENGTH_RANGE = (0.0, 1.0)

_XYZ_FROM_RGB = np.array([[0.4124564, 0.3575761, 0.1804375],
                          [0.2126729, 0.7151522, 0.0721750],
                          [0.0193339, 0.1191920, 0.9503041]], np.float64)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE = _XYZ_FROM_RGB.sum(axis=1)  # D65, the white of sRGB


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB values in 0..255 (any shape ending in 3) -> CIELAB (D65), float64."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = linear @ _XYZ_FROM_RGB.T / _WHITE
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> sRGB values in 0..255, float64, not clipped."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    t = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    linear = np.clip((t * _WHITE) @ _RGB_FROM_XYZ.T, 0, None)
    c = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return c * 255.0


@dataclass(frozen=True)
class LightChange:
    """The per-channel map from the old scene's light to the new one's, held to plausible changes:
    ``lab -> mean_new + ratio * (lab - mean_old)``, the shift ``mean_new - mean_old`` already damped and
    clipped."""

    mean_old: np.ndarray  # L*, a*, b*
    shift: np.ndarray  # added at the old mean
    ratio: np.ndarray  # spread ratio per channel (a* and b* share one)

    def apply(self, lab: np.ndarray, strength: float) -> np.ndarray:
        mapped = self.mean_old + self.shift + self.ratio * (lab - self.mean_old)
        change = strength * (mapped - lab)
        lightness = lab[..., 0]
        fade = np.clip((100.0 - lightness) / (100.0 - HIGHLIGHT_KNEE), 0.0, 1.0)
        change[..., 0] = np.where(change[..., 0] > 0, change[..., 0] * fade, change[..., 0])
        return lab + change


def _small(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    factor = max(1, min(img.width // size[0], img.height // size[1]))
    if factor > 1:
        img = img.reduce(factor)  # a whole-number box average first: far cheaper than resizing 12 MP at once
    return np.asarray(img.resize(size, Image.Resampling.BOX), np.float64)


def _stats(lab: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted mean and spread of L*, a*, b*; the spread of a* and b* is the chroma's (one value)."""
    total = float(weight.sum())
    w = weight[..., None] / max(total, 1e-12)
    mean = (lab * w).sum(axis=(0, 1))
    var = ((lab - mean) ** 2 * w).sum(axis=(0, 1))
    chroma = np.sqrt((var[1] + var[2]) / 2)
    return mean, np.array([np.sqrt(var[0]), chroma, chroma]), total / weight.size


def _stats_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, float(np.sqrt(STATS_PIXELS / (width * height))))
    return max(1, round(width * scale)), max(1, round(height * scale))


def light_change(photo: Image.Image | np.ndarray, alpha: np.ndarray,
                 background: Image.Image | np.ndarray) -> LightChange | None:
    """The change of light from ``photo``'s scene to ``background``'s, both seen outside the matte.

    ``photo`` and ``background`` are RGB of one size, ``alpha`` HxW uint8 (255 = person). None when
    either scene shows too little of itself (a person filling the frame): no light to read.
    """
    size = _stats_size(alpha.shape[1], alpha.shape[0])
    return _change(_small(photo, size), _small(alpha, size) / 255.0, _small(background, size))


def _change(photo: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> LightChange | None:
    """``light_change`` on reduced copies (float RGB 0..255, alpha 0..1)."""
    seen = 1.0 - alpha
    mean_old, spread_old, share = _stats(rgb_to_lab(photo), seen)
    mean_new, spread_new, _ = _stats(rgb_to_lab(background), seen)
    if share < MIN_WEIGHT:
        return None
    shift = mean_new - mean_old
    shift[0] = np.clip(shift[0] * LIGHTNESS_DAMPING, -MAX_LIGHTNESS_SHIFT, MAX_LIGHTNESS_SHIFT)
    shift[1:] = np.clip(shift[1:], -MAX_CHROMA_SHIFT, MAX_CHROMA_SHIFT)
    ratio = np.clip(spread_new / np.maximum(spread_old, 1e-6), 1 / MAX_SPREAD_RATIO, MAX_SPREAD_RATIO)
    return LightChange(mean_old, shift, ratio)


def fit_matrix(change: LightChange, colours: np.ndarray, weight: np.ndarray, strength: float) -> np.ndarray:
    """The affine map of sRGB levels (3 x 4: ``out = M[:, :3] @ rgb + M[:, 3]``) nearest, over the person's
    own colours (N x 3, weighted by the matte), to the CIELAB map at ``strength``.

    Why not the CIELAB map itself, through a 3-D table: looking up a table costs several passes over
    every pixel (a 3-D table in Pillow about four times a colour matrix), and over the colours one
    person has the map is close to affine (docs/BENCHMARKS.md, "Matching the light").
    """
    target = np.clip(lab_to_rgb(change.apply(rgb_to_lab(colours), strength)), 0, 255)
    design = np.concatenate([colours, np.ones((len(colours), 1))], axis=1)
    root = np.sqrt(weight)[:, None]
    solution, *_ = np.linalg.lstsq(design * root, target * root, rcond=None)
    return solution.T


def harmonize(foreground: Image.Image, alpha: np.ndarray, photo: Image.Image,
              background: Image.Image, strength: float) -> Image.Image:
    """``foreground`` (the person's colours, ready to composite with ``alpha``) moved toward
    ``background``'s light; ``photo`` is the scene the person was taken in. Strength 0 (or no light to
    read) returns ``foreground`` itself. Every pixel goes through the same map (the matte decides what is
    seen), so a cut-out's colours stay continuous wherever its matte is edited later."""
    if not STRENGTH_RANGE[0] <= strength <= STRENGTH_RANGE[1]:
        raise ValueError(f"strength {strength!r} is outside {STRENGTH_RANGE[0]:g}..{STRENGTH_RANGE[1]:g}")
    if strength == 0 or not alpha.any():
        return foreground
    size = _stats_size(alpha.shape[1], alpha.shape[0])
    small_photo, small_alpha = _small(photo, size), _small(alpha, size) / 255.0
    change = _change(small_photo, small_alpha, _small(background, size))
    person = small_alpha.reshape(-1) > 0
    if change is None or np.count_nonzero(person) < 4:
        return foreground
    matrix = fit_matrix(change, small_photo.reshape(-1, 3)[person], small_alpha.reshape(-1)[person], strength)
    return foreground.convert("RGB", tuple(float(v) for v in matrix.ravel()))
