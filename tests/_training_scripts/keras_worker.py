"""Run the Keras checks of the test suite under one Keras backend, in this fresh interpreter.

Usage: ``python keras_worker.py BACKEND OUT_DIR TEST_MODULE.py [TEST_MODULE.py ...]``

Sets ``KERAS_BACKEND`` before anything imports Keras, imports each test module by path, calls
every function named ``keras_check_*`` with a fresh directory under ``OUT_DIR``, and writes
``OUT_DIR/results.json``: ``{check name: {"ok": bool, "error": str, "seconds": float}}``.  The
assertions live in the checks; :mod:`keras_runner` turns each result into a pytest outcome.
Importing this module does nothing (pytest imports it while collecting doctests).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    backend, out_dir, *paths = argv
    os.environ["KERAS_BACKEND"] = backend
    sys.path.insert(0, str(TESTS))
    out = Path(out_dir)
    results: dict[str, dict[str, object]] = {}

    if backend != "tensorflow":
        # As for a user who installed only this backend: Keras would otherwise import
        # TensorFlow (~8 s) merely to ask whether it is there, on every (de)serialisation.
        # It also shows that unilosses.keras needs no TensorFlow under the other backends.
        sys.modules["tensorflow"] = None  # type: ignore[assignment]

    import keras

    if keras.backend.backend() != backend:
        raise SystemExit(f"Keras chose backend {keras.backend.backend()!r}, not {backend!r}")
    for path in paths:
        spec = importlib.util.spec_from_file_location(f"_keras_checks_{Path(path).stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in sorted(vars(module)):
            if not name.startswith("keras_check_"):
                continue
            tmp = out / name
            tmp.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            try:
                getattr(module, name)(tmp)
                results[name] = {"ok": True, "error": ""}
            except BaseException:  # noqa: B036 - every failure is reported, not raised
                results[name] = {"ok": False, "error": traceback.format_exc()}
            results[name]["seconds"] = round(time.perf_counter() - start, 2)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
