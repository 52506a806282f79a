"""Bring the network's low-resolution probability map to the photo's full resolution.

Plain bilinear upsampling of a 256-pixel map gives a 24-megapixel photo a mask edge
dozens of pixels wide and blind to the photo's real contours. The fast guided filter
(He & Sun, 2015) fits, in each small window, a linear model ``mask = a * photo + b`` at a
working resolution and applies the upsampled ``a, b`` to the full-resolution photo, so the
edge snaps to the photo's own edges at the cost of two upsamplings and a multiply-add.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

METHODS = ("guided", "bilinear")
GUIDES = ("rgb", "luma")
# Working resolution (long side) of the guided filter, window radius as a fraction of it, the
# regulariser (larger eps = smoother, closer to bilinear) and the guide: the colour photo (He et
# al.'s colour guided filter) or its luma. Chosen on the validation split with
# benchmarks/tuning/refine_quality.py --sweep (docs/SERVING.md): an RGB guide. The radius follows the
# model, so rerun the sweep when the model changes: a model with staircase edges wants a wide window
# (1/16) that replaces them; a model whose own edges are good, like the shipped one, wants a narrow one
# (1/64), as a wide window snaps its edges to the wrong colour edges (patterned clothes, cluttered
# backgrounds). Figures: docs/SERVING.md, "Edge refinement: guided vs bilinear".
# Work size 320 rather than 512: the same IoU and boundary F on the validation split for a fit about
# four times cheaper, which keeps a served 1-megapixel mask within its latency target
# (docs/BENCHMARKS.md, "Design choices in the code").
WORK_SIZE = 320
RADIUS_FRACTION = 1 / 64
EPS = 1e-3
GUIDE = "rgb"
# Output rows computed at once when the coefficients are applied: small enough to stay in cache.
BAND_ROWS = 32
# Matte levels: a refined probability below LEVELS[0] becomes 0 (background), above LEVELS[1] 255
# (person), linear between. The network is rarely sure of the background: without this step much of
# the background of a portrait kept a small mask value, so a composite showed the old background
# through the new one (a haze) and mask PNGs grew. The levels cut that haze and the error against the
# truth, and leave the 0.5 threshold where it was, so IoU and boundary F are unchanged (figures and
# command: benchmarks/tuning/levels_quality.py, docs/SERVING.md). Edges get twice as steep; feather the
# layer mask in GIMP for a softer one.
LEVELS = (0.25, 0.75)
# Pillow's reducing_gap for the working-size guide (see _pixels).
GUIDE_REDUCING_GAP = 1.0


def _box_1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Mean over a window of 2r+1 along ``dim``, clipped at the borders, from a running sum.

    The cost per pixel does not depend on ``r``: with a 1/16 radius, ``avg_pool2d``'s direct
    window sums made the refinement several times slower than the network itself. Each window sum is
    ``c[min(i + r, n - 1)] - c[i - r - 1]`` (nothing to subtract near the start), written as two
    slice copies and one in-place subtraction: no padded copy of the running sum, which on a
    2-core machine cost as much as the sum itself. float32 is enough at the working size (sums of
    <= 1,000 values in [0, 1]: error ~1e-6 against the filter's eps of 1e-3).
    """
    n = x.shape[dim]
    c = torch.cumsum(x, dim)
    out = torch.empty_like(c)
    inside = max(0, n - r)  # windows whose right end i + r is inside the row
    if inside:
        out.narrow(dim, 0, inside).copy_(c.narrow(dim, r, inside))
    if inside < n:
        tail = out.narrow(dim, inside, n - inside)
        tail.copy_(c.narrow(dim, n - 1, 1).expand_as(tail))
    if n - r - 1 > 0:  # windows whose left end i - r is past the start
        out.narrow(dim, r + 1, n - r - 1).sub_(c.narrow(dim, 0, n - r - 1))
    idx = torch.arange(n, device=x.device)
    count = ((idx + r + 1).clamp_(max=n) - (idx - r).clamp_(min=0)).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = n
    return out.div_(count.view(shape))


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped to the image (NCHW), as two 1-D passes."""
    return _box_1d(_box_1d(x, r, 3), r, 2)


def _pixels(image: Image.Image, guide: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The guide's uint8 pixels (HxW luma or HxWx3 RGB), optionally resized first.

    The working-size guide is box-reduced by the largest whole factor first (``reducing_gap=1``)
    and then resized bilinearly: half the time of a plain bilinear resize, and the coefficients
    fitted on it are smoothed over a 40-pixel window anyway, so the validation figures do not
    move (docs/BENCHMARKS.md, "Design choices in the code").
    """
    img = image.convert("L") if guide == "luma" else image.convert("RGB") if image.mode != "RGB" else image
    if size is not None and size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=GUIDE_REDUCING_GAP)
    return np.asarray(img)


