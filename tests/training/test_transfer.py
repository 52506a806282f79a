"""Carrying weights into a deeper U-Net: what is kept, where it lands, what is refused."""

from __future__ import annotations

import pytest
import torch

from segmenter.model import UNet
from training.transfer import carry_weights, rename_for_depth


def test_decoder_levels_are_matched_from_the_shallow_end() -> None:
    assert rename_for_depth("ups.0.weight", 4, 5) == "ups.1.weight"
    assert rename_for_depth("up_convs.3.4.running_mean", 4, 5) == "up_convs.4.4.running_mean"
    assert rename_for_depth("downs.3.1.0.weight", 4, 5) == "downs.3.1.0.weight"
    assert rename_for_depth("inc.0.weight", 4, 5) == "inc.0.weight"
    assert rename_for_depth("outc.bias", 4, 5) == "outc.bias"


def test_deeper_model_keeps_every_old_tensor_and_only_the_new_level_is_fresh() -> None:
    torch.manual_seed(0)
    old = UNet(base_filters=4, depth=4)
    new = UNet(base_filters=4, depth=5)
    before = {k: v.clone() for k, v in new.state_dict().items()}
    carried, fresh = carry_weights(new, old.state_dict(), old_depth=4)
    assert carried == len(old.state_dict())
    assert fresh == len(new.state_dict()) - carried > 0
    got = new.state_dict()
    for name, tensor in old.state_dict().items():
        assert got[rename_for_depth(name, 4, 5)].equal(tensor), name
    for name in ("downs.4.1.0.weight", "ups.0.weight", "up_convs.0.0.weight"):  # the new deepest level
        assert got[name].equal(before[name]), name
    # the shallow decoder computes what it did: same input, same output of the last up-block
    x = torch.randn(1, 8, 16, 16)
    old.eval(), new.eval()
    with torch.inference_mode():
        assert torch.allclose(old.up_convs[3](x), new.up_convs[4](x))


def test_another_width_is_refused() -> None:
    with pytest.raises(ValueError, match="base-filters"):
        carry_weights(UNet(base_filters=8, depth=5), UNet(base_filters=4, depth=4).state_dict(), old_depth=4)
