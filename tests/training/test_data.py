"""Dataset pairing, validation errors and aligned augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segmenter.preprocess import MEAN, STD
from training.data import (
    FRAME_CROP_SIDE,
    DatasetError,
    SegmentationDataset,
    find_pairs,
    frame_crop,
    paste,
    side_by_side,
    split_pairs,
    train_transforms,
)
from training.losses import IGNORE


def test_pairs_by_base_name(tiny_dataset: Path) -> None:
    pairs = find_pairs([tiny_dataset])
    assert len(pairs) == 12
    assert all(p.image.stem == p.mask.stem for p in pairs)


def test_all_problems_listed_in_one_error(tiny_dataset: Path) -> None:
    (tiny_dataset / "Images" / "orphan.jpg").write_bytes((tiny_dataset / "Images" / "s000.jpg").read_bytes())
    (tiny_dataset / "Masks" / "lonely.png").write_bytes((tiny_dataset / "Masks" / "s000.png").read_bytes())
    Image.new("L", (10, 10), 255).save(tiny_dataset / "Masks" / "s001.png")  # size mismatch
    Image.fromarray(np.arange(72 * 56, dtype=np.uint8).reshape(56, 72)).save(tiny_dataset / "Masks" / "s002.png")
    (tiny_dataset / "Images" / "s003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError) as info:
        find_pairs([tiny_dataset])
    msg = str(info.value)
    for fragment in ("orphan.jpg: no mask", "lonely.png: no image", "s001.jpg: image is 72x56 but its mask",
                     "s002.png: mask is not binary", "s003.jpg: unreadable image", "--skip-bad"):
        assert fragment in msg, fragment


def test_skip_bad_keeps_good_pairs(tiny_dataset: Path, capsys) -> None:
    Image.new("L", (10, 10), 255).save(tiny_dataset / "Masks" / "s001.png")
    pairs = find_pairs([tiny_dataset], skip_bad=True)
    assert len(pairs) == 11
    assert "s001" in capsys.readouterr().err


def test_missing_folders_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Images/ and Masks/"):
        find_pairs([tmp_path])


def test_split_is_stable_and_disjoint(tiny_dataset: Path) -> None:
    pairs = find_pairs([tiny_dataset])
    train, val = split_pairs(pairs, val_fraction=0.3)
    train2, val2 = split_pairs(pairs, val_fraction=0.3)
    assert [p.name for p in val] == [p.name for p in val2]
    assert not {p.name for p in train} & {p.name for p in val}
    _, named = split_pairs(pairs, {"s004", "s007"})
    assert sorted(p.name for p in named) == ["s004", "s007"]


@pytest.mark.parametrize("seed", range(8))
def test_augmentation_keeps_image_and_mask_aligned(seed: int) -> None:
    """The image is the mask painted white on black: after augmentation both must still agree."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((90, 120), np.uint8)
    mask[20:70, int(rng.integers(10, 60)):100] = 1
    image = tv_tensors.Image(torch.from_numpy(np.repeat(mask[None] * 255, 3, 0)))
    torch.manual_seed(seed)
    out_img, out_mask = train_transforms(64)(image, tv_tensors.Mask(torch.from_numpy(mask)[None]))
    assert out_img.shape == (3, 64, 64) and out_mask.shape == (1, 64, 64)
    pixels = out_img * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    grey = pixels.mean(0)
    on, off = grey[out_mask[0] > 0], grey[out_mask[0] == 0]
    if len(on) and len(off):
        # person pixels are brighter than background pixels except on the blurred rim
        assert on.median() > off.median() + 0.2
        agree = ((grey > (on.median() + off.median()) / 2) == (out_mask[0] > 0)).float().mean()
        assert agree > 0.9


def test_dataset_item_shapes(tiny_dataset: Path) -> None:
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64)
    img, mask = ds[0]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_paste_keeps_both_people_labelled() -> None:
    front_mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    front_mask[:, 4:12, 4:12] = 1
    back_mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    back_mask[:, 20:30, 20:30] = 1
    front = (tv_tensors.Image(torch.full((3, 32, 32), 250, dtype=torch.uint8)), tv_tensors.Mask(front_mask))
    back = (tv_tensors.Image(torch.full((3, 32, 32), 10, dtype=torch.uint8)), tv_tensors.Mask(back_mask))
    image, mask = paste(front, back)
    assert mask.sum() == 64 + 100
    assert image[0, 8, 8] == 250 and image[0, 25, 25] == 10 and image[0, 0, 0] == 10
    assert 10 < image[0, 4, 8] < 250  # feathered edge


