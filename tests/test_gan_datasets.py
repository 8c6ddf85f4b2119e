"""Dataset uploads: canonical layouts, zip-slip and zip-bomb guards, rejected files reported, demo builder."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import IngestLimits, build_demo_dataset, demo_grade, ingest_dataset
from core.engines.gan.data import paired_files, unpaired_files
from core.errors import UserError
from tests.gan_support import photo_paths


def png(w: int = 80, h: int = 70, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None,
             compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            z.writestr(info, target)
    return buf.getvalue()


def reasons(report: dict) -> dict[str, str]:
    return {r["name"]: r["reason"] for r in report["rejected"]}


def test_unpaired_zip_with_top_folder(tmp_path: Path) -> None:
    data = make_zip({
        "horse2zebra/trainA/h1.png": png(seed=1), "horse2zebra/trainA/sub/h2.jpg": png(seed=2),
        "horse2zebra/trainB/z1.png": png(seed=3),
        "horse2zebra/testA/t.png": png(seed=4), "horse2zebra/notes.txt": b"hi",
        "__MACOSX/horse2zebra/._h1.png": b"junk",
    })
    report = ingest_dataset(data, tmp_path / "ds", "unpaired")
    assert report["layout"] == "unpaired" and report["counts"] == {"A": 2, "B": 1}
    assert sorted(p.name for p in (tmp_path / "ds" / "trainA").iterdir()) == ["h1.png", "sub_h2.jpg"]
    r = reasons(report)
    assert "test/validation" in r["horse2zebra/testA/t.png"] and "not an image" in r["horse2zebra/notes.txt"]
    assert not any("MACOSX" in n for n in r)
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text()) == report
    a, b = unpaired_files(tmp_path / "ds")  # what training reads
    assert len(a) == 2 and len(b) == 1


def test_zip_slip_and_symlinks_are_skipped(tmp_path: Path) -> None:
    data = make_zip({"A/ok.png": png(), "B/ok.png": png(seed=1), "../../evil.png": png(seed=2),
                     "/etc/evil.png": png(seed=3), "A/../../evil2.png": png(seed=4), "C:/win.png": png(seed=5)},
                    symlinks={"A/link.png": "/etc/passwd"})
    report = ingest_dataset(data, tmp_path / "ds", "unpaired")
    r = reasons(report)
    for name in ("../../evil.png", "/etc/evil.png", "A/../../evil2.png", "C:/win.png"):
        assert "unsafe path" in r[name]
    assert "symbolic link" in r["A/link.png"]
    assert report["counts"] == {"A": 1, "B": 1}
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"ds/dataset.json", "ds/trainA/ok.png", "ds/trainB/ok.png"}


def test_zip_bombs_are_refused(tmp_path: Path) -> None:
    bomb = make_zip({"A/a.bmp": b"\0" * (8 << 20), "B/b.png": png()}, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(UserError) as err:
        ingest_dataset(bomb, tmp_path / "ds", "unpaired")
    assert err.value.status == 413 and err.value.field == "file" and "zip bomb" in str(err.value)
    many = make_zip({f"A/{i}.png": b"x" for i in range(30)})
    with pytest.raises(UserError, match="30 members; the limit is 20"):
        ingest_dataset(many, tmp_path / "ds2", "unpaired", IngestLimits(max_members=20))
    big = make_zip({"A/a.png": png(), "B/b.png": png(seed=1)})
    with pytest.raises(UserError, match="unpacks to"):
        ingest_dataset(big, tmp_path / "ds3", "unpaired", IngestLimits(max_total_bytes=1000))
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_unreadable_and_small_images_are_reported(tmp_path: Path) -> None:
    truncated = png(seed=9)[:200]
    data = make_zip({"A/good.png": png(), "A/bad.png": b"not an image", "A/cut.png": truncated,
                     "A/tiny.png": png(20, 20), "B/good.png": png(seed=1)})
    report = ingest_dataset(data, tmp_path / "ds", "unpaired")
    r = reasons(report)
    assert "not a readable image" in r["A/bad.png"]
    assert "damaged or truncated" in r["A/cut.png"] or "not a readable image" in r["A/cut.png"]
    assert "at least 64" in r["A/tiny.png"]
    assert report["counts"] == {"A": 1, "B": 1} and report["rejected_count"] == 3


def test_damaged_archive_members_are_reported(tmp_path: Path) -> None:
    data = bytearray(make_zip({"A/a.png": png(), "B/b.png": png(seed=1), "B/c.png": png(seed=2)}))
    at = data.find(b"B/c.png") + len("B/c.png") + 50  # inside c.png's stored bytes: its CRC no longer matches
    data[at:at + 20] = bytes(20)
    report = ingest_dataset(bytes(data), tmp_path / "ds", "unpaired")
    assert report["counts"] == {"A": 1, "B": 1}
    assert reasons(report) == {"B/c.png": "damaged archive member (BadZipFile)"}


def test_nothing_usable_is_a_user_error(tmp_path: Path) -> None:
    data = make_zip({"A/good.png": png(), "B/bad.png": b"nope"})
    with pytest.raises(UserError) as err:
        ingest_dataset(data, tmp_path / "ds", "unpaired")
    assert err.value.field == "file" and "domain B" in str(err.value) and "B/bad.png" in str(err.value)
    with pytest.raises(UserError) as err:
        ingest_dataset(b"PK not really a zip", tmp_path / "ds", "unpaired")
    assert err.value.status == 415
    assert not (tmp_path / "ds").exists()


def test_paired_folders_report_incomplete_pairs(tmp_path: Path) -> None:
    data = make_zip({"A/1.png": png(seed=1), "B/1.jpg": png(seed=2),  # matched by name without extension
                     "A/2.png": png(seed=3),                           # no partner
                     "B/3.png": png(seed=4),                           # no partner
                     "A/4.png": png(80, 80, 5), "B/4.png": png(90, 80, 6)})  # sizes differ
    report = ingest_dataset(data, tmp_path / "ds", "paired")
    assert report["counts"] == {"pairs": 1} and report["source"] == "folders"
    r = reasons(report)
    assert "no image with the same name in B/" in r["A/2.png"]
    assert "no image with the same name in A/" in r["B/3.png"]
    assert "same size" in r["A/4.png"]
    assert [p.stem for p in paired_files(tmp_path / "ds")[0]] == ["1", "1"]


def test_paired_side_by_side_is_split(tmp_path: Path) -> None:
    left = Image.new("RGB", (100, 80), (255, 0, 0))
    ab = Image.new("RGB", (200, 80), (0, 0, 255))
    ab.paste(left, (0, 0))
    buf = io.BytesIO()
    ab.save(buf, "PNG")
    report = ingest_dataset([("train/x.png", buf.getvalue()), ("train/narrow.png", png(100, 80))],
                            tmp_path / "ds", "paired")
    assert report["counts"] == {"pairs": 1} and report["source"] == "side_by_side"
    assert "each half is 50x80" in reasons(report)["train/narrow.png"]
    a = Image.open(tmp_path / "ds" / "A" / "train_x.png")
    b = Image.open(tmp_path / "ds" / "B" / "train_x.png")
    assert a.size == b.size == (100, 80)
    assert a.getpixel((5, 5)) == (255, 0, 0) and b.getpixel((5, 5)) == (0, 0, 255)


def test_file_list_uploads_and_nested_zips(tmp_path: Path) -> None:
    inner = make_zip({"trainB/z.png": png(seed=2)})
    report = ingest_dataset([("trainA/a.png", png(seed=1)), ("more.zip", inner), ("../x.png", png())],
                            tmp_path / "ds", "unpaired")
    assert report["counts"] == {"A": 1, "B": 1} and "unsafe path" in reasons(report)["../x.png"]
    with pytest.raises(UserError) as err:
        ingest_dataset([], tmp_path / "ds2", "sideways")
    assert err.value.field == "layout"


@pytest.mark.parametrize("layout", ["unpaired", "paired"])
def test_demo_dataset(tmp_path: Path, layout: str) -> None:
    report = build_demo_dataset(photo_paths(), tmp_path / "demo", layout, size=64, crops_per_image=2)
    n = 2 * len(photo_paths())
    assert report["counts"] == ({"A": n, "B": n} if layout == "unpaired" else {"pairs": n})
    if layout == "paired":
        a, b = paired_files(tmp_path / "demo")[0]
        assert np.array_equal(np.asarray(demo_grade(Image.open(a))), np.asarray(Image.open(b).convert("RGB")))
    again = build_demo_dataset(photo_paths(), tmp_path / "demo2", layout, size=64, crops_per_image=2)
    assert again == report  # deterministic
