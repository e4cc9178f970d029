"""Per-tensor content fingerprints of a state dict (torch tensors, numpy arrays), no imports at load."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import _cast_keys
from ._cast_keys import CAST_DTYPES, torch_bytes
from .errors import ConfigurationError

__all__ = ["CAST_DTYPES", "MIN_NUMEL", "TensorFingerprint", "fingerprint_state_dict"]

#: Tensors with fewer elements than this are skipped: scalars, counters such as BatchNorm's
#: ``num_batches_tracked``, tiny biases. Their content says too little about where they came from.
MIN_NUMEL = 16
_HASH_THREADS = max(1, min(4, os.cpu_count() or 1))

#: GPU tensors are copied to pinned CPU memory without blocking, in groups of about this many
#: bytes, with one synchronisation per group rather than one per tensor.
_COPY_GROUP_BYTES = 256 * 2**20

_DIGEST_SIZE = 16  # 128-bit BLAKE2b: collisions between unrelated weights are not a concern


@dataclass(frozen=True)
class TensorFingerprint:
    """The content hash of one tensor: over dtype, shape and raw bytes.

    `sampled` is True when only a deterministic strided subset of the elements was hashed
    (`fingerprint_state_dict(..., sample_above=N)`); such a hash only equals hashes taken with the
    same `sample_above`.

    For float32, float16 and bfloat16 tensors two *cast keys* find the same weights in another
    floating dtype (see `CAST_DTYPES`): `bf16_hash` hashes the elements cast to bfloat16, and
    `bf16_via_fp16_hash` the elements cast to float16 and then to bfloat16 (None when that is
    the same). Both leave the dtype out, so a bf16 or fp16 copy of fp32 weights (or an fp32
    upcast of bf16 or fp16 ones) has a `bf16_hash` equal to one of its source's two keys.
    """

    name: str
    hash: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    sampled: bool = False
    bf16_hash: str | None = None
    bf16_via_fp16_hash: str | None = None


@dataclass
class _Prepared:
    """One tensor on its way to a hash: the elements to hash, flattened, maybe still on a GPU."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    stride: int  # 1: every element; >1: every stride-th element (sampled)
    data: Any  # a 1-D torch tensor or numpy array


def fingerprint_state_dict(
    state_dict: Mapping[str, Any],
    *,
    min_numel: int = MIN_NUMEL,
    sample_above: int | None = None,
    cast_keys: bool = True,
) -> list[TensorFingerprint]:
    """Hash each tensor of `state_dict` (torch tensors of any dtype, numpy arrays).

    Skipped: values that are not tensors or arrays, tensors with fewer than `min_numel`
    elements, and constant tensors (all elements equal, e.g. zero biases or LayerNorm ones,
    which every initialisation shares). GPU tensors are copied to the CPU first.

    Args:
        state_dict: a flat mapping from names to tensors, as ``model.state_dict()`` returns.
        min_numel: the smallest tensor that is hashed.
        sample_above: when set, a tensor with more elements than this hashes only about
            `sample_above` of them, taken at a fixed stride, and is flagged `sampled`.
        cast_keys: compute the cast keys of float32, float16 and bfloat16 tensors (about
            doubling the cost; see bench_fingerprint.py); without them, weights link only in
            the dtype they were registered in.

    Example::

        fps = fingerprint_state_dict(model.state_dict())
        {fp.name: fp.hash for fp in fps}
    """
    if not isinstance(state_dict, Mapping):
        raise ConfigurationError(
            f"state_dict {state_dict!r:.80} is a {type(state_dict).__name__}; expected a "
            "mapping of names to tensors such as model.state_dict()"
        )
    if sample_above is not None and (
        isinstance(sample_above, bool) or not isinstance(sample_above, int) or sample_above < 1
    ):
        raise ConfigurationError(
            f"sample_above {sample_above!r} must be a positive int (elements) or None"
        )
    # hashlib and torch let go of the GIL on large buffers, so several tensors hash at once;
    # a few in flight at most, so that GPU copies still stream a group at a time.
    results: list[TensorFingerprint] = []
    in_flight: deque[Future[TensorFingerprint | None]] = deque()
    with ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="sqltrack-hash") as pool:
        for item in _hashable(_prepare_all(state_dict, min_numel, sample_above)):
            in_flight.append(pool.submit(_digest, item, cast_keys))
            if len(in_flight) >= 2 * _HASH_THREADS:
                _collect(in_flight.popleft(), results)
        while in_flight:
            _collect(in_flight.popleft(), results)
    return results


def _collect(future: Future[TensorFingerprint | None], results: list[TensorFingerprint]) -> None:
    digest = future.result()
    if digest is not None:
        results.append(digest)


def _prepare_all(
    state_dict: Mapping[str, Any], min_numel: int, sample_above: int | None
) -> Iterator[_Prepared]:
    for name, value in state_dict.items():
        module = type(value).__module__
        if module.split(".", 1)[0] == "torch" and hasattr(value, "detach"):
            prepared = _prepare_torch(str(name), value, min_numel, sample_above)
        elif hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape"):
            prepared = _prepare_numpy(str(name), value, min_numel, sample_above)
        else:
            continue  # not a tensor (e.g. a step counter or a config entry)
        if prepared is not None:
            yield prepared


