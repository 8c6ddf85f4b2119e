"""The GAN commands: options from the kind schemas, and the ``--json`` contract (last stdout line)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from atelier import cli_gan
from core.settings import Settings
from tests.gan_support import noise_image, tiny_paired_dir, tiny_unpaired_dir

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--size", "24", "--load-size", "28", "--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks",
        "--checkpoint-every", "2"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], resolve=None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="atelier")
    cli_gan.add_parsers(parser.add_subparsers(dest="command", required=True), resolve_model=resolve)
    args = parser.parse_args(argv)
    code = args.func(args, Settings())
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_cyclegan_train_json_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_unpaired_dir(tmp_path / "data", short_side=32)
    argv = ["cyclegan", "train", "--a", str(data / "trainA"), "--b", str(data / "trainB"), "-o", str(tmp_path / "out"),
            "--iterations", "3", "--json", *TINY]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = last_json(out)
    assert summary["iterations"] == 3 and summary["it_per_s"] > 0 and summary["seconds"] > 0
    assert set(summary["losses"]) == {"D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"}
    assert summary["resumed_from"] is None and summary["precision"] in ("bf16", "fp32")
    model = Path(summary["model_dir"])
    assert sorted(p.name for p in model.iterdir()) == ["G_A.safetensors", "G_B.safetensors", "meta.json"]
    assert Image.open(summary["samples"]).size[1] > 0
    assert "[3/3]" in err  # progress goes to stderr, stdout stays machine-readable

    # the same command with more iterations continues from the checkpoint
    code, out, err = run_cli([a if a != "3" else "5" for a in argv], capsys)
    assert code == 0, err
    assert last_json(out)["resumed_from"] == 3 and last_json(out)["iterations"] == 5

    # translate with the trained model directory, both directions, one output per input
    inputs = [tmp_path / "x.png", tmp_path / "y.jpg"]
    noise_image(37, 53, 1).save(inputs[0])
    noise_image(20, 16, 2).save(inputs[1])
    for direction in ("AtoB", "BtoA"):
        code, out, err = run_cli(["translate", "--model", str(model), "--direction", direction, *map(str, inputs),
                                  "-o", str(tmp_path / direction), "--json"], capsys)
        assert code == 0, err
        result = last_json(out)
        assert result["images"] == 2 and result["direction"] == direction and result["images_per_s"] > 0
        assert [Image.open(p).size for p in result["outputs"]] == [(37, 53), (20, 16)]
        assert sorted(p.name for p in (tmp_path / direction).iterdir()) == ["x.png", "y.png"]


def test_pix2pix_train_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_paired_dir(tmp_path / "data", short_side=32)
    code, out, err = run_cli(["pix2pix", "train", "--a", str(data / "A"), "--b", str(data / "B"),
                              "-o", str(tmp_path / "out"), "--iterations", "2", "--json", "--direction", "BtoA",
                              *TINY], capsys)
    assert code == 0, err
    summary = last_json(out)
    assert summary["iterations"] == 2 and set(summary["losses"]) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    meta = json.loads((Path(summary["model_dir"]) / "meta.json").read_text())
    assert meta["family"] == "pix2pix" and list(meta["generators"]) == ["BtoA"]
    assert meta["options"]["netG"] == "resnet_6blocks" and meta["options"]["dropout"] is True


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_unpaired_dir(tmp_path / "data", short_side=32)
    code, out, err = run_cli(["cyclegan", "train", "--a", str(data / "trainA"), "--b", str(data / "trainB"),
                              "-o", str(tmp_path / "o"), "--iterations", "2", "--epochs", "1", *TINY], capsys)
    assert code == 1 and "iterations or epochs, not both" in err
    code, out, err = run_cli(["translate", "--model", "no-such-id", str(data / "trainA" / "a000.png"),
                              "-o", str(tmp_path / "t")], capsys)
    assert code == 1 and "model ids are looked up" in err
    resolved = []
    code, out, err = run_cli(["translate", "--model", "abc", str(data / "trainA" / "a000.png"),
                              "-o", str(tmp_path / "t")],
                             capsys, resolve=lambda mid, settings: resolved.append(mid) or tmp_path / "missing")
    assert resolved == ["abc"] and code == 1


def test_translate_bare_reference_file_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from core.engines.gan.networks import GeneratorSpec

    torch.save(GeneratorSpec.from_name("resnet_6blocks", ngf=8, dropout=True).build().state_dict(),
               tmp_path / "latest_net_G_A.pth")
    img = tmp_path / "in.png"
    noise_image(30, 30).save(img)
    code, out, err = run_cli(["translate", "--model", str(tmp_path / "latest_net_G_A.pth"), "--no-dropout",
                              str(img), "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and "checkpoint has dropout layers" in err and "--dropout" in err
    code, out, err = run_cli(["translate", "--model", str(tmp_path / "latest_net_G_A.pth"), "--dropout",
                              "--netG", "resnet_6blocks", str(img), "-o", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["generator"] == "resnet_6blocks"
