"""`import unilosses` stays framework-free; dispatch is cached per type."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_import_does_not_import_frameworks():
    code = (
        "import sys, unilosses, numpy as np\n"
        "unilosses.mse(np.ones(3), np.zeros(3))\n"
        "unilosses.sparse_categorical_cross_entropy_with_logits(\n"
        "    np.ones((2, 3)), np.zeros(2, int))\n"
        "bad = [m for m in ('torch', 'jax', 'tensorflow', 'keras', 'array_api_strict') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dispatch_is_cached_per_type():
    from unilosses.backends import _BY_TYPE, adapter_for

    a = adapter_for(np.ones(2))
    assert _BY_TYPE[np.ndarray] is a
    assert adapter_for(np.zeros(3)) is a


def test_ops_is_reached_from_import_unilosses():
    # the README names it `unilosses.ops`, to be used inside an @unilosses.loss function;
    # after a plain `import unilosses` that was AttributeError: module 'unilosses' has no
    # attribute 'ops'
    code = (
        "import sys, unilosses, numpy as np\n"
        "assert float(unilosses.ops.sigmoid(np.array(0.0))) == 0.5\n"
        "assert float(unilosses.ops.softplus(np.array(1000.0))) == 1000.0\n"
        "bad = [m for m in ('torch', 'jax', 'tensorflow', 'keras', 'array_api_strict') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
