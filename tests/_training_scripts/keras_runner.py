"""Run the ``keras_check_*`` functions of the test modules once per Keras backend, each backend in
its own subprocess (see :mod:`keras_worker`), and report each check as a pytest outcome.

All checks of one backend share one process (one Keras import, ~5-10 s), whichever test module
asks first; the results are cached for the rest of the session.  Workers still running when
the session ends (a ``-k`` selection that needed only one backend) are killed.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("keras_worker.py")
#: the test modules whose keras_check_* functions the worker runs
CHECK_MODULES = (TESTS / "test_keras_losses.py", TESTS / "test_training.py")
KERAS_BACKENDS = ("jax", "tensorflow", "torch")
TIMEOUT_S = 600

#: keyed by (backend, the test modules its worker runs)
_results: dict[tuple[str, tuple[Path, ...]], dict[str, Any]] = {}


def _skip_reason(backend: str) -> str | None:
    if importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    if importlib.util.find_spec(backend) is None:
        return f"{backend} is not installed"
    if backend == "tensorflow" and importlib.util.find_spec(
            "unilosses.backends.tensorflow") is None:
        return ("unilosses.backends.tensorflow (the TensorFlow adapter) is not written yet; "
                "Keras on TensorFlow needs it")
    return None


def backend_params() -> list[Any]:
    """``pytest.param`` per Keras backend, skipped with the reason when it cannot run."""
    params = []
    for b in KERAS_BACKENDS:
        reason = _skip_reason(b)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(b, id=f"keras-{b}", marks=marks))
    return params


def _start(backend: str, out: Path, modules: tuple[Path, ...]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           # Keras users run JAX in its default float32 mode; the suite's conftest turns x64 on
           "JAX_ENABLE_X64": "0", "PYTHONPATH": os.pathsep.join(
               [str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(WORKER), backend, str(out), *map(str, modules)]
    # output to a file, not a pipe: a worker must never wait for us to read it
    with open(out / "worker.log", "w") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _collect(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    note = ""
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        note = f"the worker ran past {TIMEOUT_S} s and was stopped\n"
    path = out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["__log__"] = note + (out / "worker.log").read_text(errors="replace")[-8000:]
    return results


_running: dict[tuple[str, tuple[Path, ...]], tuple[subprocess.Popen[bytes], Path]] = {}


def _stop_running() -> None:
    for proc, _ in _running.values():
        if proc.poll() is None:
            proc.kill()


atexit.register(_stop_running)


def results_for(backend: str, tmp_path_factory: pytest.TempPathFactory,
                modules: tuple[Path, ...] = CHECK_MODULES) -> dict[str, Any]:
    """The worker's results for ``backend`` (running the checks of ``modules``); each check
    writes under a pytest temporary directory (``keras-BACKEND*/CHECK_NAME``).

    The first request for ``modules`` starts the workers of every backend that can run, side
    by side (they spend much of their time importing), and waits for the one asked for."""
    key = (backend, modules)
    if key not in _results:
        if not any(m == modules for _, m in _running):
            for b in KERAS_BACKENDS:
                if _skip_reason(b) is None:
                    out = tmp_path_factory.mktemp(f"keras-{b}")
                    _running[b, modules] = (_start(b, out, modules), out)
        if key not in _running:
            out = tmp_path_factory.mktemp(f"keras-{backend}")
            _running[key] = (_start(backend, out, modules), out)
        proc, out = _running[key]
        _results[key] = _collect(proc, out)
    return _results[key]


def assert_check(backend: str, name: str, tmp_path_factory: pytest.TempPathFactory,
                 modules: tuple[Path, ...] = CHECK_MODULES) -> None:
    """Fail (with the check's traceback) unless check ``name`` passed under ``backend``; a
    test module whose checks run in workers of their own passes itself as ``modules``."""
    results = results_for(backend, tmp_path_factory, modules)
    if name not in results:
        pytest.fail(f"the Keras worker for {backend} did not report {name}; its output:\n"
                    f"{results['__log__']}", pytrace=False)
    if not results[name]["ok"]:
        pytest.fail(f"{name} under KERAS_BACKEND={backend}:\n{results[name]['error']}",
                    pytrace=False)


def check_names(module_globals: dict[str, Any]) -> list[str]:
    return sorted(n for n in module_globals if n.startswith("keras_check_"))
