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

import numpy as np
import pytest

import unilosses
from unilosses import backends
from unilosses.parity import REGISTRY
from unilosses.parity.tolerance import deviation, tolerance

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


#: losses over the module-level caches: torch's cached constants (the batch size, alpha) and
#: plain kernels, TensorFlow's cached constants, fills and axes; labels, masks and weights.
#: (Few, one case each: JAX compiles each operation of each shape and dtype on first use.)
_LOSSES = ("log_cosh", "categorical_cross_entropy",
           "sparse_categorical_cross_entropy_with_logits", "binary_focal_loss_with_logits")


def test_losses_from_threads_equal_one_thread(xp):
    """Each loss's value (and gradient) computed in several threads at once, float32 and
    float64 interleaved, labels and probabilities, equals the one-thread result bit for bit,
    which the float64 reference confirms."""
    jobs = []
    for name in _LOSSES:
        spec = REGISTRY[name]
        for case in spec.make_cases(0)[:1]:
            for dtype in ("float32", "float64"):
                jobs.append((spec, case.cast(dtype), dtype))
    # (JAX's gradients compile for seconds more: values only there)
    grads = xp.differentiable and xp.name != "jax"

    def run(i: int) -> tuple[np.ndarray, ...]:
        spec, case, _ = jobs[i]
        args = [xp.asarray(a) for a in case.args]
        arrays = {k: xp.asarray(v) for k, v in case.arrays.items()}

        def f(*a: Any) -> Any:
            return spec.fn(*a, **case.options, **arrays)

        value = np.asarray(xp.to_numpy(f(*args)))
        if not grads or value.ndim:
            return (value,)
        return (value, *(np.asarray(r) for r in xp.value_and_grad(f, *args)))

    alone = [run(i) for i in range(len(jobs))]
    for (spec, case, dtype), out in zip(jobs, alone):
        expected = spec.value(*case.args, dtype=dtype, **case.options, **case.arrays)
        assert out[0].dtype == np.dtype(dtype), (spec.name, case.name, out[0].dtype)
        assert deviation(out[0], expected).rel <= tolerance(dtype), (spec.name, case.name)

    def work(k: int) -> list[tuple[int, tuple[np.ndarray, ...]]]:
        order = np.random.default_rng(k).permutation(len(jobs))
        return [(int(i), run(int(i))) for i in order]

    for got in _in_threads(work, 4):
        assert not isinstance(got, Exception), repr(got)
        for i, out in got:
            spec, case, dtype = jobs[i]
            assert len(out) == len(alone[i]), (spec.name, case.name, dtype)
            for a, b in zip(out, alone[i]):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), \
                    (spec.name, case.name, dtype, a, b)


def test_checks_off_in_one_thread_stays_in_that_thread():
    """``unilosses.checks(False)`` is the body's own: a thread inside it runs the loss on
    values out of range, while threads outside it keep refusing them, at the same time."""
    p, t = np.array([0.5, 1.5, 0.2]), np.array([1.0, 0.0, 1.0])
    with unilosses.checks(False):
        expected = float(unilosses.binary_cross_entropy(p, t))
    assert np.isfinite(expected)

    def work(k: int) -> list[Any]:
        out: list[Any] = []
        for _ in range(200):
            try:
                if k % 2:
                    with unilosses.checks(False):
                        out.append(float(unilosses.binary_cross_entropy(p, t)))
                else:
                    out.append(float(unilosses.binary_cross_entropy(p, t)))
            except ValueError as e:
                out.append(e)
        return out

    for k, got in enumerate(_in_threads(work)):
        if k % 2:
            assert got == [expected] * 200, got[:3]
        else:
            assert all(isinstance(e, ValueError) and "[0, 1]" in str(e) for e in got), got[:3]


def test_torch_constants_cleared_while_other_threads_use_them():
    """torch's plain kernels cache constants by (value, dtype) and clear the cache at 256:
    threads that fill it with batch sizes and alphas of their own, in both dtypes, each get
    the one-thread result (no missing key, no constant of another dtype)."""
    torch = pytest.importorskip("torch")
    from unilosses.backends import _torch_kernels as kernels

    rng = np.random.default_rng(0)
    calls = []
    for n in range(1, 70):
        for dtype in (torch.float32, torch.float64):
            p = torch.tensor(rng.random((n, 3)) + 0.1, dtype=dtype)
            q = torch.tensor(rng.random((n, 3)), dtype=dtype)
            x = torch.tensor(rng.normal(size=n), dtype=dtype)
            y = torch.tensor(rng.integers(0, 2, n), dtype=dtype)
            alpha = float(rng.random()) * 0.9
            calls.append(lambda p=p, q=q: unilosses.categorical_cross_entropy(p, q))
            calls.append(lambda x=x, y=y, a=alpha: unilosses.binary_focal_loss_with_logits(
                x, y, alpha=a, gamma=2))
            calls.append(lambda x=x, y=y: unilosses.log_cosh(x, y))
    alone = [c() for c in calls]
    cleared = len(kernels._CONSTANTS) < len(calls)  # (more keys than it keeps: it cleared)
    assert cleared

    def work(k: int) -> list[tuple[int, Any]]:
        order = np.random.default_rng(k).permutation(len(calls))
        return [(int(i), calls[i]()) for i in order for _ in range(2)]

    for got in _in_threads(work):
        assert not isinstance(got, Exception), repr(got)
        for i, v in got:
            assert v.dtype == alone[i].dtype and torch.equal(v, alone[i]), (i, v, alone[i])
