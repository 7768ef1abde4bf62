"""Datasets of training pictures on SQLite and PostgreSQL: validation first, tenants apart, soft delete."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from diffusiond.auth.keys import KeyService
from diffusiond.blobs.images import UploadRules
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.datasets.service import DatasetService
from diffusiond.domain.errors import Conflict, InvalidParams, NotFound, PayloadTooLarge
from diffusiond.store.database import Database


def png(colour: tuple[int, int, int] = (250, 140, 200), size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def blob_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_items_are_validated_reencoded_listed_replaced_and_deleted(db: Database, tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = DatasetService(db, blobs, UploadRules(max_bytes=100_000, max_pixels=512 * 512))
    tenant = KeyService(db).create("t").tenant_id
    ds = service.create(tenant, "dresses", status="Initialed", params={"description": "summer"})
    item = service.add_item(tenant, ds.id, png(), "image/png", name="a.png", caption="a pink dress")
    assert (item.width, item.height, item.caption, item.name) == (48, 32, "a pink dress", "a.png")
    assert blobs.get(item.blob_key).startswith(b"\x89PNG") and item.blob_key.startswith(f"inputs/{tenant}/")
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(jpeg, format="JPEG")
    second = service.add_item(tenant, ds.id, jpeg.getvalue(), "image/jpeg")
    assert [i.id for i in service.items(tenant, ds.id)] == [item.id, second.id]
    assert service.get(tenant, ds.id).item_count == 2
    assert [t.caption for t in (i.training_image() for i in service.items(tenant, ds.id))] == ["a pink dress", ""]
    replaced = service.replace_item(tenant, ds.id, item.id, png((0, 0, 0), (20, 20)))
    assert (replaced.id, replaced.width, replaced.caption) == (item.id, 20, "a pink dress")
    assert not blobs.exists(item.blob_key)  # the old pixels are gone
    service.delete_item(tenant, ds.id, second.id)
    assert [i.id for i in service.items(tenant, ds.id)] == [item.id]
    assert len(blob_files(tmp_path / "blobs")) == 1


@pytest.mark.parametrize("data,error", [
    (b"GIF89a not an image we take", InvalidParams),
    (b"", InvalidParams),
    (png(size=(600, 600)), InvalidParams),  # over the pixel limit
    (b"\x89PNG" + b"0" * 200_000, PayloadTooLarge),
])
def test_refused_uploads_store_nothing(db: Database, tmp_path: Path, data: bytes, error: type[Exception]) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = DatasetService(db, blobs, UploadRules(max_bytes=100_000, max_pixels=512 * 512))
    tenant = KeyService(db).create("t").tenant_id
    ds = service.create(tenant, "d", status="Initialed")
    with pytest.raises(error):
        service.add_item(tenant, ds.id, data, "image/png")
    assert service.items(tenant, ds.id) == [] and blob_files(tmp_path / "blobs") == []


def test_tenants_are_apart_and_soft_delete_hides_but_keeps(db: Database, tmp_path: Path) -> None:
    service = DatasetService(db, LocalBlobStore(tmp_path / "blobs"), UploadRules(100_000, 512 * 512))
    keys = KeyService(db)
    a, b = keys.create("a").tenant_id, keys.create("b").tenant_id
    ds = service.create(a, "mine", status="Initialed")
    item = service.add_item(a, ds.id, png())
    for call in (lambda: service.get(b, ds.id), lambda: service.items(b, ds.id),
                 lambda: service.item(b, ds.id, item.id), lambda: service.add_item(b, ds.id, png()),
                 lambda: service.named(b, "mine"), lambda: service.soft_delete(b, ds.id)):
        with pytest.raises(NotFound):
            call()
    assert service.create(b, "mine", status="Initialed").name == "mine"  # names are per tenant
    with pytest.raises(Conflict):
        service.create(a, "mine", status="Initialed")
    assert service.update(a, ds.id, status="Enabled").status == "Enabled"
    assert [d.status for d in service.list(a, status="Enabled")] == ["Enabled"]
    service.soft_delete(a, ds.id)
    assert service.list(a) == []
    with pytest.raises(NotFound):
        service.get(a, ds.id)
    assert service.create(a, "mine", status="Initialed").id != ds.id  # the name is free again
    from diffusiond.store.tables import DatasetRow

    with db.read() as s:
        assert s.get(DatasetRow, ds.id) is not None  # kept for history
