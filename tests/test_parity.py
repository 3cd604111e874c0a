"""The ``unilosses parity`` command: it passes on every installed backend, and it can fail.

A report that cannot fail proves nothing, so the central tests here break an adapter on
purpose (a clip off by 10%, a gradient off with the value intact, a peer that disagrees)
and check the run exits non-zero and names the culprit.  The rest covers the command line:
output formats, selection flags, messages for missing backends and matplotlib, extension with
a user's own loss, and the independent references themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import unilosses
from conftest import installed
from unilosses.cli import main
from unilosses.parity import (
    PEERS,
    REGISTRY,
    Case,
    LossSpec,
    Options,
    Peer,
    references,
    register,
    run,
)
from unilosses.parity import backends as parity_backends
from unilosses.parity.cases import uncovered
from unilosses.parity.tolerance import FD_RTOL, deviation, tolerance

# Losses that use every adapter primitive (softplus, log-sigmoid, sigmoid, log-softmax, clip,
# take_along_axis) and every family, for the backends whose full run is slow here: JAX
# compiles each operation on first use (0.1-0.2 s each on a 2-core machine).  The full run on
# every backend is `unilosses parity` itself, in the nox "parity" session.
SAMPLE = ("huber,binary_cross_entropy,sparse_categorical_cross_entropy_with_logits,"
          "binary_focal_loss_with_logits,top_k_accuracy")
FAST = ("numpy", "array_api_strict", "torch")


def _losses_for(backend: str) -> list[str] | None:
    return None if backend in FAST else SAMPLE.split(",")


def _run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["parity", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -- it passes -------------------------------------------------------------------------------
def test_normal_run_exits_zero(capsys):
    code, out, _ = _run_cli(capsys, "--backends", "numpy")
    assert code == 0, out
    assert "PASS" in out.splitlines()[-1]
    assert "loss" in out and "value rel" in out and "x-backend" in out
    for name in REGISTRY:
        assert name in out


def test_parity_passes_on_backend(xp):
    report = run(Options(backends=[xp.name], losses=_losses_for(xp.name)))
    failures = [(r.loss, r.dtype, c.case, chk) for r, c, chk in report.failures()]
    assert report.exit_code == 0, failures
    rows = [r for r in report.rows if r.backend == xp.name]
    assert len(rows) == len(report.losses) * 2
    if xp.differentiable:
        # every differentiable loss had its gradient compared with a reference
        graded = {r.loss for r in rows if r.grad is not None}
        assert graded == {r.loss for r in rows if REGISTRY[r.loss].differentiable}


@pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
def test_peers_compared_on_torch():
    report = run(Options(backends=["torch"], losses=["mse", "huber",
                                                     "sparse_categorical_cross_entropy_with_logits",
                                                     "binary_focal_loss_with_logits"],
                         dtypes=["float32"]))
    assert report.exit_code == 0
    peers = {(r.loss, p.name) for r in report.rows for p in r.peer_summaries()}
    assert ("mse", "F.mse_loss") in peers
    assert ("huber", "F.huber_loss") in peers
    assert ("sparse_categorical_cross_entropy_with_logits", "F.cross_entropy") in peers
    assert ("binary_focal_loss_with_logits", "torchvision sigmoid_focal_loss") in peers


# -- it can fail -----------------------------------------------------------------------------
# The sabotaged primitive is the adapter's clip, with which log_cosh clamps the error to +-40
# before its closed form on every backend (no backend has a log_cosh kernel)
def _clip_off(original):  # type: ignore[no-untyped-def]
    def clip(self, x, lo, hi):  # type: ignore[no-untyped-def]
        # log cosh(1.1 d) + 0.1 |d|: wrong by far more than float32's tolerance
        return original(self, x, lo, hi) * 1.1

    return clip


def test_wrong_numpy_adapter_fails(monkeypatch, capsys):
    from unilosses.backends.numpy import NumpyAdapter

    monkeypatch.setattr(NumpyAdapter, "clip", _clip_off(NumpyAdapter.clip))
    code, out, _ = _run_cli(capsys, "--backends", "numpy", "--losses",
                            "log_cosh", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False and data["exit_code"] == 1
    failed = {(f["loss"], f["what"]) for f in data["failures"]}
    assert ("log_cosh", "value") in failed


def test_wrong_adapter_fails_on_backend(xp, monkeypatch):
    cls = type(xp.ad)
    monkeypatch.setattr(cls, "clip", _clip_off(cls.clip))
    report = run(Options(backends=[xp.name], losses=["log_cosh"],
                         dtypes=["float32"], peers=False))
    assert report.exit_code == 1
    whats = {chk.what for _, _, chk in report.failures() if chk is not None}
    assert "value" in whats
    if xp.differentiable:
        assert "grad" in whats


@pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
def test_wrong_gradient_with_right_value_fails(monkeypatch):
    from unilosses.backends.torch import TorchAdapter

    original = TorchAdapter.clip

    def clip(self, x, lo, hi):  # type: ignore[no-untyped-def]
        # the same value, a gradient 10% too large (log_cosh's |d - clip(d)| stays 0 with
        # gradient 0 inside the clip)
        c = original(self, x, lo, hi)
        return c + 0.1 * (c - c.detach())

    monkeypatch.setattr(TorchAdapter, "clip", clip)
    report = run(Options(backends=["torch"], losses=["log_cosh"],
                         dtypes=["float64"], peers=False))
    assert report.exit_code == 1
    whats = {chk.what for _, _, chk in report.failures() if chk is not None}
    assert "grad" in whats and "value" not in whats


def test_disagreeing_peer_fails_and_known_one_does_not(monkeypatch):
    def off(x, t, *, options, arrays, dtype):  # type: ignore[no-untyped-def]
        return np.mean((x - t) ** 2) * 1.01

    monkeypatch.setattr(PEERS, "peers", [*PEERS.peers, Peer("fake mse", "mse", "numpy", off)])
    report = run(Options(backends=["numpy"], losses=["mse"], dtypes=["float32"]))
    assert report.exit_code == 1
    assert {chk.against for _, _, chk in report.failures() if chk is not None} == {"fake mse"}

    known = Peer("fake mse", "mse", "numpy", off, known={"float32": "off by 1% on purpose"})
    monkeypatch.setattr(PEERS, "peers", [*PEERS.peers[:-1], known])
    report = run(Options(backends=["numpy"], losses=["mse"], dtypes=["float32"]))
    assert report.exit_code == 0
    (summary,) = [p for r in report.rows for p in r.peer_summaries()]
    assert summary.known == "off by 1% on purpose"


def test_kl_extreme_case_has_its_zero_target():
    # the case's -inf log-probability sits where the target is 0, so the loss is finite there;
    # built with a tuple assignment, the row's zero was overwritten (loss and reference inf)
    case = next(c for c in REGISTRY["kl_divergence"].make_cases(0)
                if c.name == "log p = -inf at t = 0")
    logp, t = case.args
    assert t[0, 1] == 0.0 and logp[0, 1] == -np.inf
    np.testing.assert_allclose(t.sum(axis=-1), 1.0)
    assert np.isfinite(unilosses.kl_divergence(logp, t))


def test_loss_that_raises_is_a_failure(capsys):
    def broken(p, t, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    spec = LossSpec("_broken", broken, references.mse_value,
                    lambda rng: [Case("ordinary", (rng.normal(size=3), rng.normal(size=3)))])
    register(spec)
    try:
        code, out, _ = _run_cli(capsys, "--backends", "numpy", "--losses", "_broken")
    finally:
        del REGISTRY["_broken"]
    assert code == 1
    assert "RuntimeError: boom" in out and "ERROR" in out


def test_non_finite_result_fails_even_where_the_reference_agrees(registered, capsys):
    # a loss gives a finite answer or an error: inf (or NaN) against the same from a
    # reference is a failure, not a match
    def value(p, t, *, dtype):  # type: ignore[no-untyped-def]
        return np.mean((p - t) ** 2) + np.inf

    def grad(p, t, *, dtype):  # type: ignore[no-untyped-def]
        return np.full(p.shape, np.nan)

    registered(LossSpec("_inf_loss", lambda p, t: unilosses.mse(p, t) + float("inf"), value,
                        lambda rng: [Case("ordinary", (rng.normal(size=3),
                                                       rng.normal(size=3)))], grad=grad))
    code, out, _ = _run_cli(capsys, "--backends", "numpy", "--losses", "_inf_loss", "--dtype",
                            "float64")
    assert code == 1, out
    assert "non-finite" in out and "FAIL" in out


# -- output formats --------------------------------------------------------------------------
def test_json_structure(capsys, tmp_path):
    path = tmp_path / "parity.json"
    code, out, _ = _run_cli(capsys, "--backends", "numpy", "--losses", "mse,in_top_k",
                            "--json", "--out", str(path))
    assert code == 0
    assert "PASS" in out and str(path) in out
    data = json.loads(path.read_text())
    assert {"unilosses", "ok", "exit_code", "seed", "dtypes", "losses", "backends", "rows",
            "failures", "tolerances", "peer_notes", "compile"} <= set(data)
    assert data["ok"] is True and data["failures"] == []
    assert data["dtypes"] == ["float32", "float64"]
    assert data["losses"] == ["mse", "in_top_k"]
    (numpy,) = [b for b in data["backends"] if b["name"] == "numpy"]
    assert numpy["available"] is True and numpy["version"] == np.__version__
    assert set(data["tolerances"]["per_dtype"]) == {"float32", "float64"}
    assert data["tolerances"]["per_dtype"]["float32"]["tol"] == tolerance("float32")
    assert len(data["rows"]) == 4
    row = data["rows"][0]
    assert {"loss", "backend", "dtype", "tol", "ok", "value", "grad", "cross_backend", "peers",
            "compile", "cases"} <= set(row)
    assert set(row["value"]) == {"abs", "rel"}
    case = row["cases"][0]
    assert {"case", "kind", "ok", "value", "grad", "cross_backend", "peers",
            "compiled"} <= set(case)
    assert case["value"]["against"] == "reference"


def test_markdown(capsys):
    code, out, _ = _run_cli(capsys, "--backends", "numpy", "--losses", "mse", "--markdown",
                            "--dtype", "float32")
    assert code == 0
    assert out.startswith("# unilosses")
    assert "## Backends" in out and "- **numpy**" in out
    assert "| loss | backend | value rel |" in out
    assert "| mse | numpy |" in out
    assert "**PASS" in out


def test_list(capsys):
    code, out, _ = _run_cli(capsys, "--list")
    assert code == 0
    assert "binary_cross_entropy_with_logits" in out and "logits ±1e4" in out
    assert "F.binary_cross_entropy_with_logits [torch]" in out


def test_plot_without_matplotlib_says_how(monkeypatch, capsys, tmp_path):
    from unilosses.parity import plot

    monkeypatch.setattr(plot, "matplotlib_available", lambda: False)
    code, out, err = _run_cli(capsys, "--backends", "numpy", "--plot",
                              str(tmp_path / "p.png"))
    assert code == 2
    assert "pip install matplotlib" in err
    assert not (tmp_path / "p.png").exists()


@pytest.mark.skipif(not parity_backends.is_installed("matplotlib"),
                    reason="matplotlib is not installed")
def test_plot_writes_png(capsys, tmp_path):
    path = tmp_path / "p.png"
    code, _, _ = _run_cli(capsys, "--backends", "numpy", "--losses", "mse,mae", "--plot",
                          str(path))
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



@pytest.mark.parametrize("flag", ["--out", "--plot"])
def test_an_unwritable_output_is_a_usage_error_before_the_run(monkeypatch, capsys, tmp_path,
                                                               flag):
    # it was a FileNotFoundError traceback (exit 1) after the whole run, its report lost
    import unilosses.parity

    monkeypatch.setattr(unilosses.parity, "run", lambda opts: pytest.fail("ran"))
    monkeypatch.setattr("unilosses.parity.plot.matplotlib_available", lambda: True)
    path = tmp_path / "no_such_dir" / "report.png"
    code, out, err = _run_cli(capsys, "--backends", "numpy", flag, str(path))
    assert code == 2
    assert err == (f"unilosses parity: error: cannot write {flag} {path}: "
                   f"the directory {path.parent} does not exist\n")



def test_an_unknown_torch_compile_backend_is_a_usage_error(capsys):
    # it ran every loss, each row "FAIL ... did not trace: InvalidBackend", exit 1
    pytest.importorskip("torch")
    code, out, err = _run_cli(capsys, "--backends", "torch", "--losses", "mse", "--dtype",
                              "float32", "--compile", "--torch-compile-backend", "bogus")
    assert code == 2 and out == ""
    assert err.startswith("unilosses parity: error: unknown --torch-compile-backend 'bogus'; "
                          "torch.compile's backends: ")
    assert "aot_eager" in err and "inductor" in err


# -- selection -------------------------------------------------------------------------------
def test_selection_flags(capsys):
    code, out, _ = _run_cli(capsys, "--backends", "numpy", "--losses", "binary_*",
                            "--losses", "mse", "--dtype", "float32", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["dtypes"] == ["float32"]
    assert set(data["losses"]) == {"mse", "binary_cross_entropy",
                                   "binary_cross_entropy_with_logits", "binary_focal_loss",
                                   "binary_focal_loss_with_logits"}
    assert {(r["backend"], r["dtype"]) for r in data["rows"]} == {("numpy", "float32")}


@pytest.mark.parametrize("flag, value, message", [
    ("--losses", "no_such_loss", "no registered loss matches 'no_such_loss'"),
    ("--backends", "pytorch", "unknown backend 'pytorch'"),
    ("--dtype", "float16", "unknown dtype 'float16'"),
])
def test_bad_selection_is_a_usage_error(capsys, flag, value, message):
    code, _, err = _run_cli(capsys, flag, value)
    assert code == 2
    assert message in err


def _only(monkeypatch, *present: str) -> None:
    """Pretend that only ``present`` (framework module names) are installed."""
    real = parity_backends.is_installed
    monkeypatch.setattr(parity_backends, "is_installed",
                        lambda m: real(m) if m in present else False)


def test_missing_backends_are_listed_with_install_command(monkeypatch, capsys):
    _only(monkeypatch, "numpy")
    code, out, _ = _run_cli(capsys, "--losses", "mse")
    assert code == 0, out  # nothing asked for by name: a run on what is there
    for name in ("array_api_strict", "torch", "jax", "tensorflow"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name))
        assert "not installed" in line and "pip install" in line
    assert 'pip install "unilosses[torch]"' in out
    assert "PASS" in out


def test_missing_backend_named_explicitly_exits_3(monkeypatch, capsys):
    _only(monkeypatch, "numpy")
    code, out, _ = _run_cli(capsys, "--backends", "numpy,jax", "--losses", "mse")
    assert code == 3
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("jax"))
    assert 'not installed: pip install "unilosses[jax]"' in line
    assert "INCOMPLETE" in out


def test_backend_that_fails_to_load_is_a_failure(monkeypatch, capsys):
    real = parity_backends.adapter_named

    def adapter_named(name):  # type: ignore[no-untyped-def]
        if name == "array_api_strict":
            raise ImportError("adapter is broken")
        return real(name)

    monkeypatch.setattr(parity_backends, "is_installed", lambda m: True)
    monkeypatch.setattr(parity_backends, "adapter_named", adapter_named)
    code, out, _ = _run_cli(capsys, "--backends", "numpy,array_api_strict", "--losses", "mse")
    assert code == 1
    assert "failed to load: ImportError: adapter is broken" in out


# -- extension: a user's own loss ------------------------------------------------------------
def _my_l2(p, t, *, where=None):  # type: ignore[no-untyped-def]
    return unilosses.mse(p, t, where=where)


def _my_cases(rng):  # type: ignore[no-untyped-def]
    p, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    return [Case("ordinary", (p, t)), Case("zero error", (t, t), kind="extreme")]


@pytest.fixture
def registered():  # type: ignore[no-untyped-def]
    names: list[str] = []

    def add(spec: LossSpec) -> LossSpec:
        names.append(spec.name)
        return register(spec)

    yield add
    for n in names:
        REGISTRY.pop(n, None)


def test_user_loss_checked_with_finite_difference_gradient(registered):
    def value(p, t, *, dtype):  # type: ignore[no-untyped-def]
        return np.mean((p - t) ** 2)

    registered(LossSpec("my_l2", _my_l2, value, _my_cases))  # no analytic gradient
    backends = ["numpy"] + (["torch"] if installed("torch") else [])
    report = run(Options(backends=backends, losses=["my_l2"]))
    assert report.exit_code == 0
    if installed("torch"):
        (row,) = [r for r in report.rows if r.backend == "torch" and r.dtype == "float64"]
        assert row.grad_references == ["finite differences"]


def test_user_loss_with_wrong_reference_fails(registered):
    def value(p, t, *, dtype):  # type: ignore[no-untyped-def]
        return np.sum((p - t) ** 2)  # sum, where the loss means

    registered(LossSpec("my_l2_wrong", _my_l2, value, _my_cases))
    assert run(Options(backends=["numpy"], losses=["my_l2_wrong"])).exit_code == 1


def test_uncovered_public_losses_are_listed(monkeypatch, capsys):
    def new_loss(p, t):  # type: ignore[no-untyped-def]
        return unilosses.mse(p, t)

    new_loss.__module__ = "unilosses.losses.regression"
    monkeypatch.setattr(unilosses, "new_loss", new_loss, raising=False)
    monkeypatch.setattr(unilosses, "__all__", [*unilosses.__all__, "new_loss"])
    code, out, _ = _run_cli(capsys, "--backends", "numpy", "--dtype", "float32", "--json")
    assert code == 0  # listed, not failed: the losses that are registered all passed
    assert "new_loss" in json.loads(out)["uncovered"]


def test_every_public_loss_is_registered():
    assert not uncovered(), f"public losses with no parity spec: {', '.join(uncovered())}"


# -- the references themselves ---------------------------------------------------------------
def test_analytic_reference_gradients_match_finite_differences():
    """Two independent routes to each reference gradient agree (so neither is the bug)."""
    worst = {}
    for spec in REGISTRY.values():
        if spec.grad is None:
            continue
        for case in spec.make_cases(0):
            kw = {**case.options, **case.arrays, "dtype": "float64"}
            if not case.fd or np.ndim(spec.value(*case.args, **kw)) != 0:
                continue
            g = spec.grad(*case.args, **kw)
            if g is None:
                continue
            fd = references.finite_difference(spec.value, *case.args, **kw)
            worst[(spec.name, case.name)] = deviation(fd, g).rel
    assert len(worst) > 20
    bad = {k: v for k, v in worst.items() if v > FD_RTOL / 10}
    assert not bad, bad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_clip_constants_follow_the_dtype(dtype):
    # -log(1 - p) at p = 1 with the clip 1 - 1e-7 rounded to the dtype
    hi = float(np.dtype(dtype).type(1 - 1e-7))
    v = references.binary_cross_entropy_value(np.array([1.0]), np.array([0.0]), dtype=dtype)
    assert v == pytest.approx(-np.log1p(-hi), rel=1e-12)


# -- compiled --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "jax", "tensorflow"])
def test_compile_traces_and_matches(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    report = run(Options(backends=[name], losses=["binary_cross_entropy_with_logits"],
                         dtypes=["float32"], compile=True, peers=False))
    assert report.exit_code == 0, report.failures()
    assert {r.compile_status for r in report.rows} == {"ok"}


# -- the command -----------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def test_import_loads_no_framework():
    code = ("import sys, unilosses, unilosses.cli, unilosses.parity, unilosses.parity.report\n"
            "bad = [m for m in ('torch', 'jax', 'tensorflow', 'keras', 'optax', 'matplotlib')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def test_python_m_unilosses_parity():
    proc = subprocess.run([sys.executable, "-m", "unilosses", "parity", "--backends", "numpy",
                           "--losses", "mse", "--dtype", "float32"],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
