"""Train the person/background segmenter and export a TorchServe archive (``--help`` for the options).

The steps, each a function below: ``load_data`` (pairs and split), ``build_network`` (pretrained
encoder, or ``--init`` weights), ``restore`` (``--resume``), ``train_epoch``, ``validate``, then
``run_files.commit_epoch`` (the save order that keeps every kill resumable) and, on Ctrl-C or
SIGTERM, ``stop_run``.

    python training/train.py --data Dataset
    torchrun --nproc_per_node=2 training/train.py --data Dataset      # DistributedDataParallel
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from segmenter import checkpoint
except ModuleNotFoundError as exc:  # run with a Python that lacks the project's packages
    sys.exit(f"train.py: {exc}; set up first with `make setup`, then run `.venv/bin/python training/train.py`")

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler

from evaluation.metrics import mean_metrics
from evaluation.progress import Progress
from evaluation.validation import evaluate_samples
from segmenter.efficientnet_lite import load_pretrained
from segmenter.inference import Segmenter, autocast, resolve_device
from segmenter.model import (
    DEFAULT_DECODER_CHANNELS,
    DEFAULT_DEPTH,
    DEFAULT_ENCODER,
    NO_ENCODER,
    build_model,
    describe,
    encoder_of,
)
from training import run_files
from training.data import (
    DatasetError,
    Pair,
    SegmentationDataset,
    find_pairs,
    load_validation,
    read_name_list,
    split_pairs,
)
from training.losses import make_loss
from training.options import parse_args, restore_run_args
from training.preview import save_preview
from training.sampling import WeightedEpochSampler, pair_weights, read_scores
from training.transfer import carry_weights


@dataclass
class Run:
    """What every step of one training run works on, made once by ``prepare``."""

    args: argparse.Namespace
    out: Path
    device: torch.device
    rank: int
    world: int
    log: Callable[..., None]
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    loader: DataLoader
    sampler: DistributedSampler | WeightedEpochSampler | None
    ema: AveragedModel | None = None
    val_samples: list = field(default_factory=list)
    start_epoch: int = 0
    best_iou: float = -1.0
    committed_epoch: int = 0

    @property
    def main_proc(self) -> bool:
        return self.rank == 0

    @property
    def scored(self) -> nn.Module:
        """What validation scores and checkpoints ship: the average with --ema, else the weights."""
        return self.ema.module if self.ema is not None else self.model

    def state(self, epoch: int) -> dict[str, Any]:
        return run_files.training_state(self.model, self.optimizer, self.scaler, epoch, self.best_iou, self.args,
                                        model_config(self.args), self.ema)


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    return dist.get_rank(), world


def lr_at(epoch: int, args: argparse.Namespace) -> float:
    if args.schedule == "constant":
        return args.lr
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, args.epochs))))


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The architecture a checkpoint records, so every loader rebuilds the network that was trained."""
    if args.encoder == NO_ENCODER:
        return {"encoder": NO_ENCODER, "base_filters": args.base_filters, "image_size": args.image_size,
                "depth": args.depth}
    return {"encoder": args.encoder, "decoder_channels": list(DEFAULT_DECODER_CHANNELS), "image_size": args.image_size}


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW; a pretrained encoder in a group of its own at ``--encoder-lr-scale`` of the rate.

    Each group carries its ``lr_scale`` (kept in the optimizer's state dict), so ``lr_at`` sets both.
    With --weight-decay 0 (the default) AdamW is Adam, the notebook's optimizer.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
    else:
        enc_ids = {id(p) for p in encoder.parameters()}
        groups = [{"params": list(encoder.parameters()), "lr_scale": args.encoder_lr_scale},
                  {"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr_scale": 1.0}]
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)


