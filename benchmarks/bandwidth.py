"""The machine's memory bandwidth, measured in the run, and the physical floor of a pass.

Bandwidth: ``np.copyto`` between two arrays of ``nbytes`` (256 MB by default, far beyond the
caches; both aligned to 2 MiB), counted as ``2 * nbytes`` moved (read + write; the
write-allocate read the hardware may add is not counted, so the figure is what a streaming
kernel sees), best of ``repeats``.  It is measured with one thread and with ``threads``
threads each copying a slice (NumPy releases the GIL in the copy); the floor uses the larger.

On a GPU (``--device cuda``) the bandwidth is that of a device-to-device copy of ``nbytes``
(torch's ``copy_`` timed with CUDA events, wherever torch is installed; else a jitted
``x + 1`` in jax), again read + write, best of ``repeats``: the HBM floor.

Floor of a pass: the bytes it cannot avoid (every input read once; the forward pass writes a
scalar, forward + backward also writes the gradient, the size of the first input) divided by
the bandwidth.  A time is reported as a multiple of it.  For working sets that fit in the
caches (1e6 float32 = 4 MB) the DRAM floor is not a bound, and multiples below 1 are possible.
"""

from __future__ import annotations

import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

DEFAULT_BYTES = 256 * 10**6


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _aligned(n: int, align: int = 1 << 21) -> np.ndarray:
    """``n`` float64 starting on an ``align`` boundary.  Source and destination at the same
    offset within a page: allocated back to back on the heap they would sit 16 bytes apart
    modulo 4 KiB, where loads falsely wait for stores (4K aliasing) and a copy runs at a
    third of the bandwidth."""
    raw = np.empty(n + align // 8, np.float64)
    k = (-raw.ctypes.data % align) // 8
    return raw[k:k + n]


def measure_bandwidth(nbytes: int = DEFAULT_BYTES, threads: int = 1,
                      repeats: int = 5) -> dict[str, Any]:
    """``{"gbs": best GB/s, "single_gbs", "multi_gbs", "threads", "bytes", ...}``."""
    n = max(nbytes // 8, 1)
    src = _aligned(n)
    src[:] = 1.0
    dst = _aligned(n)
    np.copyto(dst, src)  # touch every page first
    moved = 2 * src.nbytes
    single = moved / _best(lambda: np.copyto(dst, src), repeats) / 1e9
    out: dict[str, Any] = {"bytes": int(src.nbytes), "method": "np.copyto, read + write",
                           "repeats": repeats, "single_gbs": single, "threads": 1,
                           "multi_gbs": None}
    if threads > 1:
        bounds = np.linspace(0, n, threads + 1).astype(int)
        parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        with ThreadPoolExecutor(threads) as pool:
            def copy_all() -> None:
                list(pool.map(lambda p: np.copyto(p[0], p[1]), parts))

            copy_all()
            out["multi_gbs"] = moved / _best(copy_all, repeats) / 1e9
            out["threads"] = threads
    out["gbs"] = max(single, out["multi_gbs"] or 0.0)
    return out


def measure_device_bandwidth(nbytes: int, repeats: int = 10) -> dict[str, Any]:
    """The GPU's copy bandwidth (same keys as :func:`measure_bandwidth`, plus ``device``)."""
    n = max(nbytes // 4, 1)
    # torch's copy wherever torch is installed, so that runs of jax alone share its floor
    # (on an H200 jax's jitted x + 1 reached 3.27 TB/s, torch's copy_ 4.23)
    if importlib.util.find_spec("torch") is not None:
        import torch

        src = torch.ones(n, dtype=torch.float32, device="cuda")
        dst = torch.empty_like(src)
        dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeats):
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        name, method = torch.cuda.get_device_name(), "torch copy_ on the GPU, CUDA events"
        del src, dst
        torch.cuda.empty_cache()  # the copies' memory back to the device, for the jobs
    else:
        import jax
        import jax.numpy as jnp

        gpu = jax.devices("gpu")[0]
        x = jax.device_put(jnp.ones(n, jnp.float32), gpu)
        add = jax.jit(lambda v: v + 1.0)
        add(x).block_until_ready()
        best = min(_timed_jax(add, x) for _ in range(repeats))
        name, method = gpu.device_kind, "jax.jit(x + 1) on the GPU"
    gbs = 2 * 4 * n / best / 1e9
    return {"bytes": 4 * n, "method": method + ", read + write", "repeats": repeats,
            "single_gbs": gbs, "threads": 1, "multi_gbs": None, "gbs": gbs, "device": name}


def _timed_jax(fn: Any, x: Any) -> float:
    t0 = time.perf_counter()
    fn(x).block_until_ready()
    return time.perf_counter() - t0


def floor_bytes(input_bytes: list[int], pass_: str, output_bytes: int = 0) -> int:
    """Bytes a pass must move: the inputs once, plus the gradient of the first for fwd+bwd."""
    total = sum(input_bytes) + output_bytes
    if pass_ == "fwd+bwd":
        total += input_bytes[0]
    return total


__all__ = ["DEFAULT_BYTES", "floor_bytes", "measure_bandwidth", "measure_device_bandwidth"]
