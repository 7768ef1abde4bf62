"""CLIP's BPE tokenizer files, built offline from the vocabulary inside the open_clip wheel.

Real single-file checkpoints carry no tokenizer, and nothing may be fetched at run time, so the
vocab.json / merges.txt that `transformers.CLIPTokenizer` needs are derived from
`open_clip/bpe_simple_vocab_16e6.txt.gz` (the same BPE merges OpenAI's CLIP ships). open_clip is
located with `find_spec` and never imported: importing it would need torchvision.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

VOCAB_SIZE = 49408
_MERGE_COUNT = VOCAB_SIZE - 256 * 2 - 2
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    raise RuntimeError("bpe_simple_vocab_16e6.txt.gz not found inside open_clip")


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP/GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to 256+n.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@lru_cache(maxsize=1)
def clip_merges() -> tuple[tuple[str, str], ...]:
    lines = gzip.decompress(_bpe_file().read_bytes()).decode("utf-8").split("\n")
    # Line 0 is a version header; CLIP uses the first _MERGE_COUNT merges after it.
    return tuple(tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1])  # type: ignore[misc]


@lru_cache(maxsize=1)
def clip_vocab() -> dict[str, int]:
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet]
    tokens += ["".join(pair) for pair in clip_merges()]
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def write_clip_tokenizer(folder: Path, *, pad_token: str = EOS, max_length: int = 77) -> Path:
    """Write a transformers CLIPTokenizer folder (vocab.json, merges.txt, configs) to `folder`.

    SD 1.x pads with <|endoftext|>; SD 2.x and SDXL's second encoder pad with "!".
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab(), ensure_ascii=False))
    merges = "\n".join(" ".join(pair) for pair in clip_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
        "do_lower_case": True,
        "errors": "replace",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder
