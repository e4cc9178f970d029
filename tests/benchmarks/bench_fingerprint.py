"""Fingerprint throughput, and what provenance adds to saving a checkpoint.

Measured on CPU tensors (this script does not use a GPU), as medians over ``--repeat``:

- ``fingerprint_state_dict`` throughput in GB/s over a synthetic state dict of ``--mb`` MB
  (tensors of 4M elements), for float32 and bfloat16 torch tensors and float32 numpy arrays
  (Keras' weights), full and sampled
  (``sample_above=65536``: each tensor hashes ~64k elements at a fixed stride), with the cast
  keys that let a bf16/fp16 copy find its fp32 source (the default since issue 14) and without
  them (``cast_keys=False``: exact hashes only, as before), and what the keys add;
- a checkpoint save: ``torch.save`` of the state dict to a file in a temporary directory, with
  and without ``run.register_checkpoint`` before it (fingerprints on the caller's thread, the
  registry written by the run's writer, off the caller's thread), on SQLite; the extra time is
  what provenance costs the training loop per checkpoint;
- the link a fine-tune makes at train start against that registry (``link_from_weights``,
  fingerprinting included): of an exact float32 copy, and of a bfloat16 copy, which is found
  through the cast keys.

Usage::

    python tests/benchmarks/bench_fingerprint.py            # 256 MB, 5 repeats
    python tests/benchmarks/bench_fingerprint.py --mb 64 --repeat 3   # quick

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import sqltrack_core as sqltrack
from sqltrack_core.provenance import fingerprint_state_dict

ELEMENTS = 4 * 2**20  # per tensor


def state_dict(megabytes: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random tensors of ELEMENTS elements adding up to about `megabytes` MB."""
    per_tensor = ELEMENTS * torch.tensor([], dtype=dtype).element_size()
    count = max(1, megabytes * 2**20 // per_tensor)
    generator = torch.Generator().manual_seed(0)
    return {
        f"layer{i}.weight": torch.randn(ELEMENTS, generator=generator).to(dtype)
        for i in range(count)
    }


def nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the state dict")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()

    rows = []
    for dtype in (torch.float32, torch.bfloat16, "numpy float32"):
        tensors = state_dict(args.mb, torch.float32 if isinstance(dtype, str) else dtype)
        size = nbytes(tensors)
        if isinstance(dtype, str):  # as Keras hands its weights over: numpy arrays
            tensors = {k: v.numpy() for k, v in tensors.items()}
        fingerprint_state_dict(tensors)  # warm-up
        for label, sample in (("full", None), ("sampled (64k elements/tensor)", 65536)):
            exact, cast = (
                median_seconds(
                    lambda t=tensors, s=sample, c=keys: fingerprint_state_dict(
                        t, sample_above=s, cast_keys=c
                    ),
                    args.repeat,
                )
                for keys in (False, True)
            )
            rows.append((str(dtype).removeprefix("torch."), label, size, exact, cast))

    tensors = state_dict(args.mb, torch.float32)
    with tempfile.TemporaryDirectory() as folder:
        tracker = sqltrack.connect(f"sqlite:///{folder}/bench.db")
        run = tracker.start_run("bench-fingerprint")
        path = Path(folder) / "checkpoint.pt"

        def save() -> None:
            torch.save(tensors, path)

        def save_with_provenance() -> None:
            token = run.register_checkpoint(path, tensors, step=1)
            torch.save({"state_dict": tensors, "sqltrack": token}, path)

        save()
        save_with_provenance()
        times: dict[str, list[float]] = {"plain": [], "provenance": []}
        for _ in range(args.repeat):  # interleaved, so that disk noise hits both alike
            for label, fn in (("plain", save), ("provenance", save_with_provenance)):
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        run.finish()
        links: dict[str, float] = {}
        for label, copy in (
            ("float32 copy (exact)", tensors),
            ("bfloat16 copy (cast keys)", {k: v.to(torch.bfloat16) for k, v in tensors.items()}),
        ):
            seconds = []
            for _ in range(args.repeat):
                with tracker.start_run("bench-finetune") as finetune:
                    start = time.perf_counter()
                    found = finetune.link_from_weights(copy)
                    seconds.append(time.perf_counter() - start)
                assert [link.run_id for link in found] == [run.id], found
            links[label] = statistics.median(seconds)
        tracker.close()
    plain = statistics.median(times["plain"])
    with_provenance = statistics.median(times["provenance"])

    print("### Fingerprints and checkpoint saves\n")
    print(
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
        f"torch {torch.__version__} (1 thread)"
    )
    print(f"- date: {dt.datetime.fromtimestamp(started, dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- command: `python {' '.join(sys.argv)}`; medians of {args.repeat}\n")
    print(
        "| dtype | mode | state dict (MB) | exact only (s) | with cast keys (s) "
        "| cast keys add | throughput with cast keys (GB/s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for dtype_name, label, size, exact, cast in rows:
        print(
            f"| {dtype_name} | {label} | {size / 2**20:,.0f} | {exact:.3f} | {cast:.3f} | "
            f"{cast - exact:+.3f} s ({(cast / exact - 1) * 100:+.0f}%) | "
            f"{size / cast / 1e9:.2f} |"
        )
    print()
    print("| checkpoint save (float32) | time (s) |")
    print("|---|---:|")
    print(f"| `torch.save` | {plain:.3f} |")
    print(f"| `register_checkpoint` + `torch.save` | {with_provenance:.3f} |")
    print(
        f"| provenance adds | {with_provenance - plain:+.3f} "
        f"({(with_provenance / plain - 1) * 100:+.0f}%) |"
    )
    print()
    print("| fine-tune start: `link_from_weights` of | time (s) |")
    print("|---|---:|")
    for label, seconds_taken in links.items():
        print(f"| {label} | {seconds_taken:.3f} |")


if __name__ == "__main__":
    main()
