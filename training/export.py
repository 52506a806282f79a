"""Turn a checkpoint into a TorchServe model archive (``model_store/<name>.mar``).

The archive is built only from this repository's code: the ``segmenter`` core (model,
decoding, pre/post-processing), the ``handler`` package and a ``model-config.yaml``; the
checkpoint is reduced to the model's weights and config (no optimizer state). The click network
that ``keep`` uses to tell people apart (``segmenter.chooser``) travels as ``chooser.pt``: the
shipped one by default, another with ``--chooser``, none with ``--no-chooser`` (``keep`` then tells
people apart by the mask's regions alone). The network for photos of groups (``segmenter.crowd``) travels
as ``crowd.pt``: the shipped one with the shipped weights, another with ``--crowd``, none with
``--no-crowd`` or with weights of one's own (every photo then gets the main network's look).

    python training/export.py                       # the shipped weights
    python training/export.py --checkpoint runs/X/best.pt --name my_model
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

from handler.contract import MODEL_NAME
from segmenter import checkpoint, chooser, crowd
from training.ship import check_version, version_of

REPO = Path(__file__).resolve().parent.parent
HANDLER_ENTRY = REPO / "handler" / "person_handler.py"
PACKAGES = ("segmenter", "handler")
WEIGHTS_NAME = "weights.pt"
CHOOSER_NAME = "chooser.pt"
CROWD_NAME = "crowd.pt"
# The archive's version when neither --version nor the checkpoint's provenance names one (a training run).
FALLBACK_VERSION = "1.0"
# Not needed inside a worker: weights travel as weights.pt; the client and the server control run outside.
ARCHIVE_EXCLUDES = ("__pycache__", "*.pyc", "weights", "client.py", "serve")

# TorchServe per-model settings. One worker with all cores beats several oversubscribed ones on
# a small CPU (see docs/SERVING.md); batching waits at most 20 ms for company.
DEFAULT_MODEL_CONFIG = {
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 1,
    "maxBatchDelay": 20,
    "responseTimeout": 120,
}


def _model_config_yaml(settings: dict) -> str:
    return "".join(f"{k}: {v}\n" for k, v in settings.items())


def _copy_package(name: str, dst: Path) -> None:
    shutil.copytree(REPO / name, dst / name,
                    ignore=shutil.ignore_patterns(*ARCHIVE_EXCLUDES))


def export_archive(checkpoint_path: str | Path, model_store: str | Path = REPO / "model_store",
                   name: str = MODEL_NAME, version: str | None = None,
                   settings: dict | None = None, click_net: str | Path | None = chooser.SHIPPED_CHOOSER,
                   crowd_net: str | Path | None | bool = True) -> Path:
    """Build ``<model_store>/<name>.mar``; returns its path. Raises with a clear message on failure.

    ``click_net``: the click network's weights to ship for ``keep``, checked to load first; None, or the
    shipped one's path in a checkout without it, ships none. ``crowd_net``: the crowd network's weights,
    checked to fit the main network; True ships the shipped one with the shipped weights (none with others),
    None or False none.

    Without ``version`` the archive takes the version ``ship.py --version`` recorded in the checkpoint,
    so TorchServe's model list names the model the weights are (docs/MODEL_CARD.md).
    """
    if version is not None:
        check_version(version)
    ckpt = checkpoint.load(checkpoint_path)
    version = version or version_of(ckpt) or FALLBACK_VERSION
    model_store = Path(model_store).resolve()
    model_store.mkdir(parents=True, exist_ok=True)
    cfg = dict(DEFAULT_MODEL_CONFIG, **(settings or {}))
    with tempfile.TemporaryDirectory(prefix="mar-") as tmp:
        stage = Path(tmp)
        extra = stage / "extra"
        extra.mkdir()
        for pkg in PACKAGES:
            _copy_package(pkg, extra)
        weights = stage / WEIGHTS_NAME
        checkpoint.save_atomic({"model": ckpt["model"], "config": ckpt["config"]}, weights)
        crowd_file = crowd.default_for(checkpoint_path) if crowd_net is True else crowd.present(crowd_net or None)
        if crowd_file is not None:
            crowd.load(crowd_file, ckpt["config"])  # it fits the main network, and its weights their architecture
            crowd_ckpt = checkpoint.load(crowd_file)
            checkpoint.save_atomic({"model": crowd_ckpt["model"], "config": crowd_ckpt["config"]}, extra / CROWD_NAME)
        if (click_file := chooser.present(click_net)) is not None:
            net, config = chooser.load(click_file)
            checkpoint.save_atomic({"model": net.state_dict(), "config": config}, extra / CHOOSER_NAME)
        config_file = stage / "model-config.yaml"
        config_file.write_text(_model_config_yaml(cfg))
        archiver_tmp = stage / "archiver-tmp"  # the archiver stages in $TMPDIR/<name>: keep runs apart
        archiver_tmp.mkdir()
        cmd = [_archiver(), "--model-name", name, "--version", version,
               "--serialized-file", str(weights), "--handler", str(HANDLER_ENTRY),
               "--extra-files", str(extra), "--config-file", str(config_file),
               "--export-path", str(model_store), "--force"]
        env = dict(os.environ, TMPDIR=str(archiver_tmp), TEMP=str(archiver_tmp))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed ({proc.returncode}): {proc.stderr.strip()}")
    return model_store / f"{name}.mar"


def _archiver() -> str:
    from handler.serve import find_tool

    found = find_tool("torch-model-archiver")
    if not found:
        raise RuntimeError("torch-model-archiver not found; run `make setup` first")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="checkpoint to export (default: the shipped weights)")
    p.add_argument("--model-store", type=Path, default=REPO / "model_store")
    p.add_argument("--name", default=MODEL_NAME, help="model name (the .mar file's base name)")
    p.add_argument("--version", help="the archive's version (default: the one ship.py --version recorded in "
                   f"the checkpoint, else {FALLBACK_VERSION})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_MODEL_CONFIG["batchSize"])
    p.add_argument("--max-batch-delay", type=int, default=DEFAULT_MODEL_CONFIG["maxBatchDelay"], help="ms")
    p.add_argument("--workers", type=int, default=DEFAULT_MODEL_CONFIG["minWorkers"])
    p.add_argument("--response-timeout", type=int, default=DEFAULT_MODEL_CONFIG["responseTimeout"], help="s")
    clicks = p.add_mutually_exclusive_group()
    clicks.add_argument("--chooser", type=Path, default=chooser.SHIPPED_CHOOSER,
                        help="the click network keep uses (default: the shipped one)")
    clicks.add_argument("--no-chooser", action="store_true",
                        help="ship no click network: keep tells people apart by the mask's regions alone")
    crowds = p.add_mutually_exclusive_group()
    crowds.add_argument("--crowd", type=Path,
                        help="the network for photos of groups (default: the shipped one with the shipped weights, "
                             "none with other weights)")
    crowds.add_argument("--no-crowd", action="store_true",
                        help="ship no crowd network: every photo gets the main network's look")
    args = p.parse_args(argv)
    settings = {"batchSize": args.batch_size, "maxBatchDelay": args.max_batch_delay, "minWorkers": args.workers,
                "maxWorkers": args.workers, "responseTimeout": args.response_timeout}
    try:
        path = args.checkpoint or checkpoint.default_weights()
        mar = export_archive(path, args.model_store, args.name, args.version, settings,
                             None if args.no_chooser else args.chooser,
                             False if args.no_crowd else (args.crowd or True))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"export.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"export.py: wrote {mar} ({mar.stat().st_size / 1e6:.1f} MB) from {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
