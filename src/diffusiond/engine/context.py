"""The narrow view of the platform that engine code gets while it runs a job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import ImageFormat, ImageRef

if TYPE_CHECKING:
    from PIL import Image


class WorkContext(Protocol):
    """What a running job may do: read its inputs, report progress, notice a cancel, save outputs.

    Saved outputs become the job's artifacts when it succeeds, all together, in the transition's
    transaction; an attempt that fails, is canceled or loses its lease leaves none behind.
    """

    def load_image(self, ref: ImageRef) -> Image.Image: ...

    def report_progress(self, image_index: int, fraction: float) -> None:
        """How far output `image_index` is, 0..1 (a training has one output: index 0)."""
        ...

    def report_metrics(self, metrics: Mapping[str, float]) -> None:
        """The latest figures of a long job (a training's step, loss, ETA); visible with its status."""
        ...

    def report_preview(self, image: Image.Image) -> None:
        """A picture of the running image, for clients that show live previews."""
        ...

    def is_canceled(self) -> bool: ...

    def save_image(self, image: Image.Image, seed: int, finish_reason: str = "SUCCESS",
                   format: ImageFormat = ImageFormat.PNG, *, parameters: str | None = None) -> None:
        """An output image; `parameters` (A1111's infotext) goes into a PNG's `parameters` text chunk."""
        ...

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        """A model file this job made (a LoRA, a merged checkpoint); the file is moved into the job's keeping."""
        ...

    def save_document(self, name: str, data: Any) -> None:
        """A JSON document (metrics, a loss curve, parameters)."""
        ...

    def save_checkpoint(self, folder: Path) -> None:
        """Resumable state of this job: a later attempt (after a lost worker) gets it back."""
        ...

    def load_checkpoint(self, dest: Path) -> bool:
        """The last checkpoint an earlier attempt saved, unpacked into `dest`; False when there is none."""
        ...


class Handler(Protocol):
    """Runs one kind of work; the worker picks a handler by the job's kind."""

    def run(self, spec: Any, ctx: WorkContext) -> None:
        """Do the work, saving outputs through `ctx`; raise `Canceled` or a `DomainError` to stop."""
        ...


@runtime_checkable
class BatchHandler(Handler, Protocol):
    """A handler that can run several compatible jobs as one batch (see engine/batching.py)."""

    def run_batch(self, items: Sequence[tuple[Any, WorkContext]]) -> list[BaseException | None]:
        """Run jobs that may share forward passes; each entry is None (done) or that job's error."""
        ...


class ModelResolver(Protocol):
    """Finds a registered model (by id or alias) and its local files."""

    def resolve(self, model_id: str, kind: ModelKind) -> ModelRecord: ...


class Canceled(Exception):
    """Raised inside the denoising loop when the job was canceled."""


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    finish_reason: str = "SUCCESS"  # SUCCESS | CONTENT_FILTERED | ERROR
