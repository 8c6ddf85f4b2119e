"""VGG-19 features: layer names, the three weight sources, and the message when weights are missing.

No test touches the network: the ImageNet case runs with an empty TORCH_HOME and torch.hub's download
function replaced by one that fails the way an offline machine does.
"""

from __future__ import annotations

import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from core.engines import vgg
from core.errors import JobFailure


def tv_features() -> nn.Sequential:
    """torchvision's VGG-19 ``features`` without building the 120M-parameter classifier."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["E"])


@pytest.fixture(autouse=True)
def _fresh_caches():
    vgg._random_params.cache_clear()
    vgg._file_params.cache_clear()
    vgg._torchvision_params.cache_clear()
    yield
    vgg._torchvision_params.cache_clear()
    vgg._file_params.cache_clear()


def test_layer_names_follow_torchvision_features():
    features = tv_features()
    assert len(vgg.LAYER_NAMES) == len(features) == 37
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}
    for layer, module in zip(vgg.LAYERS, features):
        assert layer.kind == kinds[type(module)], layer.name
        if isinstance(module, nn.Conv2d):
            assert (module.in_channels, module.out_channels) == (layer.in_channels, layer.out_channels)
    assert vgg.LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert vgg.LAYER_NAMES[-1] == "pool5" and vgg.layer("relu4_2").index == 22


def test_random_weights_are_seeded_and_deterministic():
    a = [w.clone() for w, _ in vgg.load_conv_params("random", 4)]
    vgg._random_params.cache_clear()
    b = [w for w, _ in vgg.load_conv_params("random", 16)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # and independent of the depth asked for
    x = torch.rand(1, 3, 32, 32)
    m1 = vgg.load_vgg19("random", ["relu3_1"])
    vgg._random_params.cache_clear()
    m2 = vgg.load_vgg19("random", ["relu3_1"])
    assert torch.equal(m1(x, ["relu3_1"])["relu3_1"], m2(x, ["relu3_1"])["relu3_1"])


def test_runs_only_as_deep_as_needed():
    m = vgg.load_vgg19("random", ["relu2_1", "relu1_1"], device="cpu")
    assert m.upto == "relu2_1" and len(m.params) == 3
    with pytest.raises(ValueError):
        m(torch.rand(1, 3, 16, 16), ["relu3_1"])


def _reference_features(state: dict, upto: str, pooling: str = "max") -> nn.Sequential:
    features = tv_features()
    features.load_state_dict(state)
    for i, module in enumerate(features):
        if isinstance(module, nn.ReLU):
            features[i] = nn.ReLU(inplace=False)
        if isinstance(module, nn.MaxPool2d) and pooling == "avg":
            features[i] = nn.AvgPool2d(2, 2)
    return features[: vgg.layer(upto).index + 1].eval()


@pytest.mark.parametrize("layout,suffix,pooling", [("features", ".pth", "max"), ("bare", ".pth", "avg"),
                                                   ("features", ".safetensors", "max")])
def test_file_weights_load_a_torchvision_state_dict(tmp_path, layout, suffix, pooling):
    torch.manual_seed(3)
    state = tv_features().state_dict()  # keys "0.weight", ...
    path = tmp_path / f"vgg19{suffix}"
    saved = {f"features.{k}" if layout == "features" else k: v for k, v in state.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(saved, str(path))
    else:
        torch.save(saved, path)
    layers = ["conv1_2", "relu2_1", "pool3", "relu4_2"]
    model = vgg.load_vgg19(str(path), layers, pooling)
    ref = _reference_features(state, "relu4_2", pooling)
    x = torch.rand(1, 3, 40, 48)
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = model(x, layers)
        h, want = (x - mean) / std, {}
        for name, module in zip(vgg.LAYER_NAMES, ref):
            h = module(h)
            want[name] = h
    for name in layers:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)
    assert vgg.weights_status(str(path))[0]


def test_a_file_that_is_not_vgg19_fails_clearly(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, path)
    with pytest.raises(JobFailure, match="conv1_1.*expected"):
        vgg.load_vgg19(str(path), ["relu1_1"])
    short = tmp_path / "short.pth"
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, short)
    assert vgg.load_vgg19(str(short), ["relu1_1"]).upto == "relu1_1"  # enough for relu1_1
    with pytest.raises(JobFailure, match="only up to conv1_1.*need conv1_2"):
        vgg.load_vgg19(str(short), ["relu1_2"])
    with pytest.raises(JobFailure, match="does not exist"):
        vgg.load_vgg19(str(tmp_path / "missing.pth"), ["relu1_1"])


def test_missing_imagenet_weights_without_network_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    expected = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg.torchvision_cache_path() == expected
    ok, message = vgg.weights_status("")
    assert not ok and str(expected) in message and "ATELIER_VGG19_WEIGHTS" in message
    with pytest.raises(JobFailure) as err:
        vgg.load_vgg19("", ["relu1_1"])
    msg = str(err.value)
    assert str(expected) in msg
    assert "ATELIER_VGG19_WEIGHTS=/path/to/vgg19.pth" in msg and "ATELIER_VGG19_WEIGHTS=random" in msg
    assert "name resolution" in msg


def test_cached_imagenet_weights_are_found(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cache.parent.mkdir(parents=True)
    state = tv_features().state_dict()
    torch.save({f"features.{k}": v for k, v in state.items()}, cache)
    assert vgg.weights_status("")[0]
    model = vgg.load_vgg19("", ["relu1_1"])
    assert model.source == "imagenet"
    torch.testing.assert_close(model.params[0][0], state["0.weight"])


def test_weights_status_is_cheap_and_torch_free(tmp_path):
    import subprocess

    code = ("import sys; from core.engines.vgg import weights_status; "
            "print(weights_status('random')[0], weights_status('/nope.pth')[0]); assert 'torch' not in sys.modules")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                         env={"PATH": "/usr/bin:/bin", "TORCH_HOME": str(tmp_path), "PYTHONPATH": str(root)})
    assert out.stdout.split() == ["True", "False"]


def test_a_converted_stack_is_reused_until_the_weights_change(tmp_path):
    """Jobs in one worker share the converted stack (no per-job copy of the weights); a weights file
    written anew is read anew."""
    torch.manual_seed(4)
    path = tmp_path / "vgg19.pth"
    torch.save(tv_features().state_dict(), path)
    first = vgg.load_vgg19(str(path), ["relu2_1"])
    assert vgg.load_vgg19(str(path), ["relu2_1"]) is first
    assert vgg.load_vgg19(str(path), ["relu3_1"]) is not first  # another depth: another stack
    torch.manual_seed(5)
    torch.save(tv_features().state_dict(), path)
    import os
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = vgg.load_vgg19(str(path), ["relu2_1"])
    assert again is not first and not torch.equal(again.params[0][0], first.params[0][0])
