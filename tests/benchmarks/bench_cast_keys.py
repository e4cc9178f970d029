"""What cast-tolerant fingerprints would cost (issue 14 design, before it is built).

For a synthetic fp32 state dict of about 50M elements, prints the best of ``--repeat`` times
of today's exact fingerprints beside the extra "cast keys" proposed in
docs/design/lineage-through-casts.md: hashes of ``bf16(t)``, ``bf16(fp16(t))`` and
``bf16(fp16(bf16(t)))`` (three at registration, one at lookup), full and sampled
(``sample_above=1e6``, the stride taken before the cast).

Usage::

    python tests/benchmarks/bench_cast_keys.py              # 48 tensors of 1024x1024
    python tests/benchmarks/bench_cast_keys.py --wide       # 12 tensors of 4096x1024

This file is a script, not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from sqltrack_core.provenance import fingerprint_state_dict

BF16, FP16 = torch.bfloat16, torch.float16
SAMPLE = 1_000_000
#: the three cast keys of a registered tensor; a lookup needs the first only
KEYS: list[Callable[[torch.Tensor], torch.Tensor]] = [
    lambda t: t.to(BF16),
    lambda t: t.to(FP16).to(BF16),
    lambda t: t.to(BF16).to(FP16).to(BF16),
]


def strided(state: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Every k-th element of each tensor, about `n` of them (as the sampled mode takes)."""
    return {k: v.reshape(-1)[:: max(1, -(-v.numel() // n))] for k, v in state.items()}


def keys(state: dict[str, torch.Tensor], count: int) -> None:
    for cast in KEYS[:count]:
        fingerprint_state_dict({k: cast(v) for k, v in state.items()})


def best(label: str, work: Callable[[], Any], repeat: int) -> None:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    print(f"{label:48s} {min(times) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", action="store_true", help="12 tensors of 4096x1024")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape, count = ((4096, 1024), 12) if args.wide else ((1024, 1024), 48)
    state = {f"layer{i}.weight": torch.randn(*shape) * 0.02 for i in range(count)}
    elements = sum(v.numel() for v in state.values())
    print(f"{elements:,} fp32 elements, torch threads {torch.get_num_threads()}")
    sampled = strided(state, SAMPLE)
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("today: exact, full", lambda: fingerprint_state_dict(state)),
        (
            "exact + 1 cast key, full (lookup)",
            lambda: (fingerprint_state_dict(state), keys(state, 1)),
        ),
        (
            "exact + 3 cast keys, full (registration)",
            lambda: (fingerprint_state_dict(state), keys(state, 3)),
        ),
        ("today: exact, sampled", lambda: fingerprint_state_dict(state, sample_above=SAMPLE)),
        (
            "exact + 1 cast key, sampled (lookup)",
            lambda: (fingerprint_state_dict(state, sample_above=SAMPLE), keys(sampled, 1)),
        ),
        (
            "exact + 3 cast keys, sampled (registration)",
            lambda: (fingerprint_state_dict(state, sample_above=SAMPLE), keys(sampled, 3)),
        ),
    ]
    for label, work in rows:
        best(label, work, args.repeat)


if __name__ == "__main__":
    main()
