"""Can a small head on the network's decoder mark where two people meet, so that ``keep`` can cut there?

    python benchmarks/studies/seam_head.py --data datasets/eg1800 --data datasets/ccp --data datasets/vikram \\
        --val-list training/splits/shared_val.txt --out runs/seam-head.pt          # trains, then scores

The network is as sure where a person stands in front of another as inside either, so its probability map
cannot cut them apart (``segmenter.people.split_touching`` splits only people who meet at a less certain
seam). This study trains a *seam head*: a few convolutions on the frozen shipped network's decoder levels,
the photo and the probability, at half the network's resolution, that marks the pixels where two different
people meet. Its training photos are built from the training pairs (never the validation split): a single
person; two photos side by side; another pair's person, 30-100% of the height, pasted in front of the
photo's person or behind it. The truth is every pixel within 2 network pixels of both people.

Scored on ``benchmarks/tuning/keep_quality.py``'s two-person photos, plus *single*: the validation photo as it
is, where the kept person should be the whole person (the change in IoU against keeping everyone; a false
seam that cuts a body shows here). The seams are cut out of the network's map before the split (a pixel the
head marks at ``threshold`` or above is no longer near-certain), so the split's other rule, that a core
must be at least ``share`` of its region, applies as served.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from benchmarks.tuning.keep_quality import CASES, CUT, _iou, alone, inside_point, score
from evaluation.data_options import add_data_options, case_runs
from evaluation.pairs import find_pairs
from segmenter import checkpoint, people
from segmenter.inference import Segmenter
from segmenter.preprocess import normalize

SIZE = 352  # the network's input side (the shipped model's)
WIDTH = 24  # the head's channels
KINDS = ("single", "side", "front", "behind")
Sample = tuple[np.ndarray, np.ndarray]  # photo (uint8 HxWx3) and truth (bool HxW), longer side SIZE


class SeamHead(nn.Module):
    """1x1 reduction, then three 3x3 convolutions dilated 1, 2, 4 (a 30-pixel view at the network's size)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, WIDTH, 1), nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.ReLU(),
            nn.Conv2d(WIDTH, WIDTH, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(WIDTH, WIDTH, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(WIDTH, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.reduce(x))


class Features:
    """The frozen network's decoder levels, the photo and the probability at half its resolution."""

    def __init__(self, model: nn.Module, levels: Sequence[int]) -> None:
        self.model, self.levels, self.seen = model, tuple(levels), {}
        for i, block in enumerate(model.decoder):
            block.register_forward_hook(self._keep(i))
        self.channels = sum(model.decoder_channels[i] for i in self.levels) + 4

    def _keep(self, i: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            self.seen[i] = output
        return hook

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            logits = self.model(batch)
        size = self.seen[len(self.model.decoder) - 2].shape[-2:]  # the stride-2 level

        def at(t: torch.Tensor) -> torch.Tensor:
            t = t.float()
            if t.shape[-2] > size[0]:
                return F.avg_pool2d(t, 2)
            if t.shape[-2] < size[0]:
                return F.interpolate(t, size=size, mode="bilinear", align_corners=False)
            return t

        parts = [at(self.seen[i]) for i in self.levels]
        return torch.cat([*parts, at(batch), at(torch.sigmoid(logits.float()))], 1)


def _fit(image: np.ndarray, mask: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return (np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)),
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)))


def compose(data: Sequence[Sample], r: random.Random, mix: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A SIZE x SIZE training photo and its people (0 background, 1 the photo's person, 2 the other)."""
    a, am = data[r.randrange(len(data))]
    canvas, inst = np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    kind = r.random()
    edges = np.cumsum(mix)
    if kind < edges[0]:
        canvas[:a.shape[0], :a.shape[1]], inst[:a.shape[0], :a.shape[1]] = a, am
        return canvas, inst
    b, bm = data[r.randrange(len(data))]
    if kind < edges[1]:  # side by side
        b2, bm2 = _fit(b, bm, a.shape[0])
        img = np.concatenate([a, b2], 1)
        ins = np.concatenate([am.astype(np.uint8), (bm2 >= 128) * 2], 1).astype(np.uint8)
        s = SIZE / max(img.shape[:2])
        size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
        canvas[:size[1], :size[0]] = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
        inst[:size[1], :size[0]] = np.asarray(Image.fromarray(ins).resize(size, Image.Resampling.NEAREST))
        return canvas, inst
    h, w = a.shape[:2]
    b2, alpha = _fit(b, bm, max(16, round(h * r.uniform(0.3, 1.0))))
    if b2.shape[1] >= w:
        b2, alpha = _fit(b, bm, max(16, int(alpha.shape[0] * (w - 1) / b2.shape[1])))
    ph, pw = alpha.shape
    x = r.randrange(0, w - pw + 1)
    y = h - ph if r.random() < 0.7 else r.randrange(0, h - ph + 1)
    soft = np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(r.uniform(0.3, 1.5))),
                      np.float32)[..., None] / 255
    img, ins = a.astype(np.float32), am.astype(np.uint8)
    under = img[y:y + ph, x:x + pw].copy()
    pasted = b2 * soft + under * (1 - soft)
    if kind < edges[2]:  # in front of the photo's person
        img[y:y + ph, x:x + pw] = pasted
        ins[y:y + ph, x:x + pw][alpha >= 128] = 2
    else:  # behind them
        own = np.asarray(Image.fromarray(am.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(0.8)),
                         np.float32)[y:y + ph, x:x + pw, None] / 255
        img[y:y + ph, x:x + pw] = under * own + pasted * (1 - own)
        ins[y:y + ph, x:x + pw][(alpha >= 128) & ~am[y:y + ph, x:x + pw]] = 2
    canvas[:h, :w], inst[:h, :w] = np.clip(img + 0.5, 0, 255).astype(np.uint8), ins
    return canvas, inst


def seam_truth(inst: np.ndarray, radius: int = 2) -> torch.Tensor:
    """Pixels of a person with both people within ``radius``."""
    t = torch.from_numpy(inst)[None, None]
    near = [F.max_pool2d((t == k).float(), 2 * radius + 1, 1, radius) > 0 for k in (1, 2)]
    return (near[0] & near[1] & (t > 0)).float()[0, 0]


def load_training(args: argparse.Namespace) -> list[Sample]:
    """``--pairs`` training pairs (not in ``--val-list``), shuffled with a fixed seed, at the network's size."""
    val = {line.strip() for line in Path(args.val_list).read_text().splitlines()
           if line.strip() and not line.startswith("#")}
    pairs = [p for p in find_pairs(args.data, skip_bad=True, check=False) if p.image.stem not in val]
    random.Random(5).shuffle(pairs)
    data = []
    for pair in pairs[:args.pairs]:
        image = Image.open(pair.image).convert("RGB")
        mask = Image.open(pair.mask).convert("L").resize(image.size)
        s = SIZE / max(image.size)
        size = (max(1, round(image.width * s)), max(1, round(image.height * s)))
        truth = np.asarray(mask.resize(size, Image.Resampling.BILINEAR)) >= 128
        if truth.sum() > 200:
            data.append((np.asarray(image.resize(size, Image.Resampling.BILINEAR)), truth))
    return data


def train(args: argparse.Namespace, features: Features) -> SeamHead:
    data = load_training(args)
    torch.manual_seed(0)
    head = SeamHead(features.channels)
    opt = torch.optim.Adam(head.parameters(), 1e-3)
    r, start = random.Random(11), time.perf_counter()
    for step in range(args.steps):
        photos, insts = zip(*(compose(data, r, args.mix) for _ in range(8)), strict=True)
        batch = normalize(torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).contiguous())
        target = F.max_pool2d(torch.stack([seam_truth(i) for i in insts])[:, None], 2)
        with torch.autocast("cpu", torch.bfloat16):
            out = head(features(batch)).float()
        p = torch.sigmoid(out)
        dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
        loss = F.binary_cross_entropy_with_logits(out, target, pos_weight=torch.tensor(args.pos_weight)) + dice
        take_step(opt, loss, step, args.steps, start)
    return head


