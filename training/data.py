"""Dataset discovery, validation and augmentation.

A dataset root holds ``Images/`` and ``Masks/`` paired by base name (``a.jpg`` <-> ``a.png``).
Problems are collected over the whole root and reported together, naming every file, so a
user fixes their folder in one pass instead of one crash per file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from evaluation.pairs import DatasetError, Pair, find_pairs, read_name_list
from segmenter.imaging import load_image, load_mask
from segmenter.preprocess import MEAN, STD
from training import scenes
from training.losses import IGNORE


def split_pairs(pairs: Sequence[Pair], val_names: set[str] | None = None,
                val_fraction: float = 0.1) -> tuple[list[Pair], list[Pair]]:
    """Train/validation split: by an explicit name list, else a stable hash of each name.

    Hashing (not shuffling) keeps a file on the same side when the dataset grows.
    """
    if val_names is not None:
        val = [p for p in pairs if p.name in val_names]
    else:
        cut = int(val_fraction * 10_000)
        val = [p for p in pairs if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 10_000 < cut]
    val_set = {id(p) for p in val}
    return [p for p in pairs if id(p) not in val_set], val


def geometric_transforms(image_size: int) -> v2.Compose:
    """Scale, place, flip and rotate image and mask together, so they stay pixel-aligned.

    ScaleJitter + padded RandomCrop mimic the letterboxed input seen at inference, with the
    person anywhere from small and far (groups, full body) to cropped by the frame.
    """
    return v2.Compose([
        v2.ScaleJitter((image_size, image_size), scale_range=(0.35, 1.6), antialias=True),
        v2.RandomCrop(image_size, pad_if_needed=True, fill=0),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=12, fill=0)], p=0.4),
    ])


def photometric_transforms() -> v2.Compose:
    """Lighting, colour, focus and sensor noise; masks pass through untouched."""
    return v2.Compose([
        v2.RandomApply([v2.ColorJitter(0.35, 0.35, 0.35, 0.05)], p=0.8),
        v2.RandomGrayscale(p=0.05),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.2),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.2),
        v2.Normalize(MEAN, STD),
    ])


def train_transforms(image_size: int) -> v2.Compose:
    return v2.Compose([geometric_transforms(image_size), photometric_transforms()])


def paste(front: tuple[torch.Tensor, torch.Tensor], back: tuple[torch.Tensor, torch.Tensor]
          ) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Paste the person of ``front`` onto the photo ``back`` (whose own person stays labelled).

    Makes groups, overlaps and people on unfamiliar backgrounds out of single-person pairs. The
    pasted edge is feathered by one pixel so a hard cut-out edge cannot become a shortcut. Pixels the
    back's truth leaves out of the loss (``IGNORE``) stay left out where the pasted person does not cover them.
    """
    (fi, fm), (bi, bm) = front, back
    person = fm == 1
    alpha = v2.functional.gaussian_blur(person.float(), [3, 3], [0.8])
    image = (fi.float() * alpha + bi.float() * (1 - alpha)).round().clamp(0, 255).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(torch.where(person, 1, bm).to(torch.uint8))


Sample = tuple[tv_tensors.Image, tv_tensors.Mask]
# Side of a frame crop as a fraction of the photo's side, drawn for width and height apart: shapes
# from a third as wide as tall to three times as wide, and people cut by any edge.
FRAME_CROP_SIDE = (0.35, 1.0)


def frame_crop(image: tv_tensors.Image, mask: tv_tensors.Mask,
               side: tuple[float, float] = FRAME_CROP_SIDE) -> Sample:
    """A random rectangle of the photo, its own shape: the person cut by the frame, odd aspect ratios.

    The data sets are portraits of one uncut person; a model trained on them alone scored IoU
    0.46 (MediaPipe 0.90) on the left 55% of full-body photos (benchmarks/robustness.py, 60 ccp pairs).
    """
    h, w = image.shape[-2:]
    lo, hi = side
    cw = max(1, round(w * float(torch.empty(()).uniform_(lo, hi))))
    ch = max(1, round(h * float(torch.empty(()).uniform_(lo, hi))))
    x = int(torch.randint(w - cw + 1, ()))
    y = int(torch.randint(h - ch + 1, ()))
    return v2.functional.crop(image, y, x, ch, cw), v2.functional.crop(mask, y, x, ch, cw)


def side_by_side(left: Sample, right: Sample) -> Sample:
    """Two photos in one frame, the right one scaled to the left one's height: a group, a wide photo."""
    (li, lm), (ri, rm) = left, right
    h = li.shape[-2]
    w = max(1, round(ri.shape[-1] * h / ri.shape[-2]))
    ri = v2.functional.resize(ri, [h, w], antialias=True)
    rm = v2.functional.resize(rm, [h, w], interpolation=v2.InterpolationMode.NEAREST)
    return tv_tensors.Image(torch.cat([li, ri], dim=-1)), tv_tensors.Mask(torch.cat([lm, rm], dim=-1))


