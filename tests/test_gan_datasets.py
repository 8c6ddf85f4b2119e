"""Dataset uploads: canonical layouts, zip-slip and zip-bomb guards, rejected files reported, demo builder."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import IngestLimits, build_demo_dataset, demo_grade, ingest_dataset
from core.engines.gan.data import paired_files, unpaired_files
from core.errors import UserError
from core.settings import Settings
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


# -- bounded ingest: one member in memory, every member's ratio, member cap, downscaling ---------------
def zeros_zip(n: int = 1000, size: int = 1 << 20, folder: str = "trainA") -> bytes:
    """``n`` deflated members of ``size`` zero bytes each (the reported attack: 1,000 x 1 MiB in 1.1 MB).
    Built by hand from one deflate stream: zipfile would deflate 1 GiB of zeros, about 2 s."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp = co.compress(bytes(size)) + co.flush()
    crc, date = zlib.crc32(bytes(size)), (1 << 5) | 1  # 1980-01-01
    out, central = io.BytesIO(), io.BytesIO()
    for i in range(n):
        name = f"{folder}/{i}.png".encode()
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, date, crc, len(comp), size, len(name), 0))
        out.write(name + comp)
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, date, crc, len(comp), size,
                                  len(name), 0, 0, 0, 0, 0, offset) + name)
    cd, cd_offset = central.getvalue(), out.tell()
    out.write(cd + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(cd), cd_offset, 0))
    return out.getvalue()


