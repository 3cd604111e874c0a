"""Allocator settings and the peak extra resident memory of one call.

CPU frameworks allocate their tensors with the C library's ``malloc`` (torch through
``posix_memalign``, XLA and TensorFlow through aligned ``malloc``).  glibc serves large blocks
with ``mmap`` and returns them to the system on ``free``, so a fresh large temporary costs page
faults on first touch, every call; it also moves its mmap threshold up after the first such
``free`` (to 32 MiB at most), so whether a later temporary faults depends on what ran before.
Eager timings of large arrays can be dominated by this (on a virtual machine a 1.6e7-element
focal loss measured 2.0 s with page faults, 0.57 s without), so the run fixes the policy with
``mallopt`` and records it:

* ``retain`` (default): no ``mmap`` for blocks (``M_MMAP_MAX=0``), never trim the heap
  (``M_TRIM_THRESHOLD`` at its maximum), grow it 64 MiB at a time (``M_TOP_PAD``): freed
  memory stays with the process and the next call reuses it without page faults, the steady
  state of a caching allocator (torch's CUDA allocator, jemalloc, tcmalloc).  What is timed is
  the computation and its memory traffic, not the kernel's page faults.
* ``cached``: mmap threshold at glibc's maximum (32 MiB), heap never trimmed: temporaries up to
  32 MiB are reused without page faults (glibc's steady state, independent of history);
  larger ones are fresh pages every call.
* ``fresh``: mmap and trim thresholds at 128 KiB: every large temporary is fresh pages, every
  call (the cost of a cold allocator).
* ``system``: glibc's defaults, dynamic threshold, untouched.

The peak extra memory of a call is its resident high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) minus the resident size just before it.  During that one call
``mmap`` is allowed again with a 128 KiB threshold (the setting is restored after), and free
heap memory is first returned with ``malloc_trim``, so that every large block the call
allocates is fresh pages, whatever the heaps hold from earlier calls; every page the call
touches counts, its outputs (the gradient) included.  (Under ``system`` the threshold stays
fixed after the first probe: glibc has no way back to its dynamic one.)  Before the baseline
is read, the resident size is left to settle (jax frees the buffers of the previous call
asynchronously: read at once, the baseline still holds them and the probe reads 0).  The run
reports the larger of two probes.  No ``gc.collect()`` first: garbage freed later cannot raise
the peak, and a full collection with the frameworks loaded costs a tenth of a second per call.
Linux only; elsewhere memory is reported as unavailable.

On a GPU (``--device cuda``) torch's peak extra memory is read from its caching allocator
(``max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated before
the call): the same quantity, on the device.  jax on a GPU keeps no resettable peak, so
none is reported there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from typing import Any

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

MIB = 1 << 20
INT_MAX = 2**31 - 1  # mallopt takes a C int
GLIBC_MMAP_MAX = 65536  # glibc's default M_MMAP_MAX
MALLOC_SETTINGS: dict[str, dict[str, int]] = {
    "retain": {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": INT_MAX, "M_TOP_PAD": 64 * MIB},
    "cached": {"M_MMAP_THRESHOLD": 32 * MIB, "M_TRIM_THRESHOLD": INT_MAX},
    "fresh": {"M_MMAP_THRESHOLD": 128 * 1024, "M_TRIM_THRESHOLD": 128 * 1024},
    "system": {},
}
_PARAM = {"M_MMAP_THRESHOLD": M_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": M_TRIM_THRESHOLD,
          "M_TOP_PAD": M_TOP_PAD, "M_MMAP_MAX": M_MMAP_MAX}


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
#: the setting in force in this process (what a memory probe restores)
_CURRENT = {"setting": "system"}
PROBE_MMAP_THRESHOLD = 128 * 1024


def configure_malloc(setting: str) -> dict[str, Any]:
    """Apply ``setting`` (see the module docstring) to this process; return what was done."""
    if setting not in MALLOC_SETTINGS:
        raise ValueError(f"unknown malloc setting {setting!r}; choose from "
                         f"{', '.join(MALLOC_SETTINGS)}")
    done: dict[str, Any] = {"setting": setting}
    _CURRENT["setting"] = setting
    params = MALLOC_SETTINGS[setting]
    if not params:
        return done
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        done["error"] = "no mallopt (not glibc): allocator left as it is"
        return done
    for name, value in params.items():
        ok = _LIBC.mallopt(_PARAM[name], ctypes.c_int(value))
        done[name] = value if ok == 1 else f"{value} (mallopt failed)"
    return done


def malloc_env() -> dict[str, str]:
    """The MALLOC_* variables of the environment (they also change glibc's behaviour)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available() -> bool:
    if _status("VmHWM") is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _mallopt(param: int, value: int) -> None:
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(param, ctypes.c_int(value))


def _settle(min_wait: float = 0.02, max_wait: float = 0.5) -> int | None:
    """The resident size once it has stopped moving (checked every 10 ms)."""
    time.sleep(min_wait)
    prev = _status("VmRSS")
    waited = min_wait
    while waited < max_wait:
        time.sleep(0.01)
        waited += 0.01
        cur = _status("VmRSS")
        if cur == prev:
            break
        prev = cur
    return prev


def peak_extra_bytes(step: Callable[[], Any]) -> int | None:
    """Resident bytes ``step()`` needs beyond what is resident before it (None: unknown)."""
    _mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
    _mallopt(M_MMAP_THRESHOLD, PROBE_MMAP_THRESHOLD)
    try:
        if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
            _LIBC.malloc_trim(0)
        base = _settle()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # VmHWM := VmRSS
        except OSError:
            return None
        out = step()
        peak = _status("VmHWM")
        del out
    finally:
        for name, value in MALLOC_SETTINGS.get(_CURRENT["setting"], {}).items():
            _mallopt(_PARAM[name], value)
    if base is None or peak is None:
        return None
    return max(0, peak - base)


def device_peak_extra_bytes(backend: str, step: Callable[[], Any]) -> int | None:
    """Device bytes ``step()`` allocates beyond what is allocated before it (torch on CUDA)."""
    if backend != "torch":
        return None
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return max(0, peak - base)


__all__ = ["MALLOC_SETTINGS", "available", "configure_malloc", "device_peak_extra_bytes",
           "malloc_env", "peak_extra_bytes"]
