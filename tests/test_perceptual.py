"""LPIPS (simvq.models.perceptual): the formula by hand on the same random backbone, the lpips
package's own forward on that backbone, torchvision-format weights by key, frozen weights, refusals."""

import sys
import types

import pytest
import torch
from torch import nn

from simvq.models.perceptual import EPS, LPIPS, NETS, SCALE, SHIFT, alexnet_features, lpips_head_path, vgg16_features

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    """No torchvision cache: a backbone must come from a path given in the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def vgg():
    return LPIPS("vgg", random_weights_for_testing=True)


def images(seed, shape=(2, 3, 32, 32)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def by_hand(model: LPIPS, x, y):
    """The LPIPS formula written out: [0, 1] -> [-1, 1] -> (v - shift) / scale -> backbone taps ->
    unit-normalise over channels -> squared difference -> 1x1 head -> spatial mean -> sum over taps."""
    shift, scale = torch.tensor(SHIFT).view(1, 3, 1, 1), torch.tensor(SCALE).view(1, 3, 1, 1)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    hx, hy = ((2 * x - 1) - shift) / scale, ((2 * y - 1) - shift) / scale
    taps = NETS[model.net]["taps"]
    k = 0
    for index, layer in enumerate(model.features):
        hx, hy = layer(hx.clone()), layer(hy.clone())
        if index in taps:
            fx, fy = hx.double(), hy.double()
            nx = fx / (torch.sqrt((fx**2).sum(1, keepdim=True)) + EPS)
            ny = fy / (torch.sqrt((fy**2).sum(1, keepdim=True)) + EPS)
            w = model.heads[k].weight.double().view(1, -1, 1, 1)
            total += ((nx - ny) ** 2 * w).sum(1).mean(dim=(1, 2))
            k += 1
    assert k == 5
    return total


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_value_is_the_lpips_formula_by_hand(net, vgg):
    model = vgg if net == "vgg" else LPIPS("alex", random_weights_for_testing=True)
    x, y = images(0, (2, 3, 40, 36)), images(1, (2, 3, 40, 36))
    with torch.no_grad():
        ours = model(x, y, reduction="none")
        expected = by_hand(model, x, y)
    assert ours.shape == (2,) and (ours > 0).all()
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(model(x, y), ours.mean())
        torch.testing.assert_close(model(x, y, reduction="sum"), ours.sum())
        # the random network is seeded: the [-1, 1] convention gives the same number on 2x - 1
        signed = LPIPS(net, random_weights_for_testing=True, input_range="[-1, 1]")
        torch.testing.assert_close(signed(2 * x - 1, 2 * y - 1, reduction="none"), ours)


def test_identical_images_give_zero(vgg):
    x = images(2)
    assert torch.equal(vgg(x, x.clone(), reduction="none"), torch.zeros(2))


def test_differentiable_in_the_input_with_frozen_weights(vgg):
    x, y = images(3).requires_grad_(True), images(4)
    vgg.train()  # a parent's .train() must not switch it out of eval
    assert not vgg.training and not any(m.training for m in vgg.modules())
    loss = vgg(x, y)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    # gradient descent on the input lowers the distance
    with torch.no_grad():
        assert vgg(x - 0.5 * x.grad / x.grad.norm(), y) < loss


def test_grayscale_is_repeated_to_rgb_and_sizes_are_checked(vgg):
    x, y = images(5, (1, 1, 16, 16)), images(6, (1, 1, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(vgg(x, y), vgg(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="at least 16x16"):
        vgg(images(0, (1, 3, 15, 20)), images(1, (1, 3, 15, 20)))
    with pytest.raises(ValueError, match="same shape"):
        vgg(images(0), images(1, (2, 3, 32, 16)))
    alex = LPIPS("alex", random_weights_for_testing=True)
    with torch.no_grad():
        assert alex(images(0, (1, 3, 31, 31)), images(1, (1, 3, 31, 31))).isfinite()
    with pytest.raises(ValueError, match="at least 31x31"):
        alex(images(0, (1, 3, 30, 64)), images(1, (1, 3, 30, 64)))


def test_refuses_without_backbone_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="set backbone_weights to a local copy of torchvision's vgg16-397923af.pth") as error:
        LPIPS("vgg")
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="set loss.perceptual_weights to .*alexnet-owt-7be5be79.pth"):
        LPIPS("alex", weights_key="loss.perceptual_weights")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LPIPS("vgg", backbone_weights=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="give no weight files"):
        LPIPS("vgg", backbone_weights=tmp_path / "x.pth", random_weights_for_testing=True)
    assert "RANDOM" in repr(LPIPS("alex", random_weights_for_testing=True))


def torchvision_state(features: nn.Sequential, seed: int) -> dict:
    """A torchvision-format state dict (features.* and classifier.*) of random tensors."""
    generator = torch.Generator().manual_seed(seed)
    state = {f"features.{k}": torch.randn(v.shape, generator=generator) * 0.05 for k, v in features.state_dict().items()}
    state["classifier.0.weight"], state["classifier.0.bias"] = torch.randn(8, 4), torch.randn(8)
    return state


def head_state(net: str, seed: int) -> dict:
    """lpips's head file layout: ``lin<k>.model.1.weight`` of shape (1, C, 1, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for k, c in enumerate(NETS[net]["channels"])}


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_torchvision_format_weights_load_by_key(net, tmp_path):
    features = vgg16_features() if net == "vgg" else alexnet_features()
    backbone, heads = torchvision_state(features, 1), head_state(net, 2)
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(heads, tmp_path / "heads.pth")
    model = LPIPS(net, backbone_weights=tmp_path / "backbone.pth", head_weights=tmp_path / "heads.pth")
    assert not model.random_weights and "pretrained" in repr(model)
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, backbone[f"features.{key}"])
    for k, head in enumerate(model.heads):
        assert torch.equal(head.weight, heads[f"lin{k}.model.1.weight"])
    # torchvision's cache folder is the default place for the backbone
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / NETS[net]["file"]
    cached.parent.mkdir(parents=True)
    torch.save(backbone, cached)
    again = LPIPS(net, head_weights=tmp_path / "heads.pth")
    assert all(torch.equal(a, b) for a, b in zip(again.features.state_dict().values(), model.features.state_dict().values()))


