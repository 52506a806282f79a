"""A training run's files (``metrics.jsonl``, ``best.pt``, ``last.pt``) and the order they are written in.

A run may be killed at any moment (Ctrl-C, ``kill``, a scheduler's time limit, SIGKILL). The rule that
keeps every kill resumable: an epoch is committed by writing its metrics row, then ``best.pt`` when it
improved, then ``last.pt`` last. ``last.pt`` is the commit point; a kill before it only repeats the
epoch on ``--resume``, which drops the extra row (``trim_metrics``) and keeps ``best.pt``'s score
(``recorded_best``). Writing in another order lost the row, or left ``best.pt`` behind ``last.pt``'s best.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.optim.swa_utils import AveragedModel

from segmenter import checkpoint

METRICS, BEST, LAST = "metrics.jsonl", "best.pt", "last.pt"
T = TypeVar("T")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's stop, ``timeout``): stop as on Ctrl-C, with a checkpoint."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_signals_held(deliver: bool = True, second_stops: bool = False) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while checkpoints are written (or a batch fetched), then act on them.

    A stop raised inside ``torch.save`` left its zip writer half-way: either the writer's clean-up
    raised its own RuntimeError over the stop (a traceback instead of the resume message), or the
    epoch just trained was thrown away (last.pt rolled back to "interrupted"). The files themselves
    were safe (``save_atomic``). Now the signal is taken after the write. With ``deliver`` False, a
    signal that came meanwhile is dropped: the save in progress is already the stop's. With
    ``second_stops``, the same signal sent again is taken at once: a second Ctrl-C still stops a run
    whose held step hangs.
    """
    pending: list[int] = []
    held: dict[int, Any] = {}

    def hold(signum: int, frame: Any) -> None:
        if second_stops and signum in pending and callable(held[signum]):
            held[signum](signum, frame)
        pending.append(signum)

    held.update({s: signal.signal(s, hold) for s in STOP_SIGNALS})
    try:
        yield
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
    if deliver:
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)  # the handler in force again decides: raise, or ignore (SIG_IGN)


def batches(loader: Iterable[T]) -> Iterator[T]:
    """The loader's batches, with a stop taken between two fetches, never inside one.

    With data workers, a batch arrives as file descriptors handed over a socket by the worker's
    resource-sharer thread. A SIGTERM to the whole process group raised the stop in the middle of
    that handshake: the run saved its checkpoint, but the worker printed a ConnectionResetError
    traceback over the resume message (once in CI; 2 of 40 such stops on the loaded 2-core machine,
    0 of 80 with this). A fetch takes milliseconds; a stop now waits for it.
    """
    it = iter(loader)
    while True:
        with stop_signals_held(second_stops=True):
            try:
                batch = next(it)
            except StopIteration:
                return
        yield batch


def ignore_stop_signals_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave the stop to the main process.

    ``kill`` of the whole process group (``pkill -f train.py``, a scheduler, ``timeout --kill-after``)
    reached the data workers too; one died first, and the main process raised DataLoader's
    "worker killed by signal" error instead of saving its checkpoint. Workers exit on their own
    once the main process is gone (PyTorch's watchdog), so ignoring the signals here is safe.
    """
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's options as plain values (paths as strings), so a checkpoint loads with weights_only."""
    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v

    return {k: plain(v) for k, v in vars(args).items() if k != "given"}


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   epoch: int, best_iou: float, args: argparse.Namespace, config: dict[str, Any],
                   ema: AveragedModel | None = None, **extra: Any) -> dict[str, Any]:
    """A checkpoint holding only tensors and plain values, so it loads with weights_only=True.

    With ``--ema`` the averaged weights are stored as ``model``, because they are what validation
    scored and what ship.py, evaluate.py and export.py must pick up; the raw weights the optimizer
    works on are kept as ``train_model`` (with the average's step count) for ``--resume``.
    """
    state = {"model": model.state_dict(), "config": config, "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "epoch": epoch, "best_iou": best_iou, "args": plain_args(args), **extra}
    if ema is not None:
        state["train_model"], state["model"] = state["model"], ema.module.state_dict()
        state["ema_steps"] = int(ema.n_averaged)
    return state


def commit_epoch(out: Path, row: dict[str, Any], state: dict[str, Any], improved: bool,
                 on_committed: Callable[[], None]) -> None:
    """Write one finished epoch: metrics row, then best.pt (if improved), then last.pt, the commit point.

    ``on_committed`` runs right after last.pt, still before a stop that came during the writes is
    taken, so the stop's handler knows the epoch is kept.
    """
    with stop_signals_held():
        with open(out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if improved:
            checkpoint.save_atomic(state, out / BEST)
        checkpoint.save_atomic(state, out / LAST)
        on_committed()


def save_interrupted(out: Path, state: dict[str, Any]) -> None:
    """last.pt for a stop inside an epoch: ``--resume`` repeats that epoch."""
    with stop_signals_held(deliver=False):
        checkpoint.save_atomic(dict(state, interrupted=True), out / LAST)


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


def held_run_files(out: Path) -> list[str]:
    """The run files already in ``out``: a fresh run there would append to its metrics and replace best.pt."""
    return [name for name in (LAST, BEST, METRICS) if (out / name).exists()]