def ema_with_warmup(decay: float) -> Callable[[list, list, torch.Tensor], None]:
    """An ``AveragedModel`` update whose decay ramps up as min(decay, (1 + n) / (10 + n)) over n steps.

    With a fixed 0.999 the average of a run from ImageNet weights still held 64% of its first step's
    random decoder after 444 steps: epoch 1 of the lite0 run validated at IoU 0.55 while its raw
    weights scored 0.92 (docs/MODEL_CARD.md). The ramp (as in timm's ModelEmaV2 warm-up) lets the
    average forget the start within a few hundred steps and then settle at ``decay``.
    """
    @torch.no_grad()
    def update(averaged: list, current: list, num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        weight = 1.0 - min(decay, (1 + n) / (10 + n))
        for avg, cur in zip(averaged, current, strict=True):
            if avg.is_floating_point():
                avg.lerp_(cur.to(avg.dtype), weight)
            else:  # BatchNorm's step counter: an average means nothing there
                avg.copy_(cur)

    return update


def load_data(args: argparse.Namespace, world: int) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs; every bad pair is reported at once (DatasetError)."""
    args.data = args.data or [Path("Dataset")]
    pairs = find_pairs(args.data, skip_bad=args.skip_bad)
    if args.val_data:
        train_pairs, val_pairs = pairs, find_pairs(args.val_data, skip_bad=args.skip_bad)
    else:
        names = read_name_list(args.val_list) if args.val_list else None
        train_pairs, val_pairs = split_pairs(pairs, names, args.val_fraction)
    if args.limit:
        train_pairs = random.Random(args.seed).sample(train_pairs, min(args.limit, len(train_pairs)))
    if args.val_limit:
        val_pairs = val_pairs[: args.val_limit]
    if len(train_pairs) < args.batch_size * world:
        raise DatasetError(f"only {len(train_pairs)} training pairs; need at least one batch "
                           f"({args.batch_size} x {world} processes)")
    return train_pairs, val_pairs


def run_folder(args: argparse.Namespace, resuming: bool) -> Path:
    """The run's folder; a fresh run refuses one that already holds a run."""
    out = args.out or (args.resume.parent if args.resume else Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    held = run_files.held_run_files(out)
    if held and not resuming:
        raise ValueError(f"{out} already holds a run ({', '.join(held)}); continue it with "
                         f"--resume {out / run_files.LAST}, or choose another --out (or remove the folder)")
    return out


def build_network(args: argparse.Namespace, init: dict[str, Any] | None, resuming: bool,
                  log: Callable[..., None]) -> nn.Module:
    """The network to train: a pretrained encoder for a new run, the ``--init`` weights when given."""
    model = build_model(model_config(args))
    if init is None:
        if args.encoder != NO_ENCODER and not resuming:
            dropped = load_pretrained(model.encoder)
            log(f"train.py: {args.encoder} starts from its ImageNet weights (left out: {', '.join(dropped)})")
        return model
    init_encoder = encoder_of(init["config"])
    if init_encoder != args.encoder:
        raise ValueError(f"{args.init}: its encoder is {init_encoder}, this run's is {args.encoder}; "
                         "--init carries weights between models of the same encoder only")
    if args.encoder != NO_ENCODER:
        model.load_state_dict(init["model"])
        return model
    init_depth = int(init["config"].get("depth", DEFAULT_DEPTH))
    init_base = int(init["config"].get("base_filters", 32))
    try:
        carried, fresh = carry_weights(model, init["model"], init_depth, init_base)
    except ValueError as exc:
        raise ValueError(f"{args.init}: {exc}") from None
    news = ([f"{fresh} tensors of the new level"] if fresh else []) + (
        [f"the channels beyond {init_base} filters (they add nothing until trained)"]
        if init_base != args.base_filters else [])
    if news:
        log(f"train.py: carried {carried} tensors from the depth-{init_depth}, {init_base}-filter model "
            f"{args.init}; random weights for {' and '.join(news)}")
    return model


def restore(run: Run, resume: dict[str, Any], path: Path) -> None:
    """Continue a run: raw weights, optimizer, scaler, epoch, best score, the EMA so far."""
    run.model.load_state_dict(resume.get("train_model", resume["model"]))
    run.optimizer.load_state_dict(resume["optimizer"])
    run.scaler.load_state_dict(resume.get("scaler", {}))
    run.start_epoch, run.best_iou = int(resume["epoch"]), float(resume["best_iou"])
    if run.ema is not None and "train_model" in resume:  # the average so far
        run.ema.module.load_state_dict(resume["model"])
        run.ema.n_averaged.fill_(int(resume["ema_steps"]))
    elif run.ema is not None:  # --ema added on resume: the average starts from the resumed weights
        run.ema.module.load_state_dict(run.model.state_dict())
    if run.main_proc:
        run.best_iou = max(run.best_iou, run_files.recorded_best(run.out / run_files.BEST, run.log))
        dropped = run_files.trim_metrics(run.out / run_files.METRICS, run.start_epoch)
        if dropped:
            run.log(f"train.py: dropped {dropped} metrics row(s) past epoch {run.start_epoch} (from a killed run)")
    run.log(f"train.py: resumed from {path} at epoch {run.start_epoch + 1} (best IoU so far {run.best_iou:.4f})")


def make_sampler(args: argparse.Namespace, dataset: SegmentationDataset, rank: int, world: int,
                 log: Callable[..., None]) -> DistributedSampler | WeightedEpochSampler | None:
    """Shuffled pairs, or with ``--sample-weights`` the ones the scored model got wrong drawn more often."""
    if args.sample_weights:
        weights, unnamed = pair_weights(dataset.pairs, read_scores(args.sample_weights),
                                        args.sample_strength, args.sample_cap)
        log(f"train.py: drawing pairs by {args.sample_weights} (strength {args.sample_strength}, cap "
            f"{args.sample_cap}): weights {weights.min():.2f}-{weights.max():.2f}, mean {weights.mean():.2f}"
            + (f"; {unnamed} pair(s) not in the file weigh as an average photo" if unnamed else ""))
        return WeightedEpochSampler(weights, args.seed, rank, world)
    return DistributedSampler(dataset, world, rank, shuffle=True, seed=args.seed) if world > 1 else None


def make_loader(args: argparse.Namespace, pairs: list[Pair], device: torch.device, rank: int, world: int,
                log: Callable[..., None]) -> tuple[DataLoader, DistributedSampler | WeightedEpochSampler | None]:
    dataset = SegmentationDataset(pairs, args.image_size, args.paste_prob, args.crop_prob, args.side_prob,
                                  args.group_prob, args.ignore_masks, args.decoys,
                                  args.behind_share)
    sampler = make_sampler(args, dataset, rank, world, log)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(args.seed), pin_memory=device.type == "cuda",
                        worker_init_fn=run_files.ignore_stop_signals_in_worker)
    return loader, sampler


def prepare(args: argparse.Namespace) -> Run:
    """Every piece of the run, built in order; errors (bad data, bad checkpoint) raise with the file named."""
    resume = checkpoint.load(args.resume) if args.resume else None
    if resume:
        restore_run_args(args, resume.get("args") or {})
        saved = resume["config"]
        args.encoder, args.image_size = encoder_of(saved), saved["image_size"]
        args.base_filters = int(saved.get("base_filters", args.base_filters))
        args.depth = int(saved.get("depth", DEFAULT_DEPTH))
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = setup_distributed(device)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if rank == 0 else (lambda *a: None)
    for seed_fn in (torch.manual_seed, random.seed, np.random.seed):
        seed_fn(args.seed + rank)
    train_pairs, val_pairs = load_data(args, world)
    init = checkpoint.load(args.init) if args.init else None
    if args.encoder is None:  # fine-tuning needs no --encoder: the weights say which
        args.encoder = encoder_of(init["config"]) if init else DEFAULT_ENCODER
    out = run_folder(args, resume is not None)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name in (run_files.LAST, run_files.BEST):  # what a kill inside a save left behind
            for tmp in checkpoint.remove_stale_temps(out / name):
                log(f"train.py: removed {tmp}, left by a run killed while saving")
    log(f"train.py: {len(train_pairs)} training / {len(val_pairs)} validation pairs from "
        f"{', '.join(map(str, args.data))}; run folder {out}")
    log(f"train.py: {describe(model_config(args))}, input {args.image_size}px, loss {args.loss}, lr {args.lr} "
        f"({args.schedule}), batch {args.batch_size} x {world} process(es), device {device}, "
        f"amp {'on' if args.amp else 'off'}")
    model = build_network(args, init, resume is not None, log).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    loader, sampler = make_loader(args, train_pairs, device, rank, world, log)
    run = Run(args, out, device, rank, world, log, model, DistributedDataParallel(model) if world > 1 else model,
              make_optimizer(model, args), torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda"),
              make_loss(args.loss), loader, sampler)
    if args.ema:
        run.ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(args.ema), use_buffers=True)
    if resume:
        restore(run, resume, args.resume)
    run.val_samples = load_validation(val_pairs) if rank == 0 and val_pairs else []
    return run


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One pass over the training data; the metrics row's training half."""
    lr = lr_at(epoch, run.args)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.net.train()
    bar = Progress(len(run.loader), f"epoch {epoch + 1}/{run.args.epochs}", enabled=run.main_proc)
    total, count, t0 = 0.0, 0, time.monotonic()
    try:
        for images, masks in run_files.batches(run.loader):
            images, masks = images.to(run.device, non_blocking=True), masks.to(run.device, non_blocking=True)
            if run.device.type == "cpu":
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(run.device, run.args.amp):
                logits = run.net(images)
            loss = run.loss_fn(logits, masks)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
            if run.ema is not None:
                run.ema.update_parameters(run.model)
            total += loss.item() * images.shape[0]
            count += images.shape[0]
            bar.update(1, loss=total / count)
    finally:
        bar.close()
    seconds = time.monotonic() - t0
    if run.world > 1:
        stats = torch.tensor([total, count], dtype=torch.float64)
        dist.all_reduce(stats)
        total, count = stats.tolist()
    return {"epoch": epoch + 1, "lr": lr, "train_loss": total / max(1, count),
            "train_images_per_s": count / seconds, "train_seconds": seconds}


