"""Cast keys: what a tensor's hash would be after a cast to bfloat16, for lineage through casts.

A float32, float16 or bfloat16 tensor gets two keys (see `TensorFingerprint`): the exact hash of
its bfloat16 cast, and of its float16-then-bfloat16 cast. They are computed a block at a time,
so that a large tensor needs a little scratch memory (in cache), not copies of itself; torch
tensors are cast by torch, numpy arrays (Keras) by numpy alone, bit for bit alike.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["CAST_DTYPES", "cast_keys", "torch_bytes"]

#: Dtypes that get cast keys. float64 does not: float64 -> bfloat16 rounds differently from
#: float64 -> float32 -> bfloat16, so its copies would match by chance of the path taken.
CAST_DTYPES = ("float32", "float16", "bfloat16")

#: elements cast at a time: torch casts large blocks fast (and on several threads); numpy's
#: chain of temporaries runs fastest on blocks that stay in cache
_TORCH_BLOCK = 1 << 20
_NUMPY_BLOCK = 1 << 16


def cast_keys(
    flat: Any, dtype: str, layout: str, exact: str, digest_size: int
) -> tuple[str | None, str | None]:
    """``(bf16_hash, bf16_via_fp16_hash)`` of `flat`, a contiguous 1-D CPU torch tensor or
    numpy array of `dtype`, whose exact hash is `exact` over the header ``dtype\\0layout``.

    A cast key is the exact hash the cast would have, so a bfloat16 tensor's `bf16_hash` is
    `exact` (no second pass); the second key is None where it equals the first (always for
    float16, which casts to itself). (None, None) for other dtypes."""
    if dtype not in CAST_DTYPES:
        return None, None
    if type(flat).__module__.split(".", 1)[0] == "torch":
        cast, block = _torch_block, _TORCH_BLOCK
    else:
        cast, block = _numpy_block, _NUMPY_BLOCK
    header = f"bfloat16\0{layout}".encode()
    direct = None if dtype == "bfloat16" else hashlib.blake2b(header, digest_size=digest_size)
    via = None if dtype == "float16" else hashlib.blake2b(header, digest_size=digest_size)
    differs = False
    for start in range(0, len(flat), block):
        direct_bits, via_bits, same = cast(flat[start : start + block], via is not None)
        if direct is not None:
            direct.update(direct_bits)
        if via is not None:
            via.update(via_bits)
            differs = differs or not same
    return (
        exact if direct is None else direct.hexdigest(),
        via.hexdigest() if via is not None and differs else None,
    )


def _torch_block(block: Any, through_fp16: bool) -> tuple[Any, Any, bool]:
    """`block` cast to bfloat16 and (with `through_fp16`) to float16 then bfloat16, as buffers
    of their bits, and whether the two casts are equal."""
    import torch

    direct = block.to(torch.bfloat16).view(torch.int16)  # block itself if bfloat16
    if not through_fp16:
        return torch_bytes(direct), None, True
    via = block.to(torch.float16).to(torch.bfloat16).view(torch.int16)
    return torch_bytes(direct), torch_bytes(via), torch.equal(via, direct)


def _numpy_block(block: Any, through_fp16: bool) -> tuple[Any, Any, bool]:
    """`_torch_block` for numpy arrays (float32, float16, and ml_dtypes' bfloat16)."""
    import numpy as np

    if block.dtype.name == "bfloat16":
        direct = block.view(np.int16)
        wide = (direct.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # exact
    else:
        wide = block.astype(np.float32, copy=False)  # exact from float16
        direct = _round_bf16(wide)
    if not through_fp16:
        return direct, None, True
    with np.errstate(over="ignore"):  # beyond float16's range is inf, as in torch
        via = _round_bf16(wide.astype(np.float16).astype(np.float32))
    return direct, via, bool(np.array_equal(via, direct))


def _round_bf16(wide: Any) -> Any:
    """float32 elements rounded to bfloat16 (to nearest, ties to even, as torch does), as int16
    bits. NaN becomes 0xFFFF, as in torch's vectorised cast."""
    import numpy as np

    bits = wide.view(np.uint32)
    rounded = (bits >> 16) & 1
    rounded += 0x7FFF
    rounded += bits  # wraps around only for NaN, replaced below
    rounded >>= 16
    result = rounded.astype(np.uint16)
    nan = np.isnan(wide)
    if nan.any():
        result[nan] = 0xFFFF
    return result.view(np.int16)


def torch_bytes(tensor: Any) -> Any:
    """The bytes of a contiguous CPU tensor, without a copy where numpy is installed."""
    try:
        return tensor.numpy()
    except RuntimeError:  # torch built without numpy
        import ctypes

        return ctypes.string_at(tensor.data_ptr(), tensor.numel() * tensor.element_size())
