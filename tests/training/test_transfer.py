"""Carrying weights into a deeper U-Net: what is kept, where it lands, what is refused."""

from __future__ import annotations

import pytest
import torch

from segmenter.model import UNet
from tests.conftest import randomise_batchnorm
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


def test_shallower_model_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        carry_weights(UNet(base_filters=4, depth=3), UNet(base_filters=4, depth=4).state_dict(), old_depth=4)


@pytest.mark.parametrize("old_base, new_base", [(4, 6), (4, 8), (3, 5)])
def test_wider_model_computes_what_the_narrow_one_did(old_base: int, new_base: int) -> None:
    torch.manual_seed(1)
    old, new = UNet(base_filters=old_base, depth=3), UNet(base_filters=new_base, depth=3)
    randomise_batchnorm(old)
    carried, fresh = carry_weights(new, old.state_dict(), old_depth=3, old_base_filters=old_base)
    assert (carried, fresh) == (len(old.state_dict()), 0)
    old.eval(), new.eval()
    x = torch.randn(2, 3, 40, 24)
    with torch.inference_mode():
        assert torch.allclose(old(x), new(x), atol=1e-5)
    # the new channels are not dead: they carry the wider model's random weights and compute something
    assert new.inc[0].weight[old_base:].abs().sum() > 0
    # and training can reach them: the zeroed weights from them get a gradient
    new.train()
    new(x).sum().backward()
    assert new.downs[0][1][0].weight.grad[:2 * old_base, old_base:].abs().sum() > 0


def test_wider_and_deeper_at_once() -> None:
    torch.manual_seed(2)
    old, new = UNet(base_filters=4, depth=3), UNet(base_filters=6, depth=4)
    carried, fresh = carry_weights(new, old.state_dict(), old_depth=3, old_base_filters=4)
    assert carried == len(old.state_dict()) and fresh > 0
    # the concatenated input of a decoder stage: skip channels first, upsampled channels after its half
    got, want = new.up_convs[1][0].weight, old.up_convs[0][0].weight  # level 2 of both, 24 -> 36 + 36 inputs
    assert got[:16, :16].equal(want[:, :16]) and got[:16, 24:40].equal(want[:, 16:])
    assert got[:16, 16:24].abs().sum() == 0 and got[:16, 40:].abs().sum() == 0


def test_narrower_model_is_refused() -> None:
    with pytest.raises(ValueError, match="base-filters"):
        carry_weights(UNet(base_filters=4, depth=4), UNet(base_filters=8, depth=4).state_dict(), old_depth=4,
                      old_base_filters=8)
