"""Datasets and models over the API: validated uploads with a report, the demo dataset, importing a
reference generator (never unpickling), listing and downloading."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import pytest
from PIL import Image

from core import resources
from core.services import Services
from tests.conftest import png_bytes
from tests.test_gan_datasets import zeros_zip


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload_dataset(client, payload: bytes, layout: str = "unpaired", name: str = "faces"):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/datasets", data={"layout": layout, "name": name,
                                                 "file": (io.BytesIO(payload), "set.zip")},
                       content_type="multipart/form-data")


def test_zip_dataset_is_validated_stored_and_listed(client, services: Services) -> None:
    entries = {f"trainA/a{i}.png": png_bytes(64, 64, (200, 50, 50)) for i in range(3)}
    entries |= {f"trainB/b{i}.png": png_bytes(64, 64, (50, 50, 200)) for i in range(2)}
    entries["trainB/broken.png"] = b"not an image"
    resp = upload_dataset(client, zip_of(entries))
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["meta"]["counts"] == {"A": 3, "B": 2}
    assert [r["name"] for r in body["meta"]["rejected"]] == ["trainB/broken.png"]
    with resources.local_copy(services, "datasets", body["id"]) as stored_dir:
        assert stored_dir.is_dir()
    listed = client.get("/api/v1/datasets").get_json()["datasets"]
    assert [d["id"] for d in listed] == [body["id"]]
    assert client.get(f"/api/v1/datasets/{body['id']}").get_json()["name"] == "faces"


@pytest.mark.parametrize(("payload", "layout", "status", "field"), [
    (zip_of({"../../evil.png": png_bytes(64, 64)}), "unpaired", 422, "file"),
    (b"this is not a zip", "unpaired", 415, "file"),
    (zip_of({"trainA/a.png": png_bytes(64, 64)}), "sideways", 422, "layout"),
])
def test_bad_datasets_are_refused_and_store_nothing(client, services: Services, payload: bytes, layout: str,
                                                     status: int, field: str) -> None:
    resp = upload_dataset(client, payload, layout)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["field"] == field
    assert client.get("/api/v1/datasets").get_json()["datasets"] == []
    assert not (services.storage.root / "datasets").exists() or not any((services.storage.root / "datasets").iterdir())


def test_demo_dataset_in_one_click(client) -> None:
    resp = client.post("/api/v1/datasets/demo", json={"layout": "unpaired"})
    assert resp.status_code == 201, resp.get_json()
    meta = resp.get_json()["meta"]
    assert meta["demo"] is True and meta["counts"]["A"] > 0 and meta["counts"]["B"] > 0


def test_pix2pix_refuses_an_unpaired_dataset_cyclegan_takes_both(client) -> None:  # type: ignore[no-untyped-def]
    unpaired = client.post("/api/v1/datasets/demo", json={"layout": "unpaired"}).get_json()["id"]
    paired = client.post("/api/v1/datasets/demo", json={"layout": "paired"}).get_json()["id"]
    resp = client.post("/api/v1/jobs", json={"kind": "pix2pix_train", "params": {"dataset": unpaired}})
    assert resp.status_code == 422 and resp.get_json()["field"] == "dataset"
    assert "unpaired dataset" in resp.get_json()["error"] and "paired" in resp.get_json()["error"]
    assert client.get("/api/v1/jobs").get_json()["jobs"] == []
    for kind, dataset in (("pix2pix_train", paired), ("cyclegan_train", paired), ("cyclegan_train", unpaired)):
        resp = client.post("/api/v1/jobs", json={"kind": kind, "params": {"dataset": dataset}})
        assert resp.status_code == 202, (kind, resp.get_json())


def test_translate_refuses_a_direction_the_model_lacks(client) -> None:  # type: ignore[no-untyped-def]
    import torch

    from core.engines.gan.networks import GeneratorSpec

    buf = io.BytesIO()
    torch.save(GeneratorSpec.from_name("resnet_6blocks", ngf=8).build().state_dict(), buf)
    model = client.post("/api/v1/models", data={"file": (io.BytesIO(buf.getvalue()), "latest_net_G_A.pth")},
                        content_type="multipart/form-data").get_json()

    def submit(direction: str):  # type: ignore[no-untyped-def]
        return client.post("/api/v1/jobs", content_type="multipart/form-data", data={
            "kind": "translate", "params": json.dumps({"model": model["id"], "direction": direction}),
            "images": (io.BytesIO(png_bytes(20, 10)), "a.png")})

    resp = submit("BtoA")
    assert resp.status_code == 422 and resp.get_json()["field"] == "direction"
    assert "translates only AtoB" in resp.get_json()["error"]
    assert client.get("/api/v1/jobs").get_json()["jobs"] == []
    assert submit("AtoB").status_code == 202 and submit("auto").status_code == 202


def test_import_reference_generator_then_download(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from core.engines.gan.networks import GeneratorSpec

    net = GeneratorSpec.from_name("resnet_6blocks", ngf=8).build()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    resp = client.post("/api/v1/models", data={"file": (io.BytesIO(buf.getvalue()), "latest_net_G_A.pth")},
                       content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_json()
    model = resp.get_json()
    assert model["family"] == "imported" and model["name"] == "latest_net_G_A"
    assert client.get("/api/v1/models").get_json()["models"][0]["id"] == model["id"]
    dl = client.get(f"/api/v1/models/{model['id']}/download")
    assert dl.status_code == 200 and dl.mimetype == "application/zip"
    assert "meta.json" in zipfile.ZipFile(io.BytesIO(dl.data)).namelist()


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, ("open('/tmp/atelier-pwned', 'w').write('x')",))


def test_import_never_unpickles(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    payload = pickle.dumps({"model.1.weight": _Boom()})
    resp = client.post("/api/v1/models", data={"file": (io.BytesIO(payload), "latest_net_G.pth")},
                       content_type="multipart/form-data")
    assert 400 <= resp.status_code < 500 and resp.get_json()["field"] == "file"
    assert not os.path.exists("/tmp/atelier-pwned")
    assert client.get("/api/v1/models").get_json()["models"] == []


def test_import_refuses_other_files(client) -> None:
    resp = client.post("/api/v1/models", data={"file": (io.BytesIO(b"x"), "model.exe")},
                       content_type="multipart/form-data")
    assert resp.status_code == 415 and resp.get_json()["field"] == "file"
    resp = client.post("/api/v1/models", data={}, content_type="multipart/form-data")
    assert resp.status_code == 422
    assert client.get("/api/v1/models/nope").status_code == 404


def files_under(services: Services) -> set[str]:
    """Every file in storage and in the scratch area (where uploads are unpacked)."""
    roots = (services.storage.root, services.settings.data_dir / "tmp")
    return {p.as_posix() for root in roots if root.exists() for p in root.rglob("*") if p.is_file()}


def test_zip_bomb_upload_is_refused_and_stores_nothing(client, services: Services) -> None:
    before = files_under(services)
    resp = upload_dataset(client, zeros_zip())  # 1,000 members of 1 MiB of zeros in 1.1 MB
    assert resp.status_code == 413, resp.get_json()
    body = resp.get_json()
    assert body["field"] == "file" and "the limit is 100 to 1" in body["error"] and "zip bomb" in body["error"]
    assert client.get("/api/v1/datasets").get_json()["datasets"] == []
    assert files_under(services) == before


def test_dataset_limits_come_from_settings(client, services: Services) -> None:
    services.settings = services.settings.with_overrides(dataset_max_files=3, dataset_max_side=80)
    four = {"trainA/a.png": png_bytes(160, 128), "trainA/b.png": png_bytes(64, 64),
            "trainB/c.png": png_bytes(64, 64, (50, 50, 200)), "trainB/d.png": png_bytes(64, 64, (9, 9, 9))}
    before = files_under(services)
    resp = upload_dataset(client, zip_of(four))
    assert resp.status_code == 413 and resp.get_json()["field"] == "file"
    assert "4 members; the limit is 3 files" in resp.get_json()["error"]
    assert client.get("/api/v1/datasets").get_json()["datasets"] == [] and files_under(services) == before
    del four["trainB/d.png"]
    resp = upload_dataset(client, zip_of(four))
    assert resp.status_code == 201, resp.get_json()
    meta = resp.get_json()["meta"]
    assert meta["downscaled"] == 1 and meta["counts"] == {"A": 2, "B": 1}
    with resources.local_copy(services, "datasets", resp.get_json()["id"]) as stored:
        assert Image.open(stored / "trainA" / "a.png").size == (80, 64)
        assert (stored / "trainA" / "b.png").read_bytes() == four["trainA/b.png"]
