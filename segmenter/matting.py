"""The edge stage: a soft matte around the person's outline and the person's own colours there.

At an edge pixel the photo's colour is a mix, ``photo = alpha * person + (1 - alpha) * old background``.
Blending that mixed colour over a new background as it is leaves a fringe of the old one around hair and
outlines. So, after ``refine`` has brought the mask to full resolution:

1. **Trimap from the mask**: pixels farther than ``band`` from every pixel the mask is unsure of are sure
   (person or background); the band in between is unknown. Its margin scales with the photo's diagonal.
2. **Closed-form matting** (Levin, Lischinski & Weiss 2008) in the band only: the matting Laplacian is built
   for the windows that touch an unknown pixel and the linear system is solved for the unknown pixels alone,
   so the cost follows the outline's length, not the photo's area (pymatting's ``cf_laplacian`` allocates
   25 float64 values and 25 int64 indices per pixel of the whole image, whatever the band's size).
3. **Foreground and old-background colours**: smooth estimates at a reduced resolution, then corrected at
   full resolution so that ``alpha * F + (1 - alpha) * B`` equals the photo exactly (the residual is split
   between F and B by least squares, so F takes it where alpha is high and B where it is low).

Photos above ``WORK_PIXELS`` are matted at a working resolution and the matte is brought back with a guided
filter on the full-resolution photo (as ``refine`` does for the mask), so the full-size work is a few
passes over the band's soft part. Measured against a plain blend and against rembg's alpha matting in
benchmarks/tuning/matting_quality.py (docs/BENCHMARKS.md, docs/research/edge-stage.md).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segmenter import refine

# The matte is solved on at most this many pixels (larger photos: a reduced copy, brought back by a guided
# filter on the full-size photo). Smaller copies converge in fewer steps and scored as well down to 25,000
# pixels, on the validation photos and on them enlarged 3x (docs/research/edge-stage.md).
WORK_PIXELS = 50_000
# The unknown band: pixels within this fraction of the working copy's diagonal (at least MIN_BAND pixels) of
# any pixel the mask is not sure of. Sure person is a mask value above SURE_PERSON, sure background below
# SURE_BACKGROUND, as in rembg's alpha-matting trimap, so the band covers the mask's own soft edge and more.
BAND_FRACTION = 0.0075
MIN_BAND = 2
SURE_PERSON = 240
SURE_BACKGROUND = 10
# Closed-form matting's regulariser (per window covariance + EPS / 9): smaller follows finer colour lines.
EPS = 1e-6
# Weight of the model's own mask as a prior in the band: keeps isolated band pieces (no sure pixel of one
# kind nearby) from drifting. Weak: the band is wide enough for the photo's colours to decide.
PRIOR_WEIGHT = 1e-5
# Conjugate-gradient steps on the working copy: fewer left visibly more of the old background.
CG_TOLERANCE = 1e-5
CG_MAX_ITER = 150
# Window radius of the blur-fusion colour estimate, as a fraction of the working copy's diagonal.
COLOUR_RADIUS_FRACTION = 0.03
# Bringing a working-size matte to full size: guided filter window radius (working pixels) and regulariser.
UPSAMPLE_RADIUS = 2
UPSAMPLE_EPS = 1e-5
# A brought-back matte within this of 0 or 1 is made 0 or 1.
SETTLE = 0.02


@dataclass
class Matte:
    """The edge stage's result: ``alpha`` (HxW uint8) and ``foreground`` (the photo with its band pixels
    replaced by the estimated person colours), ready for ``imaging.composite`` / ``imaging.cutout``."""

    alpha: np.ndarray
    foreground: Image.Image


def band_radius(width: int, height: int) -> int:
    """Half-width of the unknown band in pixels for a photo of this size."""
    return max(MIN_BAND, round(BAND_FRACTION * float(np.hypot(width, height))))


def _max_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Square max filter of radius ``r`` as two 1-D passes (cost independent of the area of the square)."""
    x = F.max_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r))
    return F.max_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0))