def _view(pixels: np.ndarray) -> torch.Tensor:
    """A tensor sharing the pixels' memory, never written to: Pillow's arrays are read-only and a copy
    of a 24-megapixel photo only to silence torch's warning about that would cost 72 MB."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(pixels))


def _as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> 1xCxHxW float in [0, 1] (a new tensor)."""
    t = _view(pixels).to(torch.float32).div_(255.0)
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize_map(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A probability map (H x W) resized bilinearly to ``size`` (height, width), float32.

    The one plain resampling of the network's map: the bilinear mask, the zoom pass's tiles and the ``keep``
    split all read the map through it, the way the guided filter's own upsampling does.
    """
    return _upsample(prob.float()[None, None], size)[0, 0]


def _coefficients(guide: torch.Tensor, p: torch.Tensor, r: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window linear model ``p ~ a . I + b`` (a: 1xCxhxw, b: 1x1xhxw) for a 1- or 3-channel guide.

    Every window mean the model needs is taken in one batched box filter.
    """
    c = guide.shape[1]
    pairs = [(i, j) for i in range(c) for j in range(i, c)]
    # I, p, I*p and the products I_i*I_j, written straight into one stack (no list of maps to cat)
    stack = guide.new_empty((1, 2 * c + 1 + len(pairs), *guide.shape[2:]))
    stack[:, :c] = guide
    stack[:, c] = p[:, 0]
    torch.mul(guide, p, out=stack[:, c + 1:2 * c + 1])
    for k, (i, j) in enumerate(pairs):
        torch.mul(guide[:, i], guide[:, j], out=stack[:, 2 * c + 1 + k])
    means = _box(stack, r)
    mean_i, mean_p, mean_ip = means[:, :c], means[:, c:c + 1], means[:, c + 1:2 * c + 1]
    cov_ip = mean_ip - mean_i * mean_p
    var = {pair: means[:, 2 * c + 1 + k:2 * c + 2 + k] - mean_i[:, pair[0]:pair[0] + 1] * mean_i[:, pair[1]:pair[1] + 1]
           for k, pair in enumerate(pairs)}
    if c == 1:
        a = cov_ip / (var[0, 0] + eps)
    else:
        # (Sigma + eps I)^-1 cov per pixel by the closed-form symmetric 3x3 inverse (adjugate / det):
        # plain elementwise maps, far faster than a batched torch.linalg.solve
        rr, rg, rb, gg, gb, bb = (var[0, 0] + eps, var[0, 1], var[0, 2], var[1, 1] + eps, var[1, 2],
                                  var[2, 2] + eps)
        i00, i01, i02 = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
        i11, i12, i22 = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
        det = rr * i00 + rg * i01 + rb * i02
        c0, c1, c2 = cov_ip[:, 0:1], cov_ip[:, 1:2], cov_ip[:, 2:3]
        a = torch.cat([i00 * c0 + i01 * c1 + i02 * c2, i01 * c0 + i11 * c1 + i12 * c2,
                       i02 * c0 + i12 * c1 + i22 * c2], 1).div_(det)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    return a, b


def fit(prob: torch.Tensor, image: Image.Image, work_size: int = WORK_SIZE, radius_fraction: float = RADIUS_FRACTION,
        eps: float = EPS, guide: str = GUIDE) -> torch.Tensor:
    """The guided filter's smoothed coefficients ``(a..., b)`` at the working size: (C+1) x h x w."""
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
    width, height = image.size
    scale = min(1.0, work_size / max(width, height))
    ww, wh = max(1, round(width * scale)), max(1, round(height * scale))
    small = _as_tensor(_pixels(image, guide, (ww, wh)))
    p = _upsample(prob.float()[None, None], (wh, ww))
    r = max(1, round(radius_fraction * max(ww, wh)))
    a, b = _coefficients(small, p, r, eps)
    return _box(torch.cat([a, b], 1), r)[0]


def _rows(out_rows: int, in_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows and weights of bilinear resampling (align_corners=False), as F.interpolate computes them."""
    src = ((torch.arange(out_rows, dtype=torch.float64) + 0.5) * (in_rows / out_rows) - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=in_rows - 1)
    i1 = (i0 + 1).clamp_(max=in_rows - 1)
    return i0, i1, (src - i0).to(torch.float32)


def apply(coeffs: torch.Tensor, pixels: np.ndarray, band_rows: int = BAND_ROWS) -> np.ndarray:
    """``a . I + b`` at full resolution, as uint8 (255 = person), one band of rows at a time.

    Equal to upsampling ``coeffs`` bilinearly to the photo's size and applying them, but the
    full-size coefficient maps never exist: the horizontal pass runs once on the few low-res
    rows, and each band of output rows is interpolated, multiplied by the guide and quantised
    while it is still in cache (faster at camera sizes, and no full-size float maps in memory).
    """
    height, width = pixels.shape[:2]
    channels, rows = coeffs.shape[0] - 1, coeffs.shape[1]
    horizontal = _upsample(coeffs[None], (rows, width))[0]  # (C+1) x h x W
    i0, i1, t = _rows(height, rows)
    guide = _view(pixels)
    out = np.empty((height, width), np.uint8)
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        band = torch.lerp(horizontal.index_select(1, i0[y0:y1]), horizontal.index_select(1, i1[y0:y1]),
                          t[y0:y1, None])  # (C+1) x n x W
        g = guide[y0:y1].to(torch.float32)
        g = g[None] if channels == 1 else g.permute(2, 0, 1).contiguous()
        acc = band[channels]
        for c in range(channels):
            acc.addcmul_(band[c], g[c], value=1 / 255)
        out[y0:y1] = to_uint8(acc)
    return out


def _levels_affine(levels: tuple[float, float]) -> tuple[float, float]:
    """``(scale, offset)`` with ``p * scale + offset = (p - lo) / (hi - lo)``: the one definition of the levels."""
    lo, hi = levels
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"levels must satisfy 0 <= lo < hi <= 1, got {levels}")
    return 1.0 / (hi - lo), -lo / (hi - lo)


def with_levels(coeffs: torch.Tensor, levels: tuple[float, float] = LEVELS) -> torch.Tensor:
    """Coefficients ``(a..., b)`` whose output is ``(a . I + b - lo) / (hi - lo)``: the levels step for free.

    ``a . I + b`` is affine, so the levels fold into it and cost nothing per pixel; the clamp to
    [0, 1] happens in ``to_uint8`` anyway.
    """
    scale, offset = _levels_affine(levels)
    out = coeffs * scale
    out[-1] += offset
    return out


def guided_upsample(prob: torch.Tensor, image: Image.Image, work_size: int = WORK_SIZE,
                    radius_fraction: float = RADIUS_FRACTION, eps: float = EPS, guide: str = GUIDE,
                    levels: tuple[float, float] = LEVELS) -> np.ndarray:
    """Fast guided filter: low-res probability (h, w) + full-res photo -> full-res uint8 mask (H, W).

    The linear coefficients are fitted at ``work_size`` and applied to the full-resolution photo,
    with the matte levels folded in.
    """
    coeffs = with_levels(fit(prob, image, work_size, radius_fraction, eps, guide), levels)
    return apply(coeffs, _pixels(image, guide))


def bilinear_upsample(prob: torch.Tensor, image: Image.Image, levels: tuple[float, float] = LEVELS) -> np.ndarray:
    width, height = image.size
    scale, offset = _levels_affine(levels)
    return to_uint8(resize_map(prob, (height, width)).mul_(scale).add_(offset))


def to_uint8(prob: torch.Tensor) -> np.ndarray:
    """[0, 1] probabilities -> uint8, rounded (255 = person)."""
    return prob.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def upsample(prob: torch.Tensor, image: Image.Image, method: str = "guided", work_size: int = WORK_SIZE) -> np.ndarray:
    """Full-resolution soft mask (uint8, 255 = person) for ``image`` from the low-res map ``prob``.

    ``work_size`` is where the guided filter fits its coefficients; a finer map (the zoom pass's) needs a
    larger one, or the small people it found are blurred away again.
    """
    if method == "guided":
        return guided_upsample(prob, image, work_size)
    if method == "bilinear":
        return bilinear_upsample(prob, image)
    raise ValueError(f"unknown refine method {method!r}; expected one of {', '.join(METHODS)}")
