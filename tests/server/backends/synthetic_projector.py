"""A tiny multimodal projector GGUF for the default model, written by the tests.

No vision model fits in a package the tests can install, so this writes one in
llama.cpp's own format: a LLaVA-style projector (``clip.projector_type`` "mlp": patch
embeddings, then a two-layer MLP into the language model's embedding width) with
seeded random weights, 64x64-pixel images cut into 16 patches, so each image is 16
tokens. llama.cpp loads and runs it as it would a real one; it cannot recognise
anything, so tests prove that images reach the model and change what it reads, not
what it understands.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

__all__ = ["IMAGE_TOKENS", "write_projector"]

_IMAGE_SIZE, _PATCH, _WIDTH, _FF, _HIDDEN = 64, 16, 32, 64, 64
IMAGE_TOKENS = (_IMAGE_SIZE // _PATCH) ** 2
_ALIGN = 32
_F32, _BOOL, _STRING, _ARRAY, _U32, _F32_TYPE = 6, 7, 8, 9, 4, 0


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(value: object) -> bytes:
    if isinstance(value, bool):
        return struct.pack("<I?", _BOOL, value)
    if isinstance(value, int):
        return struct.pack("<II", _U32, value)
    if isinstance(value, float):
        return struct.pack("<If", _F32, value)
    if isinstance(value, str):
        return struct.pack("<I", _STRING) + _string(value)
    if isinstance(value, list):
        return struct.pack("<IIQ", _ARRAY, _F32, len(value)) + struct.pack(f"<{len(value)}f", *value)
    raise TypeError(value)


def write_projector(path: Path, text_width: int = 576, seed: int = 7) -> Path:
    """Write the projector for a language model whose embeddings are ``text_width`` wide."""
    rng = random.Random(seed)
    patches = IMAGE_TOKENS
    # name -> dims in ggml's order (the fastest-varying first) and a weight scale.
    shapes: dict[str, tuple[tuple[int, ...], float]] = {
        "v.patch_embd.weight": ((_PATCH, _PATCH, 3, _WIDTH), 0.05),
        "v.position_embd.weight": ((_WIDTH, patches), 0.5),
        "v.blk.0.attn_out.weight": ((_WIDTH, _WIDTH), 0.1),
        "v.blk.0.ffn_up.weight": ((_WIDTH, _FF), 0.1),
        "v.blk.0.ffn_down.weight": ((_FF, _WIDTH), 0.1),
        "mm.0.weight": ((_WIDTH, _HIDDEN), 0.3),
        "mm.0.bias": ((_HIDDEN,), 0.1),
        "mm.2.weight": ((_HIDDEN, text_width), 0.1),
        "mm.2.bias": ((text_width,), 0.02),
    }
    metadata: dict[str, object] = {
        "general.architecture": "clip",
        "general.name": "gprochat test projector (random weights)",
        "clip.has_vision_encoder": True,
        "clip.projector_type": "mlp",
        "clip.use_gelu": True,
        "clip.vision.image_size": _IMAGE_SIZE,
        "clip.vision.patch_size": _PATCH,
        "clip.vision.embedding_length": _WIDTH,
        "clip.vision.feed_forward_length": _FF,
        "clip.vision.projection_dim": text_width,
        "clip.vision.block_count": 1,
        "clip.vision.attention.head_count": 2,
        "clip.vision.attention.layer_norm_epsilon": 1e-5,
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5],
    }
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(metadata))
    for key, value in metadata.items():
        head += _string(key) + _value(value)
    blobs, offset = [], 0
    for name, (dims, scale) in shapes.items():
        count = 1
        for dim in dims:
            count *= dim
        blob = struct.pack(f"<{count}f", *(rng.gauss(0.0, scale) for _ in range(count)))
        head += _string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        head += struct.pack("<IQ", _F32_TYPE, offset)
        padded = blob + b"\0" * (-len(blob) % _ALIGN)
        blobs.append(padded)
        offset += len(padded)
    head += b"\0" * (-len(head) % _ALIGN)
    path.write_bytes(head + b"".join(blobs))
    return path