def validate(run: Run, epoch: int) -> dict[str, float]:
    """Validation figures through the served path, and the epoch's preview picture."""
    if not run.val_samples:
        return {}
    segmenter = Segmenter(run.scored, run.args.image_size, run.device, amp=None)
    val = mean_metrics(evaluate_samples(segmenter, run.val_samples))
    n = len(run.val_samples)
    picks = np.linspace(0, n - 1, min(run.args.preview_count, n)).astype(int)
    save_preview(segmenter, [run.val_samples[i] for i in picks], run.out / f"preview_{epoch + 1:03d}.png")
    return {"val_iou": val["iou"], "val_dice": val["dice"], "val_boundary_f": val["boundary_f"]}


def finish_epoch(run: Run, row: dict[str, Any]) -> None:
    """Score the epoch, commit it (``run_files.commit_epoch``), and log it."""
    epoch = row["epoch"]
    score = row.get("val_iou", -row["train_loss"])
    improved = score > run.best_iou
    before, run.best_iou = run.best_iou, max(run.best_iou, score)

    def committed() -> None:
        run.committed_epoch = epoch

    try:
        run_files.commit_epoch(run.out, row, run.state(epoch), improved, committed)
    except BaseException:
        if run.committed_epoch != epoch:  # an interrupted save must not claim this epoch's score
            run.best_iou = before
        raise
    run.log(f"epoch {epoch}/{run.args.epochs}: loss {row['train_loss']:.4f}"
            + (f", val IoU {row['val_iou']:.4f} Dice {row['val_dice']:.4f} BF {row['val_boundary_f']:.4f}"
               if "val_iou" in row else "")
            + (" (best)" if improved else "") + f", {row['train_seconds']:.0f}s")


