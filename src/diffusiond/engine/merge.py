"""The `merge` kind's handler: a new checkpoint from the tensors of two or three of one family.

- weighted sum: `(1 - m) * primary + m * secondary`
- add difference: `primary + m * (secondary - tertiary)`

Tensors are read one at a time from single-file checkpoints (a diffusers folder is first written in
the single-file layout, with its config embedded), merged in float32 and stored in the primary's
dtype. Tensors only the primary has (EMA weights, say) are kept as they are; a tensor whose shape
differs between the models means different architectures and fails the merge. The result is one
self-describing `.safetensors` file, registered for the job's tenant by the kind's success effect.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.merge import MergeMethod, MergeSpec, check_merge_spec
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.engine.context import Canceled, ModelResolver, WorkContext

if TYPE_CHECKING:
    import torch

PROGRESS_EVERY = 64  # tensors between progress reports and cancel checks


class MergeHandler:
    def __init__(self, resolver: ModelResolver, work_dir: Path) -> None:
        self.resolver = resolver
        self.work_dir = work_dir

    def run(self, spec: MergeSpec, ctx: WorkContext) -> None:
        # 1. Check inputs: the spec, the models, one family
        check_merge_spec(spec)
        names = [spec.primary, spec.secondary] + ([spec.tertiary] if spec.tertiary else [])
        records = [self.resolver.resolve(name, ModelKind.CHECKPOINT) for name in names]
        check_family(records)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="merge-") as tmp:
            work = Path(tmp)
            # 2. Every input as a single file in the original layout
            files = [single_file(record, work / f"input-{i}.safetensors") for i, record in enumerate(records)]
            # 3. Merge tensor by tensor
            tensors, metadata = merge_files(files, spec, ctx)
            # 4. Write the result and hand it to the job
            from safetensors.torch import save_file

            out = work / "merged.safetensors"
            save_file(tensors, str(out), metadata={**metadata, "merged_by": "diffusiond", "merge_method":
                                                   spec.method.value, "merge_multiplier": str(spec.multiplier)})
            del tensors
            ctx.report_progress(0, 1.0)
            ctx.save_model_file(out, name=f"{spec.output_name or spec.output_model}.safetensors", format="safetensors")


def check_family(records: list[ModelRecord]) -> None:
    families = {r.family for r in records}
    if len(families) != 1:
        described = ", ".join(f"{r.id} is {r.family}" for r in records)
        raise InvalidParams(f"checkpoints of different families cannot be merged ({described})",
                            code="incompatible_models", field="secondary_model_name")


def single_file(record: ModelRecord, out: Path) -> Path:
    """The checkpoint as one .safetensors file in the original layout (a folder is exported)."""
    path = Path(record.path)
    if record.format is ModelFormat.SAFETENSORS and path.suffix.lower() == ".safetensors":
        return path
    if record.format is ModelFormat.DIFFUSERS and path.is_dir():
        from diffusiond.engine.single_file import export_single_file

        return export_single_file(path, out, write_config=False, embed_family=record.family)
    raise InvalidParams(f"checkpoint {record.id} is not a .safetensors file or a diffusers folder",
                        code="unsupported_model_format")


def merge_files(files: list[Path], spec: MergeSpec, ctx: WorkContext) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The merged tensors, and the primary's metadata (its embedded config, when it has one)."""
    from contextlib import ExitStack

    from safetensors import safe_open

    with ExitStack() as stack:
        handles: list[Any] = [stack.enter_context(safe_open(str(f), framework="pt")) for f in files]
        primary, others = handles[0], handles[1:]
        keys = list(primary.keys())
        other_keys = [set(h.keys()) for h in others]
        if not any(k in other_keys[0] for k in keys):
            raise InvalidParams("the checkpoints share no tensors: they are not one architecture",
                                code="incompatible_models")
        merged: dict[str, torch.Tensor] = {}
        for i, key in enumerate(keys):
            if i % PROGRESS_EVERY == 0:
                if ctx.is_canceled():
                    raise Canceled()
                ctx.report_progress(0, 0.95 * i / len(keys))
            a = primary.get_tensor(key)
            if not all(key in ks for ks in other_keys):
                merged[key] = a
                continue
            rest = [h.get_tensor(key) for h in others]
            if any(t.shape != a.shape for t in rest):
                raise InvalidParams(f"tensor {key} has different shapes: the checkpoints are not one architecture",
                                    code="incompatible_models")
            merged[key] = combine(a, rest, spec).to(a.dtype).contiguous()
        return merged, dict(primary.metadata() or {})


def combine(a: torch.Tensor, rest: list[torch.Tensor], spec: MergeSpec) -> torch.Tensor:
    if not a.is_floating_point():  # position ids and the like are not weights
        return a
    m = spec.multiplier
    if spec.method is MergeMethod.ADD_DIFFERENCE:
        b, c = rest
        return a.float() + m * (b.float() - c.float())
    return (1.0 - m) * a.float() + m * rest[0].float()