def _stride(numel: int, sample_above: int | None) -> int:
    if sample_above is None or numel <= sample_above:
        return 1
    return -(-numel // sample_above)  # ceil: at most sample_above elements


def _prepare_torch(
    name: str, tensor: Any, min_numel: int, sample_above: int | None
) -> _Prepared | None:
    import torch

    if tensor.layout is not torch.strided or tensor.is_quantized or tensor.device.type == "meta":
        return None  # sparse, quantized or data-less: no plain bytes to hash
    numel = int(tensor.numel())
    if numel < min_numel:
        return None
    flat = tensor.detach().reshape(-1)
    stride = _stride(numel, sample_above)
    if stride > 1:
        flat = flat[::stride]  # on the tensor's device: only the sample is copied
    dtype = str(tensor.dtype).removeprefix("torch.")
    return _Prepared(name, dtype, tuple(int(s) for s in tensor.shape), numel, stride, flat)


def _prepare_numpy(
    name: str, array: Any, min_numel: int, sample_above: int | None
) -> _Prepared | None:
    import numpy as np

    array = np.asarray(array)
    if array.dtype.hasobject:
        return None
    if not array.dtype.isnative:  # hash the values, not the byte order they were stored in
        array = array.astype(array.dtype.newbyteorder("="))
    numel = int(array.size)
    if numel < min_numel:
        return None
    flat = array.reshape(-1)
    stride = _stride(numel, sample_above)
    if stride > 1:
        flat = flat[::stride]
    return _Prepared(
        name, array.dtype.name, tuple(int(s) for s in array.shape), numel, stride, flat
    )


def _hashable(items: Iterator[_Prepared]) -> Iterator[_Prepared]:
    """Yield `items` with their data as contiguous CPU memory.

    CUDA tensors are copied into pinned memory with ``non_blocking=True``, a group at a time,
    and the group is synchronised once: the GPU keeps working while earlier groups hash.
    """
    group: list[tuple[_Prepared, Any]] = []
    group_bytes = 0
    for item in items:
        data = item.data
        if type(data).__module__.split(".", 1)[0] != "torch" or data.device.type == "cpu":
            yield item
            continue
        if data.device.type != "cuda":
            item.data = data.to("cpu")
            yield item
            continue
        import torch

        copy = torch.empty(data.shape, dtype=data.dtype, pin_memory=True)
        copy.copy_(data, non_blocking=True)
        item.data = copy
        cuda: Any = torch.cuda  # typed loosely: torch's stubs leave Event() untyped
        event = cuda.Event()
        event.record(cuda.current_stream(data.device))
        group.append((item, event))
        group_bytes += copy.numel() * copy.element_size()
        if group_bytes >= _COPY_GROUP_BYTES:
            yield from _drain(group)
            group, group_bytes = [], 0
    yield from _drain(group)


def _drain(group: list[tuple[_Prepared, Any]]) -> Iterator[_Prepared]:
    for item, event in group:
        event.synchronize()
        yield item


def _digest(item: _Prepared, cast_keys: bool) -> TensorFingerprint | None:
    data = item.data
    if type(data).__module__.split(".", 1)[0] == "torch":
        import torch

        flat = data.contiguous()
        raw = flat.view(torch.uint8)  # any dtype, bf16 and bool included, as its bytes
        count = int(flat.numel())
        width = _TORCH_INTS.get(flat.element_size())
        bits = flat.view(getattr(torch, width)) if width else raw.view(count, -1)
        if count < 2 or _constant(bits):
            return None  # constant: every init has it, so it says nothing
        buffer: Any = torch_bytes(raw)
    else:
        import numpy as np

        flat = np.ascontiguousarray(data)
        raw = flat.view(np.uint8)
        count = int(flat.size)
        width = _TORCH_INTS.get(flat.itemsize)
        bits = flat.view(getattr(np, width)) if width else raw.reshape(count, -1)
        if count < 2 or _constant(bits):
            return None
        buffer = raw
    sampled = item.stride > 1
    layout = f"{','.join(map(str, item.shape))}\0{item.stride if sampled else 0}\0"
    h = hashlib.blake2b(f"{item.dtype}\0{layout}".encode(), digest_size=_DIGEST_SIZE)
    h.update(buffer)
    exact = h.hexdigest()
    bf16_hash, via_fp16_hash = (
        _cast_keys.cast_keys(flat, item.dtype, layout, exact, _DIGEST_SIZE)
        if cast_keys
        else (None, None)
    )
    return TensorFingerprint(
        item.name, exact, item.dtype, item.shape, item.numel, sampled, bf16_hash, via_fp16_hash
    )


#: element size -> the integer dtype of that width (the same name in torch and numpy)
_TORCH_INTS = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _constant(bits: Any) -> bool:
    """Whether all elements are bit-identical (`bits`: the elements as integers of their width,
    or byte rows for wider ones). Looks at a few first, so that weights, which differ at once,
    cost nothing near the full comparison."""
    first = bits[0]
    if not bool((bits[:64] == first).all()):
        return False
    return bool((bits == first).all())