def traced_peak(fn) -> int:  # type: ignore[no-untyped-def]
    """Peak bytes allocated (Python-level, as tracemalloc sees them) while ``fn()`` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_of_zeros_is_refused_without_unpacking_it(tmp_path: Path) -> None:
    bomb = zeros_zip()
    assert len(bomb) < 2 << 20 and len(zipfile.ZipFile(io.BytesIO(bomb)).infolist()) == 1000
    caught: list[UserError] = []

    def ingest() -> None:
        with pytest.raises(UserError) as err:
            ingest_dataset(bomb, tmp_path / "out" / "ds", "unpaired")
        caught.append(err.value)

    peak = traced_peak(ingest)
    err = caught[0]
    assert err.status == 413 and err.field == "file"
    assert "the limit is 100 to 1" in err.message and "zip bomb" in err.message
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB; holding the members would take 1,000 MiB"
    assert not any((tmp_path / "out").iterdir())  # no staging directory, no member files left behind


def test_members_are_streamed_one_at_a_time(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    data = make_zip({f"trainA/{i}.png": noise for i in range(64)} | {"trainB/b.png": png()})  # stored: ratio 1
    caught: list[UserError] = []

    def ingest() -> None:
        with pytest.raises(UserError) as err:
            ingest_dataset(data, tmp_path / "out" / "ds", "unpaired")
        caught.append(err.value)

    peak = traced_peak(ingest)
    assert caught[0].status == 422 and "domain A" in caught[0].message  # all 64 read, none an image
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB for 64 members of 1 MiB"
    assert not any((tmp_path / "out").iterdir())


def test_many_small_members_are_refused_by_the_whole_archive_ratio(tmp_path: Path) -> None:
    data = zeros_zip(40, 60 << 10)  # each under the per-member floor, 2.3 MiB from a few KiB in all
    limits = IngestLimits(archive_ratio_min_bytes=1 << 20)
    with pytest.raises(UserError) as err:
        ingest_dataset(data, tmp_path / "ds", "unpaired", limits)
    assert err.value.status == 413 and "as a whole" in err.value.message and "limit is 100 to 1" in err.value.message
    ok = make_zip({"A/a.png": png(), "B/b.png": png(seed=1), "A/flat.bmp": bytes(60 << 10)},
                  compression=zipfile.ZIP_DEFLATED)  # a tiny oddly compressible member is merely not an image
    report = ingest_dataset(ok, tmp_path / "ds2", "unpaired")
    assert report["counts"] == {"A": 1, "B": 1} and "A/flat.bmp" in reasons(report)


def test_member_count_cap_comes_from_settings(tmp_path: Path) -> None:
    limits = IngestLimits.from_settings(Settings(dataset_max_files=5, dataset_max_side=300, max_image_pixels=10**6))
    assert (limits.max_members, limits.max_side, limits.max_pixels) == (5, 300, 10**6)
    assert IngestLimits.from_settings(Settings()).max_members == 20_000
    six = {f"A/{i}.png": png(seed=i) for i in range(3)} | {f"B/{i}.png": png(seed=9 + i) for i in range(3)}
    with pytest.raises(UserError) as err:
        ingest_dataset(make_zip(six), tmp_path / "ds", "unpaired", limits)
    assert err.value.status == 413 and err.value.field == "file"
    assert "6 members; the limit is 5 files" in err.value.message
    with pytest.raises(UserError, match="6 files; the limit is 5 files"):
        ingest_dataset(list(six.items()), tmp_path / "ds", "unpaired", limits)
    with pytest.raises(UserError, match=r"inner.zip has 2 members, 6 files in all; the limit is 5"):
        ingest_dataset([*list(six.items())[:3], ("inner.zip", make_zip({"B/x.png": png(), "B/y.png": png()}))],
                       tmp_path / "ds", "unpaired", limits)
    report = ingest_dataset(list(six.items())[:5], tmp_path / "ds", "unpaired", limits)
    assert report["counts"] == {"A": 3, "B": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_member_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_zip({"A/a.png": png(), "A/liar.png": bytes(300 << 10), "B/b.png": png(seed=1)},
                              compression=zipfile.ZIP_DEFLATED))
    local = data.find(b"PK\x03\x04", data.find(b"PK\x03\x04") + 1)  # the second member's header
    central = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 1)
    struct.pack_into("<L", data, local + 22, 100)  # declared uncompressed size: 100 bytes, under every floor
    struct.pack_into("<L", data, central + 24, 100)
    assert zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("A/liar.png").file_size == 100
    with pytest.raises(UserError) as err:
        ingest_dataset(bytes(data), tmp_path / "out" / "ds", "unpaired")
    assert err.value.status == 413 and err.value.field == "file"
    assert "A/liar.png" in err.value.message and "more than the 100 bytes it declares" in err.value.message
    assert not any((tmp_path / "out").iterdir())


def jpeg(w: int, h: int, seed: int = 0) -> bytes:
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_large_images_are_downscaled_small_ones_kept(tmp_path: Path) -> None:
    limits = IngestLimits.from_settings(Settings(dataset_max_side=128))
    small, x_png = png(100, 80, seed=1), png(90, 70, seed=2)
    data = make_zip({"trainA/big.png": png(300, 200), "trainA/small.png": small,
                     "trainA/x.jpg": jpeg(1200, 900), "trainA/x.png": x_png,  # same stem once x.jpg is a PNG
                     "trainB/tall.jpg": jpeg(400, 640, seed=3), "trainB/thin.png": png(1000, 70, seed=4)})
    report = ingest_dataset(data, tmp_path / "ds", "unpaired", limits)
    root = tmp_path / "ds"
    sizes = {p.relative_to(root).as_posix(): Image.open(p).size for p in root.rglob("*.*") if p.suffix != ".json"}
    assert sizes == {"trainA/big.png": (128, 85), "trainA/small.png": (100, 80), "trainA/x.png": (128, 96),
                     "trainA/x-2.png": (90, 70), "trainB/tall.png": (80, 128)}
    assert Image.open(root / "trainA" / "x.png").format == "PNG"  # re-encoded, not renamed
    assert (root / "trainA" / "small.png").read_bytes() == small and (root / "trainA" / "x-2.png").read_bytes() == x_png
    assert report["downscaled"] == 3 and report["counts"] == {"A": 4, "B": 1}
    assert report["image_size"] == {"min": [80, 70], "max": [128, 128]}
    assert "1000x70 pixels, 128x9 once downscaled to 128" in reasons(report)["trainB/thin.png"]
    assert not (root / ".members").exists()


def test_paired_images_are_downscaled_per_half(tmp_path: Path) -> None:
    limits = IngestLimits(max_side=150)
    ab = Image.new("RGB", (600, 200), (0, 0, 255))
    ab.paste(Image.new("RGB", (300, 200), (255, 0, 0)), (0, 0))
    buf = io.BytesIO()
    ab.save(buf, "JPEG", quality=95)
    report = ingest_dataset([("train/x.jpg", buf.getvalue()), ("train/ok.png", png(200, 64))],
                            tmp_path / "sbs", "paired", limits)
    assert report["source"] == "side_by_side" and report["counts"] == {"pairs": 2} and report["downscaled"] == 1
    a, b = Image.open(tmp_path / "sbs" / "A" / "train_x.png"), Image.open(tmp_path / "sbs" / "B" / "train_x.png")
    assert a.size == b.size == (150, 100)
    assert np.abs(np.asarray(a, np.int16)[:, 2:-2] - (255, 0, 0)).max() < 12  # no blue bleeding in from B
    assert np.abs(np.asarray(b, np.int16)[:, 2:-2] - (0, 0, 255)).max() < 12
    assert Image.open(tmp_path / "sbs" / "A" / "train_ok.png").size == (100, 64)

    folders = make_zip({"A/1.png": png(300, 200, 1), "B/1.jpg": jpeg(300, 200, 2),
                        "A/2.png": png(80, 80, 3), "B/2.png": png(80, 80, 4)})
    report = ingest_dataset(folders, tmp_path / "pf", "paired", limits)
    assert report["counts"] == {"pairs": 2} and report["downscaled"] == 2
    pairs = paired_files(tmp_path / "pf")
    assert [(p[0].name, p[1].name) for p in pairs] == [("1.png", "1.png"), ("2.png", "2.png")]
    assert [Image.open(p).size for p in pairs[0]] == [(150, 100), (150, 100)]


def test_a_pair_whose_partner_is_damaged_leaves_no_file(tmp_path: Path) -> None:
    truncated = png(80, 80, 5)[:300]  # the header (and so the size) reads, the pixels do not
    data = make_zip({"A/1.png": png(80, 80, 1), "B/1.png": png(80, 80, 2),
                     "A/2.png": png(80, 80, 3), "B/2.png": truncated})
    report = ingest_dataset(data, tmp_path / "ds", "paired")
    assert report["counts"] == {"pairs": 1}
    assert "its partner is unreadable" in reasons(report)["A/2.png"]
    assert sorted(p.name for p in (tmp_path / "ds" / "A").iterdir()) == ["1.png"]
