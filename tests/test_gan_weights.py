"""Generator files: reference .pth import with inferred architecture, clear mismatch errors, no unpickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.engines.gan.checkpoint import latest_checkpoint, save_checkpoint
from core.engines.gan.networks import GeneratorSpec, init_weights
from core.engines.gan.translate import Translator
from core.engines.gan.weights import ArchitectureMismatch, import_generator, load_generator, read_state_dict
from core.errors import JobFailure, UserError
from core.kinds import gan as kinds
from tests.gan_support import noise_image

pytestmark = pytest.mark.usefixtures("single_thread")


def _reference_file(path: Path, netG: str = "resnet_9blocks", **kw) -> tuple[torch.nn.Module, GeneratorSpec]:
    """What the reference's ``save_networks`` writes: ``torch.save(net.state_dict(), 'latest_net_G_A.pth')``."""
    spec = GeneratorSpec.from_name(netG, **kw)
    net = init_weights(spec.build(), generator=torch.Generator().manual_seed(1))
    torch.save(net.state_dict(), path)
    return net, spec


def test_import_reference_resnet_infers_everything(tmp_path: Path) -> None:
    src = tmp_path / "latest_net_G_A.pth"
    net, spec = _reference_file(src, "resnet_9blocks", ngf=64, norm="instance", dropout=True)
    meta = import_generator(src, tmp_path / "model", {})
    gen = meta["generators"]["AtoB"]
    assert gen["file"] == "G_A.safetensors"
    assert gen["spec"] == spec.to_dict()
    assert (gen["spec"]["netG"], gen["spec"]["ngf"], gen["spec"]["norm"], gen["spec"]["dropout"]) == \
        ("resnet_9blocks", 64, "instance", True)
    assert json.loads((tmp_path / "model" / "meta.json").read_text()) == meta
    # the imported copy computes exactly what the original does
    loaded, loaded_spec, direction = load_generator(tmp_path / "model")
    assert direction == "AtoB" and loaded_spec == spec
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.eval()(x), net.eval()(x))


def test_g_b_files_are_labelled_b_to_a_and_unet_batch_is_inferred(tmp_path: Path) -> None:
    src = tmp_path / "latest_net_G_B.pth"
    _reference_file(src, "unet_256", ngf=8, norm="batch")
    meta = import_generator(src, tmp_path / "model", {"name": "maps"})
    assert list(meta["generators"]) == ["BtoA"]
    spec = meta["generators"]["BtoA"]["spec"]
    assert (spec["netG"], spec["norm"], spec["ngf"]) == ("unet_256", "batch", 8)
    assert meta["options"]["name"] == "maps" and meta["notes"]  # says U-Net dropout is not visible in files


def test_dropout_mismatch_says_what_to_do(tmp_path: Path) -> None:
    src = tmp_path / "latest_net_G_A.pth"
    _reference_file(src, "resnet_6blocks", ngf=8, dropout=True)
    with pytest.raises(ArchitectureMismatch) as err:
        import_generator(src, tmp_path / "model", {"dropout": False})
    assert "checkpoint has dropout layers" in str(err.value) and "--dropout" in str(err.value)
    assert err.value.field == "file"
    src2 = tmp_path / "plain.pth"
    _reference_file(src2, "resnet_6blocks", ngf=8, dropout=False)
    with pytest.raises(ArchitectureMismatch, match="checkpoint has no dropout layers"):
        load_generator(src2, overrides={"dropout": True})


def test_other_mismatches_name_expected_and_found(tmp_path: Path) -> None:
    src = tmp_path / "g.pth"
    _reference_file(src, "resnet_9blocks", ngf=8)
    with pytest.raises(ArchitectureMismatch, match="expected a resnet_6blocks generator, but the file holds "
                                                  r"resnet_9blocks \(9 residual blocks"):
        import_generator(src, tmp_path / "m1", {"netG": "resnet_6blocks"})
    with pytest.raises(ArchitectureMismatch, match="expected batch norm, but the file uses instance norm"):
        import_generator(src, tmp_path / "m2", {"norm": "batch"})
    with pytest.raises(ArchitectureMismatch, match="expected 64 filters .* but the file has 8"):
        import_generator(src, tmp_path / "m3", {"ngf": 64})
    assert not (tmp_path / "m1").exists()