def take_step(opt: torch.optim.Optimizer, loss: torch.Tensor, step: int, steps: int, start: float) -> None:
    """One Adam step; the rate drops from 1e-3 to 3e-4 two thirds of the way; a line every 100 batches."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step == steps * 2 // 3:
        for group in opt.param_groups:
            group["lr"] = 3e-4
    if step % 100 == 0:
        print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)


def seams(seg: Segmenter, features: Features, head: SeamHead, image: Image.Image) -> np.ndarray:
    """The head's seam probability at the network map's size (letterbox padding removed)."""
    batch, sizes = seg.model_input([image])
    with torch.inference_mode():
        s = torch.sigmoid(head(features(batch.contiguous())).float())
        s = F.interpolate(s, scale_factor=2, mode="bilinear", align_corners=False)[0, 0]
    w, h = sizes[0]
    return s[:h, :w].numpy()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=30)
    p.add_argument("--out", type=Path, required=True, help="the head's weights: trained and written if missing")
    p.add_argument("--score-data", nargs="+", help="roots to score on (default: the --data roots but vikram)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="decoder levels, 0 the coarsest")
    p.add_argument("--pos-weight", type=float, default=10.0)
    p.add_argument("--mix", type=float, nargs=4, default=[0.35, 0.15, 0.35, 0.15], metavar="SHARE",
                   help="shares of " + ", ".join(KINDS) + " photos in training")
    p.add_argument("--pairs", type=int, default=1500, help="training pairs read")
    p.add_argument("--steps", type=int, default=1600, help="batches of 8")
    p.add_argument("--threshold", type=float, nargs="+", default=[0.5, 0.3])
    p.add_argument("--share", type=float, nargs="+", default=[0.25, 0.1, 0.05])
    p.add_argument("--strength", type=float, nargs="*", default=[],
                   help="also score keeping a cut the seams made only where their mean along it is at least this")
    p.add_argument("--picture", type=Path, help="also write the seams on a few photos to this PNG")
    args = p.parse_args(argv)
    features = Features(frozen_network(args), args.levels)
    head = load_or_train(args, SeamHead(features.channels), lambda: train(args, features))
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    args.data = args.score_data or [d for d in args.data if Path(d).name != "vikram"]
    cases = {**CASES, "single": alone}
    photos = []
    for root, samples, i, case in case_runs(args, cases, "seams"):
        image, truths = cases[case](samples[i], samples[(i + 1) % len(samples)])
        with torch.inference_mode():
            prob = seg.predict_lowres([image])[0]
            mask = seg.full_mask(prob, image)
        photos.append((f"{root}: {case}", mask, prob.numpy(), seams(seg, features, head, image), truths))
    settings = [(None, people.CORE_SHARE, None)] + [
        (t, s, q) for t in args.threshold for s in args.share for q in [None, *args.strength]]
    names = list(dict.fromkeys(name for name, *_ in photos))
    print("\n| seams cut at | core share | new cut kept at | " + " | ".join(names) + " | all two-person |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    served, split = people.CORE_SHARE, people.split_touching
    for threshold, share, strength in settings:
        people.CORE_SHARE = share
        rows: dict[str, list[float]] = {}
        for name, mask, prob, seam, truths in photos:
            cert = prob.copy()
            if threshold is not None:
                cert[seam >= threshold] = 0
            if strength is not None:
                people.split_touching = checked_split(split, prob, seam, strength)
            if name.endswith("single"):
                kept = people.keep_people(mask, [inside_point(truths[0])], cert) >= CUT
                rows.setdefault(name, []).append(_iou(kept, truths[0]) - _iou(mask >= CUT, truths[0]))
            else:
                rows.setdefault(name, []).extend(r["keep"] for r in score(mask, truths, cert))
            people.split_touching = split
        pair_rows = [v for name, vs in rows.items() if not name.endswith("single") for v in vs]
        cells = " | ".join(f"{np.mean(rows[n]):+.3f}" if n.endswith("single") else f"{np.mean(rows[n]):.3f}"
                           for n in names)
        print(f"| {'no head' if threshold is None else threshold} | {share:g} | "
              f"{'-' if strength is None else strength} | {cells} | {np.mean(pair_rows):.4f} |")
    people.CORE_SHARE = served
    if args.picture:
        picture(photos, args.threshold[0]).save(args.picture)
    return 0


def frozen_network(args: argparse.Namespace) -> nn.Module:
    """The network of ``--checkpoint`` (default: the shipped one), its weights held."""
    model, _ = checkpoint.load_model(args.checkpoint or checkpoint.default_weights())
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def load_or_train(args: argparse.Namespace, head: nn.Module, fit: Callable[[], nn.Module]) -> nn.Module:
    """``head`` with the weights in ``--out``, or a head ``fit`` trains, written there; ready to score."""
    if args.out.is_file():
        head.load_state_dict(torch.load(args.out, weights_only=True))
    else:
        head = fit()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(head.state_dict(), args.out)
    return head.eval()


def checked_split(split: Callable[..., tuple[np.ndarray, int]], prob: np.ndarray, seam: np.ndarray,
                  strength: float) -> Callable[..., tuple[np.ndarray, int]]:
    """``split`` (``people.split_touching``) with each cut the served split would not make kept only where the
    seam's mean along it reaches ``strength``; weaker cuts are joined again, weakest first."""
    def checked(labels: np.ndarray, n: int, certainty: np.ndarray) -> tuple[np.ndarray, int]:
        new, m = split(labels, n, certainty)
        if m == n:
            return new, m
        size = labels.shape[::-1]
        along = people._certainty_at(seam, size)
        base, _ = split(labels, n, people._certainty_at(prob, size))
        while True:
            cuts: dict[tuple[int, int], list[float]] = {}
            for a, b, s in ((new[:, :-1], new[:, 1:], (along[:, :-1] + along[:, 1:]) / 2),
                            (new[:-1], new[1:], (along[:-1] + along[1:]) / 2)):
                at = (a != b) & (a > 0) & (b > 0)
                for x, y, v in zip(a[at].tolist(), b[at].tolist(), s[at].tolist(), strict=True):
                    cuts.setdefault((min(x, y), max(x, y)), []).append(v)
            weak = [(float(np.mean(v)), x, y) for (x, y), v in cuts.items()
                    if np.bincount(base[new == x]).argmax() == np.bincount(base[new == y]).argmax()
                    and np.mean(v) < strength]
            if not weak:
                return new, m
            _, x, y = min(weak)
            new[new == y] = x
    return checked


