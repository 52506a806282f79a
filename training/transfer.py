"""Carry trained weights into a U-Net of another depth (``train.py --init`` across architectures).

A CPU-only project grows its model across sessions instead of retraining from scratch: the
encoder levels and the decoder levels nearest the photo keep what they learned, and only the
new deepest level starts from random weights. Decoder modules are listed deepest first, so they
are matched from the shallow end: level i of a depth-4 decoder is level i + 1 of a depth-5 one.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_DECODER = re.compile(r"^(ups|up_convs)\.(\d+)\.(.+)$")


def rename_for_depth(name: str, old_depth: int, new_depth: int) -> str:
    """The name a tensor of the ``old_depth`` U-Net has in the ``new_depth`` one."""
    match = _DECODER.match(name)
    if not match:
        return name  # inc, downs.i (shallow end first already), outc
    group, index, rest = match.groups()
    return f"{group}.{int(index) + new_depth - old_depth}.{rest}"


def carry_weights(model: nn.Module, state: dict[str, torch.Tensor], old_depth: int) -> tuple[int, int]:
    """Copy every tensor of ``state`` into its renamed counterpart in ``model``.

    Returns (tensors carried, tensors of ``model`` left as initialised). All or nothing: a tensor
    that has no counterpart of the same shape (another width, a shallower target) raises
    ValueError, because a run that quietly drops half of what it was given wastes hours.
    """
    own = model.state_dict()
    carried, misfits = {}, []
    for name, tensor in state.items():
        target = rename_for_depth(name, old_depth, model.depth)
        if target in own and own[target].shape == tensor.shape:
            carried[target] = tensor
        else:
            misfits.append(name)
    if misfits:
        raise ValueError(f"{len(misfits)} of {len(state)} tensors of the --init weights do not fit this model "
                         f"(first: {misfits[0]}); the model may only be deeper, with the same --base-filters")
    own.update(carried)
    model.load_state_dict(own)
    return len(carried), len(own) - len(carried)