def test_dataset_with_paste(tiny_dataset: Path) -> None:
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, paste_prob=1.0)
    torch.manual_seed(0)
    img, mask = ds[3]
    assert img.shape == (3, 64, 64) and mask.shape == (1, 64, 64)


def _painted(h: int, w: int, seed: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """A photo that is its own mask painted white on black, with a random blob of person."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    mask[y0:y0 + h // 2, x0:x0 + w // 3] = 1
    return (tv_tensors.Image(torch.from_numpy(np.repeat(mask[None] * 255, 3, 0))),
            tv_tensors.Mask(torch.from_numpy(mask)[None]))


@pytest.mark.parametrize("seed", range(6))
def test_frame_crop_is_an_aligned_rectangle_of_the_photo(seed: int) -> None:
    image, mask = _painted(90, 120, seed)
    torch.manual_seed(seed)
    ci, cm = frame_crop(image, mask)
    h, w = ci.shape[-2:]
    assert cm.shape[-2:] == (h, w) and isinstance(ci, tv_tensors.Image) and isinstance(cm, tv_tensors.Mask)
    lo, hi = FRAME_CROP_SIDE
    assert round(90 * lo) - 1 <= h <= 90 and round(120 * lo) - 1 <= w <= 120
    assert torch.equal(ci[0] > 0, cm[0] > 0)  # still the mask painted: pixel-aligned
    # it is a window of the original: find it
    found = any(torch.equal(mask[0, y:y + h, x:x + w], cm[0]) for y in range(91 - h) for x in range(121 - w))
    assert found


def test_frame_crop_shapes_cover_tall_and_wide() -> None:
    image, mask = _painted(100, 100, 0)
    torch.manual_seed(0)
    ratios = [float(frame_crop(image, mask)[0].shape[-1]) / frame_crop(image, mask)[0].shape[-2] for _ in range(200)]
    assert min(ratios) < 0.6 and max(ratios) > 1.7


def test_side_by_side_scales_the_right_photo_to_the_left_height() -> None:
    left, right = _painted(60, 40, 1), _painted(30, 50, 2)
    image, mask = side_by_side(left, right)
    assert image.shape == (3, 60, 140) and mask.shape == (1, 60, 140)
    assert torch.equal(image[:, :, :40], left[0]) and torch.equal(mask[:, :, :40], left[1])
    assert mask[0, :, 40:].sum() > 0 and set(mask.unique().tolist()) <= {0, 1}
    agree = ((image[0, :, 40:] > 127) == (mask[0, :, 40:] > 0)).float().mean()
    assert agree > 0.97


def test_dataset_with_crop_and_side_by_side(tiny_dataset: Path) -> None:
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, crop_prob=1.0, side_prob=1.0)
    for i in range(len(ds)):
        torch.manual_seed(i)
        img, mask = ds[i]
        assert img.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("seed", range(6))
def test_group_scene_keeps_every_person_labelled(tiny_dataset: Path, seed: int) -> None:
    """A group scene before scaling: its own person kept or a person-free background, pasted people labelled."""
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, group_prob=1.0)
    torch.manual_seed(seed)
    own = ds.load(5)
    image, mask = ds.group(own, 5)
    assert image.shape[1:] == mask.shape[1:] and mask.dtype == torch.uint8
    assert mask.sum() > 0
    # The tiny set's people are bright ellipses on a dark background: bright pixels are the labelled ones.
    bright = image.float().mean(0) > 120
    agree = (bright == (mask[0] > 0)).float().mean()
    assert agree > 0.95


def test_dataset_with_groups(tiny_dataset: Path) -> None:
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, group_prob=1.0)
    torch.manual_seed(0)
    img, mask = ds[2]
    assert img.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def _ignore_folder(root: Path, names: list[str]) -> Path:
    """Left-out masks for ``names``: the top-left quarter of each photo (outside its person is marked)."""
    folder = root / "ignore"
    folder.mkdir()
    for name in names:
        size = Image.open(root / "data" / "Masks" / f"{name}.png").size
        marked = np.zeros(size[::-1], np.uint8)
        marked[: size[1] // 2, : size[0] // 2] = 255
        Image.fromarray(marked).save(folder / f"{name}.png")
    return folder


def test_ignore_masks_mark_background_only(tiny_dataset: Path) -> None:
    """A left-out mask marks background pixels IGNORE; the labelled person stays 1; photos without one are as
    they were."""
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, ignore=_ignore_folder(tiny_dataset.parent, ["s001"]))
    plain = SegmentationDataset(find_pairs([tiny_dataset]), 64)
    _, mask = ds.load(1)
    _, truth = plain.load(1)
    h, w = mask.shape[1:]
    quarter = torch.zeros_like(truth, dtype=torch.bool)
    quarter[:, : h // 2, : w // 2] = True
    assert torch.all(mask[quarter & (truth == 0)] == IGNORE)
    assert torch.equal(mask[~quarter | (truth == 1)], truth[~quarter | (truth == 1)])
    assert torch.equal(ds.load(2)[1], plain.load(2)[1])


def test_ignore_mask_of_another_size_is_named(tiny_dataset: Path) -> None:
    folder = tiny_dataset.parent / "ignore"
    folder.mkdir()
    Image.new("L", (10, 10), 255).save(folder / "s003.png")
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, ignore=folder)
    with pytest.raises(DatasetError, match="s003.png: 10x10"):
        ds.load(3)


def test_paste_keeps_left_out_pixels_the_person_does_not_cover() -> None:
    front_mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    front_mask[:, 4:12, 4:12] = 1
    front_mask[:, 20:24, 0:4] = IGNORE  # the front photo's own passer-by is not pasted
    back_mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    back_mask[:, 0:16, 0:16] = IGNORE
    front = (tv_tensors.Image(torch.full((3, 32, 32), 250, dtype=torch.uint8)), tv_tensors.Mask(front_mask))
    back = (tv_tensors.Image(torch.full((3, 32, 32), 10, dtype=torch.uint8)), tv_tensors.Mask(back_mask))
    image, mask = paste(front, back)
    assert torch.all(mask[0, 4:12, 4:12] == 1)
    assert (mask[0] == IGNORE).sum() == 16 * 16 - 64
    assert mask[0, 21, 1] == 0 and image[0, 21, 1] == 10


@pytest.mark.parametrize("seed", range(4))
def test_group_scene_keeps_left_out_pixels_behind_its_person(tiny_dataset: Path, seed: int) -> None:
    """Behind the photo's own person, left-out pixels stay left out where no pasted person covers them (and are
    person where one does); a scene on a cut background has every person labelled, so nothing is left out."""
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, group_prob=1.0,
                             ignore=_ignore_folder(tiny_dataset.parent, ["s005"]))
    torch.manual_seed(seed)
    own = ds.load(5)
    image, mask = ds.group(own, 5)
    assert set(mask.unique().tolist()) <= {0, 1, IGNORE}
    if image.shape == own[0].shape and torch.equal(mask[own[1] == 1], torch.ones_like(mask[own[1] == 1])):
        behind = own[1] == IGNORE
        assert torch.all((mask[behind] == IGNORE) | (mask[behind] == 1))
        assert (mask[behind] == IGNORE).sum() > behind.sum() // 2
    else:
        assert not torch.any(mask == IGNORE)


@pytest.mark.parametrize("seed", range(4))
def test_behind_share_chooses_where_the_small_people_stand(tiny_dataset: Path, seed: int) -> None:
    """``behind_share=1``: every scene keeps the sample's own photo and person, people pasted behind it;
    ``0``: scenes stand on a person-free crop, so the sample's person is not in them."""
    pairs = find_pairs([tiny_dataset])
    own = SegmentationDataset(pairs, 64).load(5)
    torch.manual_seed(seed)
    image, mask = SegmentationDataset(pairs, 64, group_prob=1.0, behind_share=1.0).group(own, 5)
    assert image.shape == own[0].shape
    assert bool((mask[0] > 0)[own[1][0] > 0].all()), "the sample's own person stays labelled in front"
    torch.manual_seed(seed)
    image, mask = SegmentationDataset(pairs, 64, group_prob=1.0, behind_share=0.0).group(own, 5)
    own_photo_kept = image.shape == own[0].shape and torch.equal(image[:, own[1][0] > 0], own[0][:, own[1][0] > 0])
    assert not own_photo_kept
