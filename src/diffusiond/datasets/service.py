"""Datasets of training pictures: create, fill, list, soft-delete; a tenant only sees its own.

Pictures are validated and re-encoded by the shared upload rules before anything is stored, so a
refused upload leaves nothing behind; the stored PNG lives under the tenant's `inputs/` blobs, which
signed URLs can serve.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.images import UploadRules
from diffusiond.domain.datasets import MAX_DATASET_ITEMS, Dataset, DatasetItem
from diffusiond.domain.errors import Conflict, InvalidParams, NotFound
from diffusiond.store.database import Database, as_utc
from diffusiond.store.tables import DatasetItemRow, DatasetRow

MAX_NAME = 200


class DatasetService:
    def __init__(self, db: Database, blobs: BlobStore, uploads: UploadRules) -> None:
        self.db = db
        self.blobs = blobs
        self.uploads = uploads

    # ---- datasets --------------------------------------------------------------------------------

    def create(self, tenant_id: str, name: str, *, status: str, params: dict[str, Any] | None = None) -> Dataset:
        """A new, empty dataset; a name the tenant already uses (live) is a conflict."""
        name = _checked_name(name)
        with self.db.session() as s:
            if self._live_named(s, tenant_id, name) is not None:
                raise Conflict(f"a dataset named {name!r} already exists", code="dataset_exists")
            row = DatasetRow(id=uuid.uuid4().hex, tenant_id=tenant_id, name=name, status=status,
                             params=dict(params or {}), created_at=_now())
            s.add(row)
            s.flush()
            return _dataset(row, 0)

    def get(self, tenant_id: str, dataset_id: str) -> Dataset:
        with self.db.read() as s:
            row = self._owned(s, tenant_id, dataset_id)
            return _dataset(row, self._count(s, row.id))

    def named(self, tenant_id: str, name: str) -> Dataset:
        with self.db.read() as s:
            row = self._live_named(s, tenant_id, name)
            if row is None:
                raise NotFound(f"dataset {name!r} not found")
            return _dataset(row, self._count(s, row.id))

    def list(self, tenant_id: str, *, status: str | None = None) -> list[Dataset]:
        """The tenant's live datasets, oldest first."""
        with self.db.read() as s:
            q = select(DatasetRow).where(DatasetRow.tenant_id == tenant_id, DatasetRow.deleted_at.is_(None))
            if status is not None:
                q = q.where(DatasetRow.status == status)
            rows = list(s.scalars(q.order_by(DatasetRow.created_at, DatasetRow.id)))
            counts = {dataset_id: int(n) for dataset_id, n in s.execute(
                select(DatasetItemRow.dataset_id, func.count())
                .where(DatasetItemRow.dataset_id.in_([r.id for r in rows])).group_by(DatasetItemRow.dataset_id))}
            return [_dataset(r, counts.get(r.id, 0)) for r in rows]

    def update(self, tenant_id: str, dataset_id: str, *, name: str | None = None, status: str | None = None,
               params: dict[str, Any] | None = None) -> Dataset:
        with self.db.session() as s:
            row = self._owned(s, tenant_id, dataset_id, lock=True)
            if name is not None and name != row.name:
                name = _checked_name(name)
                if self._live_named(s, tenant_id, name) is not None:
                    raise Conflict(f"a dataset named {name!r} already exists", code="dataset_exists")
                row.name = name
            if status is not None:
                row.status = status
            if params is not None:
                row.params = {**row.params, **params}
            return _dataset(row, self._count(s, row.id))

    def soft_delete(self, tenant_id: str, dataset_id: str) -> None:
        """Hidden from every list and lookup; the row and its pictures stay (trainings refer to them)."""
        with self.db.session() as s:
            self._owned(s, tenant_id, dataset_id, lock=True).deleted_at = _now()

    # ---- items -----------------------------------------------------------------------------------

    def add_item(self, tenant_id: str, dataset_id: str, data: bytes, declared_mime: str | None = None, *,
                 name: str = "", caption: str = "", params: dict[str, Any] | None = None) -> DatasetItem:
        """Validate, re-encode and store one picture; nothing is stored when it is refused."""
        self.get(tenant_id, dataset_id)  # 404 before any work
        png, width, height = self.uploads.reencode(data, declared_mime, field=name or "image")
        item_id = uuid.uuid4().hex
        key = f"inputs/{tenant_id}/datasets/{dataset_id}/{item_id}.png"
        self.blobs.put(key, png, "image/png")
        try:
            with self.db.session() as s:
                row = self._owned(s, tenant_id, dataset_id, lock=True)
                if self._count(s, row.id) >= MAX_DATASET_ITEMS:
                    raise InvalidParams(f"a dataset holds at most {MAX_DATASET_ITEMS} pictures",
                                        code="too_many_items")
                item = DatasetItemRow(id=item_id, dataset_id=row.id, tenant_id=tenant_id,
                                      name=(name or f"{item_id}.png")[:MAX_NAME], blob_key=key, width=width,
                                      height=height, size=len(png), caption=caption, params=dict(params or {}),
                                      created_at=_now())
                s.add(item)
                s.flush()
                return _item(item)
        except BaseException:
            self.blobs.delete(key)
            raise

    def replace_item(self, tenant_id: str, dataset_id: str, item_id: str, data: bytes,
                     declared_mime: str | None = None) -> DatasetItem:
        """New pixels for an existing picture (same id, name and caption)."""
        self.item(tenant_id, dataset_id, item_id)
        png, width, height = self.uploads.reencode(data, declared_mime)
        key = f"inputs/{tenant_id}/datasets/{dataset_id}/{item_id}-{uuid.uuid4().hex[:8]}.png"
        self.blobs.put(key, png, "image/png")
        with self.db.session() as s:
            row = self._item_row(s, tenant_id, dataset_id, item_id)
            old, row.blob_key = row.blob_key, key
            row.width, row.height, row.size = width, height, len(png)
            result = _item(row)
        self.blobs.delete(old)
        return result

    def delete_item(self, tenant_id: str, dataset_id: str, item_id: str) -> None:
        """Gone for good: the row and its picture."""
        with self.db.session() as s:
            row = self._item_row(s, tenant_id, dataset_id, item_id)
            key = row.blob_key
            s.delete(row)
        self.blobs.delete(key)

    def item(self, tenant_id: str, dataset_id: str, item_id: str) -> DatasetItem:
        with self.db.read() as s:
            return _item(self._item_row(s, tenant_id, dataset_id, item_id))

    def items(self, tenant_id: str, dataset_id: str) -> builtins.list[DatasetItem]:
        with self.db.read() as s:
            self._owned(s, tenant_id, dataset_id)
            rows: Sequence[DatasetItemRow] = s.scalars(
                select(DatasetItemRow).where(DatasetItemRow.dataset_id == dataset_id)
                .order_by(DatasetItemRow.created_at, DatasetItemRow.id)).all()
            return [_item(r) for r in rows]

    # ---- internals -------------------------------------------------------------------------------

    @staticmethod
    def _owned(s: Session, tenant_id: str, dataset_id: str, *, lock: bool = False) -> DatasetRow:
        row = s.get(DatasetRow, dataset_id, with_for_update=lock)
        if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
            raise NotFound(f"dataset {dataset_id} not found")
        return row

    @staticmethod
    def _live_named(s: Session, tenant_id: str, name: str) -> DatasetRow | None:
        return s.scalar(select(DatasetRow).where(DatasetRow.tenant_id == tenant_id, DatasetRow.name == name,
                                                 DatasetRow.deleted_at.is_(None)).limit(1))

    def _item_row(self, s: Session, tenant_id: str, dataset_id: str, item_id: str) -> DatasetItemRow:
        self._owned(s, tenant_id, dataset_id)
        row = s.get(DatasetItemRow, item_id)
        if row is None or row.dataset_id != dataset_id:
            raise NotFound(f"item {item_id} not found")
        return row

    @staticmethod
    def _count(s: Session, dataset_id: str) -> int:
        return int(s.scalar(select(func.count()).select_from(DatasetItemRow)
                            .where(DatasetItemRow.dataset_id == dataset_id)) or 0)


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise InvalidParams(f"a dataset name must be 1-{MAX_NAME} printable characters", code="invalid_name",
                            field="name")
    return name


def _now() -> datetime:
    return datetime.now(UTC)


def _dataset(row: DatasetRow, count: int) -> Dataset:
    return Dataset(id=row.id, tenant_id=row.tenant_id, name=row.name, status=row.status,
                   created_at=as_utc(row.created_at), params=dict(row.params or {}), item_count=count)


def _item(row: DatasetItemRow) -> DatasetItem:
    return DatasetItem(id=row.id, dataset_id=row.dataset_id, name=row.name, blob_key=row.blob_key, width=row.width,
                       height=row.height, size=row.size, caption=row.caption, created_at=as_utc(row.created_at),
                       params=dict(row.params or {}))
