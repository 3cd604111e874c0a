"""unilosses.testing (assert_backend_parity, the pytest plugin) and parity --module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import unilosses
from conftest import installed
from unilosses.cli import main as cli_main
from unilosses.testing import assert_backend_parity, installed_backends

#: the tests that name array_api_strict: absent from the nox sessions of one framework
needs_strict = pytest.mark.skipif(not installed("array_api_strict"),
                                  reason="array_api_strict is not installed")

rng = np.random.default_rng(11)


@unilosses.loss
def charbonnier(xp, predictions, targets, *, eps=1e-3):
    d = predictions - targets
    return xp.sqrt(d * d + eps * eps) - eps


@unilosses.loss
def wrong_on_torch(xp, predictions, targets):
    """Deliberately wrong on one backend: a backend-specific constant."""
    d = predictions - targets
    scale = 1.001 if "torch" in getattr(xp, "__name__", "") else 1.0
    return d * d * scale


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_holds_for_a_correct_loss(dtype):
    p, t = rng.normal(size=(4, 3)).astype(dtype), rng.normal(size=(4, 3)).astype(dtype)
    assert_backend_parity(charbonnier, p, t, kwargs={"eps": 1e-2})
    d = p.astype(np.float64) - t
    # with an analytic reference the gradient tolerance is the dtype's alone
    assert_backend_parity(
        charbonnier, p, t,
        reference=lambda a, b: np.mean(np.sqrt((a - b) ** 2 + 1e-6) - 1e-3),
        reference_grad=lambda a, b: d / np.sqrt(d * d + 1e-6) / d.size)


def test_parity_fails_on_a_wrong_backend_with_a_readable_report():
    pytest.importorskip("torch")
    p, t = rng.normal(size=(5,)), rng.normal(size=(5,))
    with pytest.raises(AssertionError) as info:
        assert_backend_parity(wrong_on_torch, p, t)
    msg = str(info.value)
    assert "wrong_on_torch differs across backends (float64)" in msg
    assert "torch: value off by rel 0.001" in msg and "torch: gradient off" in msg
    assert "worst at index" in msg
    others = [b for b in installed_backends() if b != "torch"]
    assert not any(f"\n  {b}:" in msg for b in others), msg   # only torch is blamed



def float64_on_torch(predictions, targets):
    """Right values, wrong dtype on one backend (a plain function: the decorator refuses it)."""
    out = unilosses.mse(predictions, targets)
    return out.double() if type(out).__module__.startswith("torch") else out


def test_parity_fails_on_a_wrong_dtype():
    """A float32 loss that comes back as float64 on one backend is a failure: its values are
    fine, so comparing values alone (as before) passed it."""
    pytest.importorskip("torch")
    p, t = rng.normal(size=(5,)).astype("float32"), rng.normal(size=(5,)).astype("float32")
    with pytest.raises(AssertionError, match=r"torch: value of dtype float64, expected float32"):
        assert_backend_parity(float64_on_torch, p, t)
    assert_backend_parity(float64_on_torch, p.astype("float64"), t.astype("float64"))

def test_parity_rejects_unknown_backends():
    with pytest.raises(ValueError, match="not installed or unknown: cupy"):
        assert_backend_parity(charbonnier, np.zeros(2), np.zeros(2), backends=["cupy"])


@needs_strict
def test_pytest_plugin_gives_users_the_xp_matrix(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import unilosses

        def test_mse(xp):
            out = unilosses.mse(xp.asarray([0.0, 2.0]), xp.asarray([1.0, 2.0]))
            assert float(xp.to_numpy(out)) == 0.5
            assert xp.name in ("numpy", "array_api_strict", "torch", "jax", "tensorflow")
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--unilosses-backends", "numpy,array_api_strict", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "2 passed" in res.stdout


@pytest.fixture
def clean_registry():  # type: ignore[no-untyped-def]
    """--module registers specs process-wide; later parity runs must not see them."""
    from unilosses.parity import REGISTRY

    before = set(REGISTRY)
    yield
    for name in set(REGISTRY) - before:
        del REGISTRY[name]


@needs_strict
def test_parity_module_flag(tmp_path, monkeypatch, capsys, clean_registry):
    (tmp_path / "my_losses_ok.py").write_text(textwrap.dedent("""
        import unilosses

        @unilosses.loss
        def charbonnier(xp, predictions, targets, *, eps=1e-3):
            d = predictions - targets
            return xp.sqrt(d * d + eps * eps) - eps
    """))
    (tmp_path / "my_losses_bad.py").write_text(textwrap.dedent("""
        import unilosses

        @unilosses.loss
        def off_on_strict(xp, predictions, targets):
            d = predictions - targets
            return d * d * (1.01 if xp.__name__ == "array_api_strict" else 1.0)
    """))
    (tmp_path / "my_empty.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    backends = "numpy,array_api_strict"
    assert cli_main(["parity", "--module", "my_losses_ok", "--losses", "my_losses_ok.*",
                     "--backends", backends]) == 0
    assert "my_losses_ok.charbonnier" in capsys.readouterr().out
    assert cli_main(["parity", "--module", "my_losses_bad", "--losses", "my_losses_bad.*",
                     "--backends", backends]) == 1
    assert cli_main(["parity", "--module", "my_empty", "--backends", "numpy"]) == 2
    assert cli_main(["parity", "--module", "no_such_module_xyz", "--backends", "numpy"]) == 2
    assert "cannot import --module no_such_module_xyz" in capsys.readouterr().err
    # a file name, as `python my_losses_ok.py` takes it: said only "No module named
    # 'my_losses_ok.py'; 'my_losses_ok' is not a package"
    assert cli_main(["parity", "--module", "my_losses_ok.py", "--backends", "numpy"]) == 2
    assert capsys.readouterr().err.endswith(
        "; --module takes a module name, as `import` does: --module my_losses_ok\n")
