"""Losses called from several threads at once (DataLoader workers, data-parallel threads, a
server's request threads) give what one thread gives, and the first calls load each adapter
once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import pytest

from unilosses import backends

THREADS = 6


def _in_threads(work: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """``work(k)`` in ``n`` threads released together; each one's result or exception."""
    out: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(k: int) -> None:
        barrier.wait()
        try:
            out[k] = work(k)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# Run in a fresh process: the adapters load there, on the threads' first calls.  The adapter
# module's body and an adapter's making are slowed down, so that every thread arrives while
# the first is still loading (otherwise the race is a matter of timing).
_FIRST_CALLS = """
import importlib.machinery, sys, threading, time
import numpy as np
import unilosses
import torch
from unilosses.backends import _BY_NAME, _BY_TYPE

# torch's adapter loads on the first call (torch came after unilosses); NumPy's loaded with
# unilosses, and is forgotten here to load again
assert "torch" not in _BY_NAME, list(_BY_NAME)
numpy_adapter = _BY_NAME.pop("numpy")
for c in [c for c, a in _BY_TYPE.items() if a is numpy_adapter]:
    del _BY_TYPE[c]

class SlowTorchAdapterModule:
    def find_spec(self, name, path, target=None):
        if name != "unilosses.backends.torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):  # in sys.modules, empty, for the while
            time.sleep(0.2)
            run(module)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, SlowTorchAdapterModule())
import unilosses.backends.numpy as numpy_module
load = numpy_module.load
def slow_load():
    time.sleep(0.2)
    return load()
numpy_module.load = slow_load

class Sub(np.ndarray):
    pass

def inputs(k):
    if k % 2:
        p = np.linspace(0.0, 1.0, 8)
        t = p[::-1].copy()
        return (p, t.view(Sub)) if k % 4 == 1 else (p.view(Sub), t)
    p = torch.linspace(0.0, 1.0, 8, dtype=torch.float64)
    t = p.flip(0)
    return (p, torch.nn.Parameter(t)) if k % 4 == 0 else (torch.nn.Parameter(p), t)

def value(k):
    v = unilosses.mse(*inputs(k))
    return float(v.detach() if isinstance(v, torch.Tensor) else v)

n = 8
got = [None] * n
barrier = threading.Barrier(n)
def run(k):
    barrier.wait()
    try:
        got[k] = value(k)
    except Exception as e:
        got[k] = f"{type(e).__name__}: {e}"
threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert got == [value(k) for k in range(n)], got
p = np.linspace(0.0, 1.0, 8)
np.testing.assert_allclose(got, np.mean((p - p[::-1]) ** 2), rtol=1e-15, atol=0)
for name, classes in (("torch", (torch.Tensor, torch.nn.Parameter)), ("numpy", (np.ndarray, Sub))):
    loaded = {id(_BY_TYPE[c]) for c in classes if c in _BY_TYPE}
    assert loaded == {id(_BY_NAME[name])}, (name, loaded)
print("ok")
"""


def test_first_calls_from_threads_load_each_adapter_once():
    """Every thread's first call waits for the one load of its framework's adapter.

    Each thread read the adapter module from ``sys.modules`` while another was still
    importing it ("AttributeError: partially initialized module 'unilosses.backends.torch'
    has no attribute 'load'"), and several made an adapter each, so a tensor and a Parameter
    were refused as arrays from two frameworks, in that call and in every later one."""
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_FIRST_CALLS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_first_arrays_of_an_array_api_namespace_from_threads_share_one_adapter(monkeypatch):
    """Any other array-API namespace gets one generic adapter, whichever thread sees its
    arrays first: each thread made one, and the arrays of two classes of the namespace then
    had two adapters (refused together, as from two frameworks)."""
    ns = types.ModuleType("unilosses_test_threads_namespace")

    class Array:
        def __array_namespace__(self) -> types.ModuleType:
            return ns

    classes = [type(f"Array{k}", (Array,), {}) for k in range(THREADS)]

    class SlowAdapter(backends.Adapter):
        def __init__(self, xp: Any) -> None:
            time.sleep(0.05)  # every thread arrives while the first makes its adapter
            super().__init__(xp)

    monkeypatch.setattr(backends, "Adapter", SlowAdapter)
    try:
        got = _in_threads(lambda k: backends.adapter_for(classes[k]()))
        assert all(isinstance(a, SlowAdapter) for a in got), got
        assert len({id(a) for a in got}) == 1, got
        assert backends.adapter_for(classes[0]()) is got[0]
    finally:
        for c in classes:
            backends._BY_TYPE.pop(c, None)
        backends._BY_NAME.pop(f"generic:{ns.__name__}", None)
