"""Every Python block of the README runs as written (on the backends installed here)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _needs(code: str) -> str | None:
    for mod in ("torch", "jax", "tensorflow", "optax", "keras"):
        if re.search(rf"^\s*(import|from) {mod}\b", code, flags=re.M):
            if importlib.util.find_spec(mod) is None:
                return mod
    return None


def _keras_backend(code: str) -> dict[str, str] | None:
    """The environment for a block that picks Keras's backend with
    ``os.environ.setdefault("KERAS_BACKEND", name)``: as written where that framework is
    installed, else another of those its comment offers (a session with TensorFlow or torch
    alone); None where there is none."""
    m = re.search(r'setdefault\("KERAS_BACKEND", "(\w+)"\)', code)
    if m is None or importlib.util.find_spec(m.group(1)) is not None:
        return {}
    for name in ("jax", "tensorflow", "torch"):
        if importlib.util.find_spec(name) is not None:
            return {"KERAS_BACKEND": name}
    return None


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code):
    missing = _needs(code)
    if missing:
        pytest.skip(f"{missing} is not installed")
    keras_env = _keras_backend(code)
    if keras_env is None:
        pytest.skip("no backend for Keras is installed")
    # a fresh interpreter: what the README shows is all the reader has
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2", **keras_env})
