"""Datasets: named sets of a tenant's pictures (with captions) that trainings learn from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from diffusiond.domain.params import ImageRef
from diffusiond.domain.training import TrainingImage

MAX_DATASET_ITEMS = 1000


@dataclass(frozen=True)
class Dataset:
    id: str
    tenant_id: str
    name: str  # unique among the tenant's live datasets
    status: str  # the dialect's word (the core keeps it as given)
    created_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    item_count: int = 0


@dataclass(frozen=True)
class DatasetItem:
    id: str
    dataset_id: str
    name: str  # the file name the client gave
    blob_key: str
    width: int
    height: int
    size: int  # bytes stored (PNG)
    caption: str
    created_at: datetime
    params: dict[str, Any] = field(default_factory=dict)

    def training_image(self) -> TrainingImage:
        return TrainingImage(ImageRef(self.blob_key, self.width, self.height), self.caption)
