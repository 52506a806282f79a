"""The shared model test: forward, backward, odd sizes, save/load."""

from __future__ import annotations

import pytest
import torch

from segmenter import checkpoint
from segmenter.model import UNet, fold_batchnorm


@pytest.mark.parametrize("depth", [4, 5])
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (17, 100), (1, 1)])
def test_forward_keeps_spatial_size(size: tuple[int, int], depth: int) -> None:
    model = UNet(base_filters=4, depth=depth).eval()
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 1, *size)
    assert torch.isfinite(y).all()


def test_backward_reaches_every_parameter() -> None:
    model = UNet(base_filters=4)
    y = model(torch.randn(2, 3, 45, 31))
    y.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_base_filters_sets_width() -> None:
    small, big = UNet(base_filters=4), UNet(base_filters=8)
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in big.parameters())
    assert 3.5 < n_big / n_small < 4.1  # conv weights scale with width squared
    assert UNet().inc[0].out_channels == 32


def test_save_load_round_trip(tmp_path) -> None:
    model = UNet(base_filters=4).eval()
    path = tmp_path / "m.pt"
    checkpoint.save_atomic({"model": model.state_dict(), "config": {"base_filters": 4, "image_size": 64}}, path)
    loaded, config = checkpoint.load_model(path)
    x = torch.randn(1, 3, 40, 40)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert config["image_size"] == 64
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_load_refuses_pickled_code(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "config": {}}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint.load(path)


def test_load_names_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoint.load(tmp_path / "nope.pt")


def test_refused_checkpoint_never_advises_the_unsafe_load(tmp_path) -> None:
    """torch's own message suggests retrying with weights_only=False; ours must not pass that on."""
    import os

    import pytest

    from segmenter import checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(), "config": {}}, path)
    with pytest.raises(ValueError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert str(path) in message and "could run code" in message and "system" in message
    assert "weights_only` set to `False`" not in message and "will likely succeed" not in message


def test_folding_batchnorm_keeps_the_function_and_the_original() -> None:
    """Inference folds BN into the convolutions; the caller's (training) model must stay as it was."""
    torch.manual_seed(0)
    model = UNet(base_filters=4)
    for m in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.train()
    folded = fold_batchnorm(model)
    assert model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 37, 53)
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
