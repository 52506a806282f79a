"""Carry trained weights into a deeper or wider U-Net (``train.py --init`` across architectures).

A model grows by steps instead of being retrained from scratch each time it gets deeper or wider.

- **Deeper:** the encoder levels and the decoder levels nearest the photo keep what they learned,
  and only the new deepest level starts from random weights. Decoder modules are listed deepest
  first, so they are matched from the shallow end: level i of a depth-4 decoder is level i + 1 of
  a depth-5 one.
- **Wider** (more ``--base-filters``): every old channel keeps its weights and the new channels
  start from the wider model's own random weights, except that the old channels' weights *from*
  the new ones are zero. The wider model therefore computes exactly what the narrow one did
  (in eval mode) until training moves those zeros, so a run starts at the old model's quality
  instead of from scratch (Net2Net-style widening, Chen et al. 2016).
"""

from __future__ import annotations

import re

import torch
from torch import nn

_DECODER = re.compile(r"^(ups|up_convs)\.(\d+)\.(.+)$")
# The first convolution of each decoder stage reads cat([skip, upsampled]): two halves of channels.
_CONCAT_INPUT = re.compile(r"^up_convs\.\d+\.0\.weight$")


def rename_for_depth(name: str, old_depth: int, new_depth: int) -> str:
    """The name a tensor of the ``old_depth`` U-Net has in the ``new_depth`` one."""
    match = _DECODER.match(name)
    if not match:
        return name  # inc, downs.i (shallow end first already), outc
    group, index, rest = match.groups()
    return f"{group}.{int(index) + new_depth - old_depth}.{rest}"


def _old_channels(name: str, dim: int, old: int, new: int) -> torch.Tensor:
    """Where the ``old`` channels of one dimension lie among the ``new`` ones."""
    if _CONCAT_INPUT.match(name) and dim == 1:
        half_old, half_new = old // 2, new // 2
        return torch.cat([torch.arange(half_old), torch.arange(half_new, half_new + half_old)])
    return torch.arange(old)


def widen(name: str, old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """``old`` placed inside the wider ``fresh`` tensor so the wider layer computes the same old channels.

    For a convolution the old outputs' rows are zeroed before ``old`` is written into them, which
    leaves their weights from the new inputs at zero: the new channels then add nothing to the old
    ones. ``ups.*`` are transposed convolutions, whose weights are (in, out, ...).
    """
    if old.shape == fresh.shape:
        return old.clone()
    if old.ndim != fresh.ndim or any(o > f for o, f in zip(old.shape, fresh.shape, strict=True)):
        raise ValueError(f"{name}: {tuple(old.shape)} does not fit inside {tuple(fresh.shape)}")
    out = fresh.clone()
    index = [_old_channels(name, d, o, f) for d, (o, f) in enumerate(zip(old.shape, fresh.shape, strict=True))]
    if old.ndim == 4:
        out_dim = 1 if name.startswith("ups.") else 0
        out.index_fill_(out_dim, index[out_dim], 0.0)
    out[torch.meshgrid(*index, indexing="ij")] = old
    return out


def carry_weights(model: nn.Module, state: dict[str, torch.Tensor], old_depth: int,
                  old_base_filters: int | None = None) -> tuple[int, int]:
    """Copy every tensor of ``state`` into its renamed (and, for a wider model, widened) counterpart.

    Returns (tensors carried, tensors of ``model`` left as initialised). All or nothing: a tensor
    that has no counterpart it fits into (a narrower or shallower target) raises ValueError,
    because a run that quietly drops half of what it was given wastes hours.
    """
    base = old_base_filters if old_base_filters is not None else model.base_filters
    if base > model.base_filters:
        raise ValueError(f"the --init model has {base} base filters and this one {model.base_filters}: "
                         "the model may only be deeper or wider (--base-filters)")
    own = model.state_dict()
    carried, misfits = {}, []
    for name, tensor in state.items():
        target = rename_for_depth(name, old_depth, model.depth)
        if target not in own:
            misfits.append(name)
            continue
        try:
            carried[target] = widen(target, tensor, own[target])
        except ValueError:
            misfits.append(name)
    if misfits:
        raise ValueError(f"{len(misfits)} of {len(state)} tensors of the --init weights do not fit this model "
                         f"(first: {misfits[0]}); the model may only be deeper or wider")
    own.update(carried)
    model.load_state_dict(own)
    return len(carried), len(own) - len(carried)