class NotTensors:
    pass


def test_refuses_files_that_are_not_plain_state_dicts(tmp_path):
    torch.save({"features.0.weight": NotTensors()}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        LPIPS("alex", backbone_weights=tmp_path / "pickled.pth", head_weights=tmp_path / "pickled.pth")
    wrong = torchvision_state(alexnet_features(), 0)
    torch.save(wrong, tmp_path / "alex.pth")
    torch.save(head_state("vgg", 0), tmp_path / "heads.pth")
    with pytest.raises(ValueError, match="is not torchvision's VGG16 state dict"):
        LPIPS("vgg", backbone_weights=tmp_path / "alex.pth", head_weights=tmp_path / "heads.pth")
    with pytest.raises(ValueError, match="expected shapes"):
        LPIPS("alex", backbone_weights=tmp_path / "alex.pth", head_weights=tmp_path / "heads.pth")


def test_left_out_of_a_holding_models_checkpoint():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = nn.Linear(3, 3)
            self.perceptual = LPIPS("alex", random_weights_for_testing=True)

    holder = Holder()
    state = holder.state_dict()
    assert sorted(state) == ["decoder.bias", "decoder.weight"]
    fresh = Holder()
    result = fresh.load_state_dict(state)  # strict: the LPIPS keys are not missing
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.decoder.weight, holder.decoder.weight)
    with pytest.raises(RuntimeError, match="decoder.bias"):  # other missing keys still count
        fresh.load_state_dict({"decoder.weight": state["decoder.weight"]})


@pytest.mark.skipif(lpips_head_path("vgg") is None, reason="the lpips package (pip install --no-deps lpips) is not installed")
def test_matches_the_lpips_package_on_the_same_backbone(monkeypatch, tmp_path):
    """lpips.LPIPS's own forward (its wheel's heads; torchvision stubbed by our backbone, which
    lpips slices by torchvision's indices) gives our number on [-1, 1] inputs."""
    ours = {net: LPIPS(net, backbone_weights=_save(tmp_path, net), head_weights=None) for net in ("vgg", "alex")}
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(
        vgg16=lambda pretrained=True: types.SimpleNamespace(features=_with_pool(ours["vgg"].features, nn.MaxPool2d(2, 2))),
        alexnet=lambda pretrained=True: types.SimpleNamespace(features=_with_pool(ours["alex"].features, nn.MaxPool2d(3, 2))),
        squeezenet1_1=None, resnet18=None,
    )
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake.models)
    for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    x, y = images(7, (3, 3, 64, 48)), images(8, (3, 3, 64, 48))
    for net, model in ours.items():
        reference = lpips.LPIPS(net=net, version="0.1", verbose=False)
        with torch.no_grad():
            expected = reference(2 * x - 1, 2 * y - 1).flatten()
            got = model(x, y, reduction="none")
        assert (expected > 0).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def _save(tmp_path, net):
    path = tmp_path / f"{net}.pth"
    torch.save(torchvision_state(vgg16_features() if net == "vgg" else alexnet_features(), 3), path)
    return path


def _with_pool(features: nn.Sequential, pool: nn.Module) -> nn.Sequential:
    """torchvision's full ``features`` (ours ends before the weightless final pool)."""
    return nn.Sequential(*features, pool)


def test_bf16_autocast_runs_the_features_in_bf16_and_the_distance_in_float32(vgg):
    x, y = images(9), images(10)
    with torch.no_grad():
        full = vgg(x, y, reduction="none")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = vgg(x, y, reduction="none")
    assert half.dtype == torch.float32 and not torch.equal(half, full)  # the backbone ran in bf16
    torch.testing.assert_close(half, full, rtol=0.05, atol=0)