def run_epoch(run: Run, epoch: int) -> None:
    row = train_epoch(run, epoch)
    if run.main_proc:
        row.update(validate(run, epoch))
        finish_epoch(run, row)
        run.model.train()
    if run.world > 1:
        dist.barrier()


def stop_run(run: Run, epoch: int, stop: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM: keep a last.pt that ``--resume`` continues, say how, exit 130 / 143."""
    if run.main_proc:
        committed = run.committed_epoch == epoch + 1
        if not committed:  # repeat this epoch on --resume
            run_files.save_interrupted(run.out, run.state(epoch))
        when = f"after epoch {epoch + 1}" if committed else f"in epoch {epoch + 1}"
        last = run.out / run_files.LAST
        run.log(f"\ntrain.py: {'terminated' if isinstance(stop, run_files.Terminated) else 'interrupted'} {when}; "
                f"saved {last}. Continue with: python training/train.py --resume {last}")
    return 143 if isinstance(stop, run_files.Terminated) else 130


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A run started in the background by a script ignores SIGINT (the shell sets it so), which leaves
    # `kill PID` as the way to stop it: make that save a resumable checkpoint too.
    signal.signal(signal.SIGTERM, run_files.raise_terminated)
    try:
        run = prepare(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    for epoch in range(run.start_epoch, args.epochs):
        try:
            run_epoch(run, epoch)
        except KeyboardInterrupt as stop:
            return stop_run(run, epoch, stop)
    if run.main_proc and not args.no_export:
        from training.export import export_archive

        mar = export_archive(run.out / run_files.BEST, args.model_store, args.model_name)
        run.log(f"train.py: exported {mar}")
    if run.world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
