"""Can the whole network, told where the user clicked, cut one person out of a group, even in front of another?

    python benchmarks/studies/click_net.py --data datasets/eg1800 --data datasets/ccp --data datasets/vikram \\
        --val-list training/splits/shared_val.txt --out runs/click-net.pt          # trains, then scores

The click head (``click_head.py``) learns on the frozen network's features and keeps a person standing in
front of another together with them: the features say "person" on both and little about where one ends.
Interactive segmentation networks are instead trained whole with the click as an input. This study does
that from the shipped network: the click maps (``segmenter.chooser.click_maps``, at the network's resolution) go
through their own first convolution, added to the encoder's first convolution (zero at the start, so
training starts from the shipped network), and every weight learns to output the clicked person's own mask.
The training photos are the click head's (``seam_head.compose``: single people, side by side, pasted in
front or behind, training pairs only), with a click on each person; each photo appears once per person in
its batch, so the network sees the same photo with two answers.

Scored as the click head is (``click_head.score_choices``), the rules reading "net" for "head".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch

from benchmarks.studies.click_head import add_study_options, pick_click, score_choices
from benchmarks.studies.seam_head import SIZE, compose, load_training
from segmenter import checkpoint
from segmenter.chooser import Chooser, ClickNet, click_maps
from segmenter.chooser import load as chooser_weights
from segmenter.inference import Segmenter
from segmenter.preprocess import normalize
from training.losses import BCEDiceLoss


def batch_of(data: Sequence[tuple[np.ndarray, np.ndarray]], r: random.Random, photos: int,
             mix: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network input, click maps and targets: each composed photo once per person on it, clicked there."""
    images, points, targets = [], [], []
    for _ in range(photos):
        photo, inst = compose(data, r, mix)
        for k in (1, 2):
            person = inst == k
            if person.sum() >= 30:
                images.append(photo)
                points.append(pick_click(person, r))
                targets.append(torch.from_numpy(person).float())
    batch = normalize(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous())
    return batch, click_maps(points, (SIZE, SIZE)), torch.stack(targets)[:, None]


def train(args: argparse.Namespace, net: ClickNet) -> ClickNet:
    data = load_training(args)
    torch.manual_seed(args.seed)
    groups = [{"params": net.click.parameters(), "lr": 10 * args.lr}, {"params": net.net.parameters(), "lr": args.lr}]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    loss_fn = BCEDiceLoss()
    net.train()
    r, start = random.Random(11 + args.seed), time.perf_counter()
    for step in range(args.steps):
        batch, maps, target = batch_of(data, r, args.batch, args.mix)
        with torch.autocast("cpu", torch.bfloat16):
            out = net(batch.contiguous(memory_format=torch.channels_last), maps).float()
        loss = loss_fn(out, target)
        opt.zero_grad()
        loss.backward()
        scale = 0.5 * (1 + math.cos(math.pi * step / args.steps))  # cosine to zero
        for group, base in zip(opt.param_groups, (10 * args.lr, args.lr), strict=True):
            group["lr"] = base * scale
        opt.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        if args.save_every and step and step % args.save_every == 0:
            save(net, args.out.with_suffix(".partial.pt"), args)
    return net


def save(net: ClickNet, path: Path, args: argparse.Namespace) -> None:
    """The weights in the form ``segmenter.chooser.load`` reads, with the segmenter's config and how they
    were trained."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"encoder": net.net.encoder_name, "decoder_channels": list(net.net.decoder_channels), "image_size": SIZE}
    made = json.dumps({"script": "benchmarks/studies/click_net.py", "date": time.strftime("%Y-%m-%d"),
                       "args": vars(args)}, default=str)  # paths as text
    checkpoint.save_atomic({"model": net.state_dict(), "config": config, "provenance": made}, path)


def ship(src: Path, dst: Path) -> None:
    """``src``'s weights in half precision (as the segmenter ships), the rest as it is."""
    ckpt = checkpoint.load(src)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    checkpoint.save_atomic(ckpt, dst)
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_options(p, steps=1500, batch=4)
    p.add_argument("--lr", type=float, default=1e-4, help="the network's rate (the click convolution's is 10x)")
    p.add_argument("--save-every", type=int, default=0, help="also write the weights so far every N batches")
    p.add_argument("--ship", type=Path, help="also write the weights in half precision here, and score those "
                   "(segmenter/weights/person_click.pt is the shipped click network)")
    p.add_argument("--init", type=Path, help="start from this click network (default: the segmenter, clicks at zero)")
    p.add_argument("--seed", type=int, default=0, help="the training photos' and clicks' draw")
    args = p.parse_args(argv)
    if args.out.is_file():
        net, _ = chooser_weights(args.out)
    else:
        if args.init:
            net, _ = chooser_weights(args.init)
        else:
            net = ClickNet(checkpoint.load_model(args.checkpoint or checkpoint.default_weights())[0])
        net = train(args, net)
        save(net, args.out, args)
    if args.ship:
        ship(args.out, args.ship)
        net, _ = chooser_weights(args.ship)
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    chooser = Chooser(net.eval(), seg.device, seg.amp)  # as served
    score_choices(args, seg, lambda image, points: chooser.choose(seg, image, points), label="net")
    return 0


if __name__ == "__main__":
    sys.exit(main())
