"""``atelier style-transfer``: the --json contract, --init PATH, --weights, and errors naming the option."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from atelier import cli_style_transfer
from tests.test_style_engine import content_image, reference_objective, style_image
from core.engines.style.options import StyleOptions


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def images(tmp_path: Path) -> dict[str, str]:
    paths = {"content": tmp_path / "content.png", "style": tmp_path / "style.jpg", "style2": tmp_path / "style2.png",
             "init": tmp_path / "init.png"}
    content_image().save(paths["content"])
    style_image(0).save(paths["style"], quality=95)
    style_image(1).save(paths["style2"])
    style_image(1, 30, 30).save(paths["init"])
    return {k: str(v) for k, v in paths.items()}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="atelier")
    cli_style_transfer.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["style-transfer", *argv])


def test_json_contract(images, tmp_path, capsys):
    out = tmp_path / "out.png"
    args = _parse([images["content"], images["style"], images["style2"], "-o", str(out), "--size", "40",
                   "--steps", "5", "--style-blend-weights", "1,3", "--style-layers", "relu1_1:2,relu2_1",
                   "--seed", "3", "--weights", "random", "--device", "cpu", "--json"])
    assert args.func(args, None) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    data = json.loads(stdout[-1])
    for key in ("seconds", "load_seconds", "steps", "loss", "content_loss", "style_loss", "trace"):
        assert key in data
    assert data["steps"] == 5 and len(data["trace"]) == 5
    assert all(len(e) == 2 and e[0] <= data["seconds"] for e in data["trace"])
    assert [e[0] for e in data["trace"]] == sorted(e[0] for e in data["trace"])
    img = Image.open(out)
    assert img.size == (40, 30) and data["size"] == [40, 30]
    opts = StyleOptions(size=40, style_blend_weights=(1.0, 3.0), style_layers=("relu1_1:2", "relu2_1"))
    styles = [Image.open(images["style"]).convert("RGB"), style_image(1)]  # the JPEG as decoded
    ref = reference_objective(img.convert("RGB"), content_image(), styles, opts)
    assert data["loss"] == pytest.approx(ref["loss"], rel=2e-4)


def test_init_path_and_random(images, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert cli_style_transfer.run(_parse([images["content"], images["style"], "-o", str(out), "--size", "40",
                                          "--steps", "1", "--init", images["init"], "--weights", "random",
                                          "--json"])) == 0
    init = Image.open(images["init"]).convert("RGB").resize((40, 30), Image.Resampling.BICUBIC)
    assert Image.open(out).convert("RGB").tobytes() == init.tobytes()  # one step: the result is the init
    assert cli_style_transfer.run(_parse([images["content"], images["style"], "-o", str(out), "--size", "32",
                                          "--steps", "1", "--init", "random", "--weights", "random"])) == 0


@pytest.mark.parametrize("extra,needle", [
    (["--content-weight", "-1"], "--content-weight"),
    (["--style-layers", "relu9_1"], "--style-layers"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--style-blend-weights", "1,2"], "--style-blend-weights"),
    (["--init", "/no/such.png"], "--init"),
    (["--weights", "/no/such.pth"], "--weights"),
    (["--schedule", "0.5:999"], "--schedule"),
])
def test_bad_input_names_the_option_and_exits_2(images, tmp_path, capsys, extra, needle):
    args = _parse([images["content"], images["style"], "-o", str(tmp_path / "o.png"), "--weights", "random",
                   "--steps", "3", "--size", "32", *extra])
    assert cli_style_transfer.run(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_bad_files_exit_2(images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    for argv, needle in (([str(broken), images["style"]], "CONTENT"), ([images["content"], "/no/style.png"], "STYLE")):
        assert cli_style_transfer.run(_parse([*argv, "-o", str(tmp_path / "o.png"), "--weights", "random"])) == 2
        assert needle in capsys.readouterr().err
    assert cli_style_transfer.run(_parse([images["content"], images["style"], "-o", str(tmp_path / "o.gifx"),
                                          "--weights", "random"])) == 2
    assert "-o/--output" in capsys.readouterr().err


def test_module_entry_point_prints_json_last(images, tmp_path):
    out = tmp_path / "m.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env = {k: v for k, v in env.items() if not k.startswith("ATELIER_")}
    proc = subprocess.run([sys.executable, "-m", "atelier.cli_style_transfer", images["content"], images["style"],
                           "-o", str(out), "--size", "32", "--steps", "3", "--weights", "random", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["steps"] == 3 and len(data["trace"]) == 3 and out.exists()
    assert "step 3/3" in proc.stderr
