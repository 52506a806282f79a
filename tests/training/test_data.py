"""Dataset pairing, validation errors and aligned augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segmenter.preprocess import MEAN, STD
from training.data import DatasetError, SegmentationDataset, find_pairs, paste, split_pairs, train_transforms


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