class SegmentationDataset(Dataset):
    """Pairs -> (normalised CHW float image, 1xHxW float mask) for training.

    With probability ``paste_prob`` a sample gets the person of another random pair pasted
    onto it (see ``paste``). Before scaling, a photo is put side by side with another pair's with
    probability ``side_prob`` and then cut to a random rectangle with probability ``crop_prob``
    (see ``side_by_side`` and ``frame_crop``). With probability ``group_prob`` it becomes a scene of
    several small people instead (``training/scenes.py``): behind its own person with probability
    ``behind_share``, else on a person-free part of its own photo (behind it too when the photo has none);
    with ``decoys`` > 0, each scene also gets 1 to ``decoys`` person-shaped pieces of background labelled
    background (``scenes.decoy``).

    ``ignore``, a folder of masks named as the pairs' (``training/bystanders.py`` writes them), marks
    pixels of a photo's background to leave out of the loss (``training.losses.IGNORE``): people its
    truth does not label.
    """

    def __init__(self, pairs: Sequence[Pair], image_size: int, paste_prob: float = 0.0,
                 crop_prob: float = 0.0, side_prob: float = 0.0, group_prob: float = 0.0,
                 ignore: Path | None = None, decoys: int = 0, behind_share: float = 0.5) -> None:
        self.pairs = list(pairs)
        self.behind_share = behind_share
        self.decoys = decoys
        self.ignore = ignore
        self.group_prob = group_prob
        self.crop_prob = crop_prob
        self.side_prob = side_prob
        self.geometric = geometric_transforms(image_size)
        # A pasted person needs a photo under it, not the black letterbox border.
        self.fill = v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.25, 1.0), antialias=True),
                                v2.RandomHorizontalFlip()])
        self.photometric = photometric_transforms()
        self.paste_prob = paste_prob

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        pair = self.pairs[index]
        image = load_image(pair.image)
        truth = load_mask(pair.mask)
        mask = torch.from_numpy(truth).to(torch.uint8)[None]
        if self.ignore is not None and (self.ignore / f"{pair.name}.png").is_file():
            left_out = load_mask(self.ignore / f"{pair.name}.png")
            if left_out.shape != truth.shape:
                raise DatasetError(f"{self.ignore / f'{pair.name}.png'}: {left_out.shape[1]}x{left_out.shape[0]}, "
                                   f"but its mask {pair.mask} is {truth.shape[1]}x{truth.shape[0]}")
            mask[0][torch.from_numpy(left_out & ~truth)] = IGNORE
        img = tv_tensors.Image(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1))
        return img, tv_tensors.Mask(mask)

    def _other(self, index: int) -> int:
        """A random index other than ``index`` (needs at least two pairs)."""
        other = int(torch.randint(len(self.pairs) - 1, ()))
        return other + (other >= index)

    def _other_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Another pair's photo (HxWx3 uint8) and mask (HxW, ``IGNORE`` kept), as the scenes take them."""
        img, m = self.load(self._other(index))
        return img.permute(1, 2, 0).numpy(), m[0].numpy()

    def layout(self, sample: Sample, index: int) -> Sample:
        """The photo's frame before scaling: maybe beside another pair's photo, maybe cropped."""
        if self.side_prob and len(self.pairs) > 1 and torch.rand(()) < self.side_prob:
            sample = side_by_side(sample, self.load(self._other(index)))
        if self.crop_prob and torch.rand(()) < self.crop_prob:
            sample = frame_crop(*sample)
        return sample

    def group(self, sample: Sample, index: int) -> Sample:
        """A scene of several small people built around this sample (see ``training/scenes.py``)."""
        rng = np.random.default_rng(int(torch.randint(2**62, ())))
        n = int(rng.integers(scenes.PEOPLE[0], scenes.PEOPLE[1] + 1))
        people = []
        for _ in range(n):
            image, truth = self._other_arrays(index)
            cut = scenes.cut_out(image, truth == 1)
            if cut is not None:
                people.append(cut)
        decoys = self._decoys(index, rng)
        image, truth = sample[0].permute(1, 2, 0).numpy(), sample[1][0].numpy()
        # A background is cut where nobody stands, left-out people included.
        behind = rng.random() >= 1.0 - self.behind_share  # drawn as before the option, so old runs replay
        background = None if behind else scenes.background_crop(image, truth > 0, rng)
        if background is not None:
            image, mask = scenes.group_scene(background, people, rng, decoys)
            out = mask.astype(np.uint8)
        else:
            image, mask = scenes.people_behind((image, truth == 1), people, rng, decoys)
            out = np.where(~mask & (truth == IGNORE), IGNORE, mask).astype(np.uint8)
        return (tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
                tv_tensors.Mask(torch.from_numpy(out)[None]))

    def _decoys(self, index: int, rng: np.random.Generator) -> list[scenes.Scene]:
        """1 to ``decoys`` outlines of other pairs' people, each filled with a piece of that photo's background."""
        if not self.decoys:
            return []
        found = []
        for _ in range(int(rng.integers(1, self.decoys + 1))):
            image, truth = self._other_arrays(index)
            cut = scenes.cut_out(image, truth == 1)
            filling = scenes.background_crop(image, truth > 0, rng, side=scenes.DECOY_SIDE)
            if cut is not None and filling is not None:
                found.append(scenes.decoy(cut[1], filling))
        return found

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.load(index)
        if self.group_prob and len(self.pairs) > 1 and torch.rand(()) < self.group_prob:
            img, mask = self.geometric(*self.group(sample, index))
        elif self.paste_prob and len(self.pairs) > 1 and torch.rand(()) < self.paste_prob:
            other = self._other(index)
            img, mask = paste(self.geometric(*self.layout(self.load(other), other)), self.fill(*sample))
        else:
            img, mask = self.geometric(*self.layout(sample, index))
        img, mask = self.photometric(img, mask)
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).float()


def load_validation(pairs: Sequence[Pair]) -> list[tuple[Pair, Image.Image, torch.Tensor]]:
    """Validation photos and masks at full resolution, decoded once and kept in memory."""
    out = []
    for p in pairs:
        out.append((p, load_image(p.image), torch.from_numpy(load_mask(p.mask))))
    return out


__all__ = ["DatasetError", "Pair", "SegmentationDataset", "find_pairs", "split_pairs", "read_name_list",
           "train_transforms", "load_validation"]