def picture(photos: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]],
            threshold: float, per_case: int = 1, height: int = 200, width: int = 1200) -> Image.Image:
    """The first photo of each case: the network's map in grey with the head's seams in red, beside each
    person's truth in its own colour; rows of tiles of one height."""
    tiles, seen = [], set()
    for name, _mask, prob, seam, truths in photos:
        if name in seen:
            continue
        seen.add(name)
        h, w = prob.shape
        grey = np.repeat((prob[..., None] * 255).astype(np.uint8), 3, axis=2)
        grey[seam >= threshold] = (255, 0, 0)
        truth = np.zeros((h, w, 3), np.uint8)
        for k, t in enumerate(truths):
            small = np.asarray(Image.fromarray(t.astype(np.uint8) * 255).resize((w, h))) >= CUT
            truth[small, 1 - k] = 255  # green, then red
        tile = Image.fromarray(np.concatenate([grey, np.full((h, 4, 3), 255, np.uint8), truth], 1))
        tiles.append(tile.resize((round(height * tile.width / h), height)))
    return sheet(tiles, height, width)


def sheet(tiles: Sequence[Image.Image], height: int, width: int) -> Image.Image:
    """Tiles of one ``height`` in rows at most ``width`` wide, on white."""
    rows: list[list[Image.Image]] = [[]]
    for tile in tiles:
        if rows[-1] and sum(t.width + 8 for t in rows[-1]) + tile.width > width:
            rows.append([])
        rows[-1].append(tile)
    sheet = Image.new("RGB", (max(sum(t.width + 8 for t in r) for r in rows), len(rows) * (height + 8)), "white")
    for y, row in enumerate(rows):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, y * (height + 8)))
            x += tile.width + 8
    return sheet


if __name__ == "__main__":
    sys.exit(main())