def trimap(mask: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """``(person, unknown)`` boolean maps: sure person lies farther than ``radius`` (square distance) from
    every pixel the mask is not sure is person (``<= SURE_PERSON``), sure background as far from every pixel
    that may be person (``>= SURE_BACKGROUND``); the band between them is unknown. On a hard mask this is
    ``radius`` pixels each side of the outline."""
    values = torch.from_numpy(np.array(mask, np.uint8, copy=True))[None, None]
    near_unsure = _max_filter((values <= SURE_PERSON).float(), radius)[0, 0].numpy() > 0
    near_maybe_person = _max_filter((values >= SURE_BACKGROUND).float(), radius)[0, 0].numpy() > 0
    return ~near_unsure, near_unsure & near_maybe_person


# The 25 offsets (dy, dx) in -2..2 by which two pixels of one 3x3 window can differ: the Laplacian's stencil.
_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]


def _windows(unknown: np.ndarray) -> np.ndarray:
    """Flat indices (K x 9) of the 3x3 windows that touch an unknown pixel (centres off the border).

    One byte per pixel of the photo and the unknown pixels' neighbours, no float map: the full-resolution
    pass calls it on 12-megapixel photos."""
    h, w = unknown.shape
    flat = np.flatnonzero(unknown)
    touch = np.zeros(h * w, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            touch[np.clip(flat + (dy * w + dx), 0, h * w - 1)] = True
    touch = touch.reshape(h, w)
    touch[[0, -1], :] = False
    touch[:, [0, -1]] = False
    centres = np.flatnonzero(touch)
    dy, dx = np.mgrid[-1:2, -1:2]
    return centres[:, None] + (dy * w + dx).ravel()


def _window_values(image: np.ndarray, idx: np.ndarray, eps: float) -> np.ndarray:
    """The matting Laplacian's contribution of each window (K x 81): ``delta_ij - (1 + (I_i - mu)^T
    (Sigma + eps/9)^-1 (I_j - mu)) / 9`` (Levin et al. 2008, eq. 12). The 3x3 inverses by the adjugate,
    as in ``refine._coefficients``: plain elementwise arrays, no per-window LAPACK call. ``image`` is float in
    [0, 1] or uint8 (the full-size photo itself, never copied whole to float)."""
    colours = image.reshape(-1, 3)[idx].astype(np.float64)  # K x 9 x 3
    if image.dtype == np.uint8:
        colours /= 255
    d = colours - colours.mean(1, keepdims=True)
    c = np.einsum("kni,knj->kij", d, d) / 9 + (eps / 9) * np.eye(3, dtype=d.dtype)
    adj = np.empty_like(c)
    adj[:, 0, 0] = c[:, 1, 1] * c[:, 2, 2] - c[:, 1, 2] ** 2
    adj[:, 0, 1] = adj[:, 1, 0] = c[:, 1, 2] * c[:, 0, 2] - c[:, 0, 1] * c[:, 2, 2]
    adj[:, 0, 2] = adj[:, 2, 0] = c[:, 0, 1] * c[:, 1, 2] - c[:, 1, 1] * c[:, 0, 2]
    adj[:, 1, 1] = c[:, 0, 0] * c[:, 2, 2] - c[:, 0, 2] ** 2
    adj[:, 1, 2] = adj[:, 2, 1] = c[:, 0, 2] * c[:, 0, 1] - c[:, 0, 0] * c[:, 1, 2]
    adj[:, 2, 2] = c[:, 0, 0] * c[:, 1, 1] - c[:, 0, 1] ** 2
    det = np.einsum("ki,ki->k", c[:, 0], adj[:, 0])
    inner = np.matmul(np.matmul(d, adj / det[:, None, None]), d.transpose(0, 2, 1))  # K x 9 x 9
    return (np.eye(9, dtype=d.dtype) - (1 + inner) / 9).reshape(len(idx), 81)


def _stencil(values: np.ndarray, idx: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """Sum the windows' entries into one row of 25 coefficients per unknown pixel (n x 25).

    Row ``i``, column ``o`` is ``L[i, i + offset_o]``: one ``bincount`` over the 81 pairs of each
    window rather than a sparse matrix, whose assembly (coordinate sort) cost more than the solve.
    """
    a, b = np.divmod(np.arange(81), 9)
    off = (b // 3 - a // 3 + 2) * 5 + (b % 3 - a % 3 + 2)
    rows = np.repeat(pos[idx], 9, axis=1)  # K x 81: the row pixel of each pair
    keep = rows >= 0
    keys = (rows * 25 + off)[keep]
    return np.bincount(keys, weights=values[keep], minlength=n * 25).reshape(n, 25).astype(np.float32)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """A dot product without BLAS (``einsum`` loops in numpy itself): no threads to wait for."""
    return float(np.einsum("i,i->", a, b))


def _cg(apply_a: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray, x: np.ndarray, diag: np.ndarray,
        tolerance: float, max_iter: int) -> np.ndarray:
    """Jacobi-preconditioned conjugate gradients, single-threaded on purpose: scipy's ``cg`` calls BLAS
    for each dot product, and BLAS threads spun against the model's on a busy 2-core machine (ten times
    slower for the same solve); torch's 2-thread small ops did the same."""
    r = rhs - apply_a(x)
    z = r / diag
    p = z.copy()
    rz = _dot(r, z)
    stop = tolerance * np.sqrt(_dot(rhs, rhs))
    for _ in range(max_iter):
        ap = apply_a(p)
        step = rz / _dot(p, ap)
        x += step * p
        r -= step * ap
        if np.sqrt(_dot(r, r)) <= stop:
            break
        z = r / diag
        rz_next = _dot(r, z)
        p = z + (rz_next / rz) * p
        rz = rz_next
    return x


def solve_alpha(image: np.ndarray, known: np.ndarray, unknown: np.ndarray, prior: np.ndarray,
                eps: float | None = None, prior_weight: float | None = None,
                max_iter: int | None = None) -> np.ndarray:
    """Closed-form alpha (float32 HxW in [0, 1]) with only the band's windows and unknowns in the system.

    ``image`` is HxWx3 float in [0, 1] or uint8; ``known`` holds the alpha of the pixels outside the band
    (boolean sure person, or a float map); ``prior`` is the first guess in the band (the model's mask, or
    the working copy's matte brought to full size), used as a weak prior and as conjugate gradients'
    starting point, so a few steps refine it rather than solve from nothing.
    """
    eps = EPS if eps is None else eps
    prior_weight = PRIOR_WEIGHT if prior_weight is None else prior_weight
    max_iter = CG_MAX_ITER if max_iter is None else max_iter
    h, w = unknown.shape
    alpha = known.astype(np.float32)
    flat_unknown = np.flatnonzero(unknown)
    n = flat_unknown.size
    if n == 0:
        return alpha
    idx = _windows(unknown)
    pos = np.full(h * w, -1, np.int32)
    pos[flat_unknown] = np.arange(n)
    stencil = _stencil(_window_values(image, idx, eps), idx, pos, n)
    # n x 25; an offset that leaves the photo has a zero coefficient (no window holds both pixels), so
    # clipping its index only keeps the gather inside the array
    neighbours = np.clip(flat_unknown[:, None] + np.array([dy * w + dx for dy, dx in _OFFSETS]), 0, h * w - 1)
    compact = pos[neighbours]
    compact[compact < 0] = n  # known neighbours read the zero slot
    start = prior.ravel()[flat_unknown].astype(np.float32)
    rhs = prior_weight * start - (stencil * np.where(unknown, 0, alpha).ravel()[neighbours]).sum(1)
    del neighbours
    # the stencil as a sparse row matrix over the unknowns plus one zero slot for the known neighbours:
    # torch's CSR product with 32-bit indices is ten times faster than gathering the 25 neighbours with numpy
    with warnings.catch_warnings():  # "CSR support is in beta": the product used here is stable since torch 2.0
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(torch.arange(0, 25 * n + 1, 25, dtype=torch.int32),
                                         torch.from_numpy(compact.ravel().astype(np.int32)),
                                         torch.from_numpy(stencil.ravel()), size=(n, n + 1), check_invariants=False)
    padded = torch.zeros(n + 1)

    def apply_a(v: np.ndarray) -> np.ndarray:
        """``(L_U + prior_weight I) v``: unknown neighbours from ``v``, known ones read the zero slot."""
        padded[:n] = torch.from_numpy(v)
        return torch.mv(matrix, padded).numpy() + prior_weight * v

    x = _cg(apply_a, rhs.astype(np.float32), start, stencil[:, 12] + prior_weight, CG_TOLERANCE, max_iter)
    alpha.ravel()[flat_unknown] = np.clip(x, 0, 1)
    return alpha


def estimate_colours(image: np.ndarray, alpha: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth person and old-background colours (HxWx3 float32) by blur fusion (Forte & Pitie 2020).

    Each is a local alpha-weighted mean of the photo, corrected once so that the compositing equation
    holds, then averaged again with a small window: what the full-resolution correction starts from.
    """
    img = torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1)[None]
    a = torch.from_numpy(np.ascontiguousarray(alpha, np.float32))[None, None]
    fg, bg = img, img
    for r in (radius, max(1, radius // 12)):
        mean_a = refine._box(a, r)
        mean_f = refine._box(fg * a, r) / (mean_a + 1e-5)
        mean_b = refine._box(bg * (1 - a), r) / ((1 - mean_a) + 1e-5)
        fg = (mean_f + a * (img - a * mean_f - (1 - a) * mean_b)).clamp_(0, 1)
        bg = mean_b
    return fg[0].permute(1, 2, 0).numpy(), bg[0].permute(1, 2, 0).numpy()


def _sample(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear samples (align_corners=False) of an h x w x C float32 ``grid`` at full-size pixel coordinates.

    Every map the band needs (matte coefficients, person and background colours) is stacked into one grid
    and sampled in one pass: the corner indices and weights are the expensive part at 12 megapixels.
    """
    h, w = grid.shape[:2]
    sy = np.clip((ys.astype(np.float32) + 0.5) * scale - 0.5, 0, h - 1)
    sx = np.clip((xs.astype(np.float32) + 0.5) * scale - 0.5, 0, w - 1)
    y0, x0 = sy.astype(np.int32), sx.astype(np.int32)  # floor: both are >= 0
    ty, tx = (sy - y0)[:, None], (sx - x0)[:, None]
    i00 = y0 * w + x0
    i01 = i00 + (x0 < w - 1)
    below = (y0 < h - 1) * w
    flat = grid.reshape(h * w, -1)
    top = flat[i00] + (flat[i01] - flat[i00]) * tx
    bottom = flat[i00 + below] + (flat[i01 + below] - flat[i00 + below]) * tx
    return top + (bottom - top) * ty


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bilinear with Pillow's box pre-reduction: a 12-MP photo to the working size in a few ms, without aliasing."""
    return image if image.size == size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _scaled(width: int, height: int, pixels: int) -> tuple[int, int]:
    """The size with at most ``pixels`` pixels and the photo's aspect; the photo's own size when it is smaller."""
    scale = min(1.0, float(np.sqrt(pixels / (width * height))))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _coefficients(alpha: np.ndarray, small: np.ndarray) -> np.ndarray:
    """Guided-filter coefficients (h x w x 4: a_r, a_g, a_b, b) of ``alpha ~ a . photo + b`` at the working size.

    Applied to the full-size photo's own colours at the band pixels, they keep detail finer than the working
    copy's (strands of hair) that interpolating the matte would blur. A small window (``UPSAMPLE_RADIUS``)
    and the colour guide: a luma guide could not tell a green wall from skin of the same brightness, and
    lost most of the stage's gain (docs/BENCHMARKS.md, "Design choices in the code").
    """
    g = torch.from_numpy(np.ascontiguousarray(small, np.float32)).permute(2, 0, 1)[None]
    a, b = refine._coefficients(g, torch.from_numpy(alpha)[None, None], UPSAMPLE_RADIUS, UPSAMPLE_EPS)
    return refine._box(torch.cat([a, b], 1), UPSAMPLE_RADIUS)[0].permute(1, 2, 0).numpy()


def _band(unknown: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Full-size coordinates of the working-size band's pixels."""
    if unknown.shape[::-1] != size:
        unknown = np.asarray(Image.fromarray(unknown).resize(size, Image.Resampling.NEAREST))
    return np.nonzero(unknown)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the stage's torch calls on one thread, then give the worker its threads back.

    They work on working-size maps (at most WORK_PIXELS), too small to gain from a second thread; with the
    second core busy (another worker, a training run) every one of them waited on it, several times the
    stage's own time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def matte(image: Image.Image, mask: np.ndarray) -> Matte:
    """The edge stage for a photo and its full-resolution mask (uint8, 255 = person)."""
    with _one_torch_thread():
        return _matte(image, mask)


def _changed(unknown: np.ndarray, alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The band's working pixels whose matte the full-size photo needs, and their neighbours (the
    bilinear footprint): those the solve left unsure or moved off the mask's own sure value. The rest of
    the band keeps the mask, so the full-size work follows the soft part of the outline, not the band."""
    sure = (alpha <= SETTLE) | (alpha >= 1 - SETTLE)
    kept = sure & ((alpha >= 0.5) == (mask >= 128)) & ((mask == 0) | (mask == 255))
    grown = _max_filter(torch.from_numpy(unknown & ~kept).float()[None, None], 1)[0, 0].numpy() > 0
    return grown & unknown


def _settle(a: np.ndarray) -> np.ndarray:
    """The band's brought-back matte with its near-sure values made sure: the guided filter leaves a faint
    haze (a few percent of the old background) across the band that rounding clears."""
    return np.where(a <= SETTLE, 0, np.where(a >= 1 - SETTLE, 1, a)).astype(np.float32)


def _matte(image: Image.Image, mask: np.ndarray) -> Matte:
    """``matte``'s work: the matte and colours at the working size, then only the band's pixels at full size."""
    width, height = image.size
    work = _scaled(width, height, WORK_PIXELS)
    small_img = _resize(image, work)
    small_mask = mask if work == image.size else np.asarray(_resize(Image.fromarray(mask), work))
    pixels = np.asarray(small_img, np.float32) / 255
    person, unknown = trimap(small_mask, band_radius(*work))
    alpha = solve_alpha(pixels, person, unknown, small_mask.astype(np.float32) / 255)
    fg, bg = estimate_colours(pixels, alpha, max(1, round(COLOUR_RADIUS_FRACTION * float(np.hypot(*work)))))

    ys, xs = _band(_changed(unknown, alpha, small_mask), image.size)
    photo = np.array(image)
    observed = photo[ys, xs].astype(np.float32) / 255
    scale = work[0] / width
    if work == image.size:
        a = alpha[ys, xs]
    else:
        coefficients = _sample(_coefficients(alpha, pixels), ys, xs, scale)
        a = _settle(np.clip((coefficients[:, :3] * observed).sum(1) + coefficients[:, 3], 0, 1))
    full_alpha = mask.copy()
    full_alpha[ys, xs] = (a * 255 + 0.5).astype(np.uint8)
    # only the soft pixels need the person's own colour: where alpha is 1 it is the photo's, where 0 unseen
    soft = (a > 0) & (a < 1)
    ys, xs, a, observed = ys[soft], xs[soft], a[soft, None], observed[soft]
    colours = np.concatenate([fg, bg], 2)
    maps = colours[ys, xs] if work == image.size else _sample(colours, ys, xs, scale)
    f, b = maps[:, :3], maps[:, 3:]
    # the residual of the compositing equation, split by least squares: F takes it where alpha is high
    residual = observed - a * f - (1 - a) * b
    f += residual * (a / (a * a + (1 - a) * (1 - a)))
    photo[ys, xs] = np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
    return Matte(full_alpha, Image.fromarray(photo))
