"""Bring the network's low-resolution probability map to the photo's full resolution.

Plain bilinear upsampling of a 256-pixel map gives a 24-megapixel photo a mask edge
dozens of pixels wide and blind to the photo's real contours. The fast guided filter
(He & Sun, 2015) fits, in each small window, a linear model ``mask = a * photo + b`` at a
working resolution and applies the upsampled ``a, b`` to the full-resolution photo, so the
edge snaps to the photo's own edges at the cost of two upsamplings and a multiply-add.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

METHODS = ("guided", "bilinear")
GUIDES = ("rgb", "luma")
# Working resolution (long side) of the guided filter, window radius as a fraction of it, the
# regulariser (larger eps = smoother, closer to bilinear) and the guide: the colour photo (He et
# al.'s colour guided filter) or its luma. Chosen on the validation split with
# benchmarks/refine_quality.py --sweep (docs/SERVING.md): an RGB guide with a 1/16 radius had the
# best boundary F and IoU of the settings tried, for weak and well-trained checkpoints alike.
WORK_SIZE = 512
RADIUS_FRACTION = 1 / 16
EPS = 1e-3
GUIDE = "rgb"


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped to the image, as two 1-D passes: O(r) per pixel, not O(r^2)."""
    k = 2 * r + 1
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)


def _pixels(image: Image.Image, guide: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The guide's uint8 pixels (HxW luma or HxWx3 RGB), optionally resized first."""
    img = image.convert("L") if guide == "luma" else image.convert("RGB") if image.mode != "RGB" else image
    if size is not None and size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img)


def _as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> 1xCxHxW float in [0, 1]."""
    arr = np.ascontiguousarray(pixels)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(torch.float32).div_(255.0)
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def _grey(image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Luma of the photo as a 1x1xHxW float tensor in [0, 1], optionally resized first."""
    return _as_tensor(_pixels(image, "luma", size))


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _coefficients(guide: torch.Tensor, p: torch.Tensor, r: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window linear model ``p ~ a . I + b`` (a: 1xCxhxw, b: 1x1xhxw) for a 1- or 3-channel guide."""
    mean_i, mean_p = _box(guide, r), _box(p, r)
    cov_ip = _box(guide * p, r) - mean_i * mean_p
    if guide.shape[1] == 1:
        a = cov_ip / (_box(guide * guide, r) - mean_i * mean_i + eps)
    else:
        def var(i: int, j: int) -> torch.Tensor:
            v = _box(guide[:, i:i + 1] * guide[:, j:j + 1], r) - mean_i[:, i:i + 1] * mean_i[:, j:j + 1]
            return v + eps if i == j else v

        # (Sigma + eps I)^-1 cov per pixel by the closed-form symmetric 3x3 inverse (adjugate / det):
        # plain elementwise maps, far faster than a batched torch.linalg.solve
        rr, rg, rb, gg, gb, bb = var(0, 0), var(0, 1), var(0, 2), var(1, 1), var(1, 2), var(2, 2)
        i00, i01, i02 = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
        i11, i12, i22 = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
        det = rr * i00 + rg * i01 + rb * i02
        c0, c1, c2 = cov_ip[:, 0:1], cov_ip[:, 1:2], cov_ip[:, 2:3]
        a = torch.cat([i00 * c0 + i01 * c1 + i02 * c2, i01 * c0 + i11 * c1 + i12 * c2,
                       i02 * c0 + i12 * c1 + i22 * c2], 1).div_(det)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    return a, b


def guided_upsample(prob: torch.Tensor, image: Image.Image, work_size: int = WORK_SIZE,
                    radius_fraction: float = RADIUS_FRACTION, eps: float = EPS, guide: str = GUIDE) -> torch.Tensor:
    """Fast guided filter: low-res probability (h, w) + full-res photo -> full-res (H, W) in [0, 1].

    The linear coefficients are fitted at ``work_size`` and applied to the full-resolution photo
    one channel at a time, so a 24-megapixel photo costs a few full-size maps, not a dozen.
    """
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
    width, height = image.size
    scale = min(1.0, work_size / max(width, height))
    ww, wh = max(1, round(width * scale)), max(1, round(height * scale))
    small = _as_tensor(_pixels(image, guide, (ww, wh)))
    p = _upsample(prob.float()[None, None], (wh, ww))
    r = max(1, round(radius_fraction * max(ww, wh)))
    a, b = _coefficients(small, p, r, eps)
    coeffs = _upsample(torch.cat([_box(a, r), _box(b, r)], 1), (height, width))[0]  # (C+1)xHxW
    full = _pixels(image, guide)
    out = coeffs[-1]
    for c in range(coeffs.shape[0] - 1):
        out.addcmul_(coeffs[c], _as_tensor(full if full.ndim == 2 else full[..., c])[0, 0])
    return out.clamp_(0.0, 1.0)


def bilinear_upsample(prob: torch.Tensor, image: Image.Image) -> torch.Tensor:
    width, height = image.size
    return _upsample(prob.float()[None, None], (height, width))[0, 0].clamp_(0.0, 1.0)


def upsample(prob: torch.Tensor, image: Image.Image, method: str = "guided") -> torch.Tensor:
    """Full-resolution soft mask for ``image`` from the low-res map ``prob`` (content area only)."""
    if method == "guided":
        return guided_upsample(prob, image)
    if method == "bilinear":
        return bilinear_upsample(prob, image)
    raise ValueError(f"unknown refine method {method!r}; expected one of {', '.join(METHODS)}")