def test_legacy_files_load(tmp_path: Path) -> None:
    """DataParallel "module." prefixes and InstanceNorm running stats of PyTorch < 0.4 are tolerated."""
    spec = GeneratorSpec.from_name("resnet_6blocks", ngf=8)
    sd = init_weights(spec.build()).state_dict()
    legacy = {f"module.{k}": v for k, v in sd.items()}
    legacy["module.model.2.running_mean"] = torch.zeros(8)
    legacy["module.model.2.running_var"] = torch.ones(8)
    torch.save(legacy, tmp_path / "old.pth")
    net, found, _ = load_generator(tmp_path / "old.pth")
    assert found == spec


def test_not_a_generator(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="not a CycleGAN/pix2pix generator"):
        import_generator(tmp_path / "x.pth", tmp_path / "m", {})
    (tmp_path / "y.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="safetensors"):
        read_state_dict(tmp_path / "y.safetensors")


class _Exploit:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "latest_net_G_A.pth"
    torch.save({"model.1.weight": _Exploit(marker)}, bad)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        import_generator(bad, tmp_path / "model", {})
    with pytest.raises(UserError):
        load_generator(bad)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(UserError):
        read_state_dict(raw)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "checkpoints"
    save_checkpoint(ckpt_dir, 5, {"iteration": 5, "payload": torch.zeros(1)})
    (ckpt_dir / "ckpt_000000009.pt").write_bytes(pickle.dumps({"iteration": _Exploit(marker)}))
    path, state = latest_checkpoint(ckpt_dir)  # the planted file is skipped, the good one is used
    assert path.name == "ckpt_000000005.pt" and state["iteration"] == 5
    (ckpt_dir / "ckpt_000000005.pt").unlink()
    with pytest.raises(JobFailure, match="cannot be read safely"):
        latest_checkpoint(ckpt_dir)
    assert not marker.exists()


def test_import_schema_validates_options(tmp_path: Path) -> None:
    src = tmp_path / "latest_net_G.pth"
    _reference_file(src, "resnet_6blocks", ngf=8)
    with pytest.raises(UserError) as err:
        kinds.import_generator(src, tmp_path / "m", {"netG": "resnet_12blocks"})
    assert err.value.field == "netG"
    meta = kinds.import_generator(src, tmp_path / "m", {"direction": "BtoA", "dropout": None})
    assert list(meta["generators"]) == ["BtoA"] and meta["family"] == "imported"


def test_safetensors_file_translates_like_the_model_dir(tmp_path: Path) -> None:
    src = tmp_path / "g.pth"
    _reference_file(src, "resnet_6blocks", ngf=8)
    import_generator(src, tmp_path / "model", {})
    img = noise_image(20, 12)
    def translate(path: Path) -> Image.Image:
        return Translator(*load_generator(path)[:2], device="cpu", amp="fp32").translate([img])[0]

    a, b = translate(tmp_path / "model"), translate(tmp_path / "model" / "G_A.safetensors")
    assert a.tobytes() == b.tobytes()
    with pytest.raises(UserError, match="only AtoB"):
        load_generator(tmp_path / "model", "BtoA")


def test_a_hostile_pickle_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    """The web process must not pay torch's ~500 MB import to refuse a pickle that calls print()."""
    import subprocess
    import sys

    from tests.gan_support import REPO_ROOT

    code = """
import pickle, sys
from pathlib import Path
class Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))
p = Path(sys.argv[1]) / "G_A.pth"
p.write_bytes(pickle.dumps({"model.1.weight": Boom()}))
from core.errors import UserError
from core.kinds.gan import import_generator
try:
    import_generator(p, p.parent / "model", {})
except UserError as e:
    print("refused:", e.field, e.status, "builtins.print" in str(e), "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "refused: file 422 True False", out
