"""A1111 hypernetworks, applied to a warm UNet's cross-attention for one job, removed after.

A hypernetwork holds, for a context width (768 for SD 1.x), two small networks: one transforms the
text context before the cross-attention's key projection, the other before its value projection
(`to_k(context + net_k(context) * strength)`, likewise for `to_v`), exactly where A1111 applies
them. Queries and self-attention are untouched. Several hypernetworks apply one after the other.

Files are .safetensors (A1111's .pt files are pickles and are never loaded): a tensor
`<width>.<0 for keys|1 for values>.linear.<index>.<weight|bias>` per layer of A1111's
`HypernetworkModule.linear` sequence, 2-D weights for linear layers and 1-D ones for layer norms. The
metadata may name `activation_func` (A1111's names; default `linear`, none), applied after each
linear layer but the last.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import HypernetworkRef
from diffusiond.engine.context import ModelResolver

_KEY = re.compile(r"^(\d+)\.([01])\.linear\.(\d+)\.(weight|bias)$")
ACTIVATIONS = ("linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "mish", "gelu", "softsign")

Net = Callable[[Any], Any]  # tensor -> tensor


def load_hypernetwork(path: Path, device: Any, dtype: Any) -> dict[int, tuple[Net, Net]]:
    """Context width -> (keys network, values network), each returning the residual to add."""
    if path.suffix.lower() != ".safetensors":
        raise InvalidParams(f"{path.name}: hypernetworks must be .safetensors (pickles are never loaded)",
                            field="hypernetwork_model")
    from safetensors import safe_open

    layers: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
    with safe_open(str(path), framework="pt") as handle:
        activation = (handle.metadata() or {}).get("activation_func", "linear").lower()
        for key in handle.keys():  # noqa: SIM118
            m = _KEY.match(key)
            if m is None:
                raise InvalidParams(f"{path.name}: {key!r} is not a hypernetwork tensor", field="hypernetwork_model")
            width, which, index = int(m[1]), int(m[2]), int(m[3])
            tensor = handle.get_tensor(key).to(device=device, dtype=dtype)
            layers.setdefault((width, which), {}).setdefault(index, {})[m[4]] = tensor
    if activation not in ACTIVATIONS:
        raise InvalidParams(f"{path.name}: unknown activation_func {activation!r}", field="hypernetwork_model")
    nets: dict[int, tuple[Net, Net]] = {}
    for width in {w for w, _ in layers}:
        if (width, 0) not in layers or (width, 1) not in layers:
            raise InvalidParams(f"{path.name}: width {width} needs both a key and a value network",
                                field="hypernetwork_model")
        nets[width] = (_network(layers[(width, 0)], activation), _network(layers[(width, 1)], activation))
    return nets


def _network(indexed: dict[int, dict[str, Any]], activation: str) -> Net:
    import torch
    import torch.nn.functional as F

    act: dict[str, Net] = {"relu": F.relu, "leakyrelu": F.leaky_relu, "elu": F.elu, "swish": F.silu,
                           "tanh": torch.tanh, "sigmoid": torch.sigmoid, "mish": F.mish, "gelu": F.gelu,
                           "softsign": F.softsign}
    linear_indices = [i for i, p in indexed.items() if p["weight"].ndim == 2]
    last_linear = max(linear_indices) if linear_indices else -1
    steps: list[Net] = []
    for index in sorted(indexed):
        weight, bias = indexed[index]["weight"], indexed[index].get("bias")
        if weight.ndim == 2:
            steps.append(functools.partial(F.linear, weight=weight, bias=bias))
            if activation != "linear" and index != last_linear:
                steps.append(act[activation])
        else:
            steps.append(functools.partial(F.layer_norm, normalized_shape=(weight.shape[0],), weight=weight,
                                           bias=bias))

    def run(x: Any) -> Any:
        for step in steps:
            x = step(x)
        return x

    return run


@contextmanager
def applied_hypernetworks(unet: Any, refs: Sequence[HypernetworkRef], resolver: ModelResolver) -> Iterator[None]:
    """Hook the UNet's cross-attention key and value projections for the duration of the block."""
    if not refs:
        yield
        return
    param = next(unet.parameters())
    loaded = [(load_hypernetwork(Path(resolver.resolve(r.model_id, ModelKind.HYPERNETWORK).path), param.device,
                                 param.dtype), r) for r in refs]
    handles: list[Any] = []
    try:
        for name, module in unet.named_modules():
            if not name.endswith("attn2"):
                continue
            width = int(module.to_k.in_features)
            for which, projection in ((0, module.to_k), (1, module.to_v)):
                chain = [(nets[width][which], ref.strength) for nets, ref in loaded if width in nets]
                if chain:
                    handles.append(projection.register_forward_pre_hook(_hook(chain)))
        if not handles:
            widths = sorted({w for nets, _ in loaded for w in nets})
            raise InvalidParams(f"the hypernetwork's context widths {widths} do not fit this model",
                                field="hypernetwork_model")
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hook(chain: list[tuple[Net, float]]) -> Callable[[Any, tuple[Any, ...]], tuple[Any, ...]]:
    def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        context = args[0]
        for net, strength in chain:
            context = context + net(context) * strength
        return (context, *args[1:])

    return hook
