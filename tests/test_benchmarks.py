"""The benchmark runner (``python -m benchmarks``): a smoke test and the fairness of its peers.

* Every peer the benchmark times computes the same number and gradient as the unilosses loss
  on the benchmark's own inputs (float32 tolerance), on every backend with peers: a ratio in
  the table compares two implementations of the same thing.
* The runner runs end to end on tiny sizes (NumPy, torch, JAX; eager and jax.jit; one size in
  a fresh process) and writes a well-formed Markdown table and JSON.  No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import backends as B  # noqa: E402
from benchmarks.cases import CASES, LOSSES, Size, parse_size  # noqa: E402
from benchmarks.report import COLUMNS  # noqa: E402
from benchmarks.run import compare, unilosses_fn  # noqa: E402


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _backend(name: str):  # type: ignore[no-untyped-def]
    marks = [] if _have(B.MODULES[name]) else [pytest.mark.skip(reason=f"{name} not installed")]
    return pytest.param(name, id=name, marks=marks)


#: sizes the agreement is checked at: 1e3 elements, and a small focal-like shape for the
#: focal losses (the run itself checks every peer again at every size it measures)
AGREEMENT_SIZES = (parse_size("1e3"), parse_size("2x3x8x8"))


def _outputs(backend: str, work: list) -> list:  # type: ignore[type-arg]
    """For each (fns, pass, arrays) of ``work``, every fn's (value, grad) on ``arrays``.

    JAX runs it all under one ``jax.jit``: eager jax compiles every op of every shape, and a
    jit per function costs as much again; one compilation is a few seconds.
    """
    if backend != "jax":
        return [[B.make_step(backend, "eager", pass_, f, arrays)() for f in fns]
                for fns, pass_, arrays in work]
    import jax

    def everything(all_arrays):  # type: ignore[no-untyped-def]
        out = []
        for (fns, pass_, _), arrays in zip(work, all_arrays):
            if pass_ == "fwd+bwd":
                out.append([jax.value_and_grad(f)(*arrays) for f in fns])
            else:
                out.append([(f(*arrays), None) for f in fns])
        return out

    return jax.jit(everything)([arrays for _, _, arrays in work])


@pytest.mark.parametrize("backend", [_backend(b) for b in B.BACKENDS])
def test_every_peer_agrees_with_unilosses(backend: str) -> None:
    from benchmarks.peers import peers_for

    peers = peers_for(backend)
    assert set(peers) <= set(LOSSES)
    if backend in ("numpy", "torch", "jax"):
        # every seed loss has a peer on these backends
        assert set(peers) == set(LOSSES), set(LOSSES) - set(peers)
    work, labels = [], []
    for name, case in CASES.items():
        # fwd+bwd gives the value too; NumPy has no gradient
        pass_ = "fwd+bwd" if case.differentiable and backend != "numpy" else "fwd"
        fns = [unilosses_fn(case)] + [p.fn for p in peers.get(name, [])]
        for size in AGREEMENT_SIZES:
            if case.shape(size) is not None:
                arrays = tuple(B.to_backend(backend, a) for a in case.make(size, seed=1))
                work.append((fns, pass_, arrays))
                labels.append((name, size.label, pass_,
                               [p.name for p in peers.get(name, [])]))
    failures, checked = [], 0
    for (name, label, pass_, peer_names), outs in zip(labels, _outputs(backend, work)):
        for peer, got in zip(peer_names, outs[1:]):
            result = compare(outs[0], got)
            checked += 1
            if not result["ok"]:
                failures.append((name, label, pass_, peer, result))
    assert not failures, failures
    assert checked >= len(peers)


def test_focal_shape_and_sizes() -> None:
    from benchmarks.cases import FOCAL_SHAPE, focal_size, size_label

    assert [size_label(n) for n in (16, 1000, 10**6, 16 * 10**6)] == ["16", "1e3", "1e6",
                                                                      "1.6e7"]
    assert parse_size("1.6e7").elements == 16_000_000
    focal = focal_size()
    assert focal.shape == FOCAL_SHAPE
    assert CASES["binary_focal_loss_with_logits"].shape(focal) == FOCAL_SHAPE
    assert CASES["anchor_focal_loss_with_logits"].shape(focal) == (8, 384 * 384, 19)
    assert CASES["mse"].shape(focal) is None  # the focal shape is for the focal losses
    assert CASES["sparse_categorical_cross_entropy"].shape(Size("1e3", 1000)) == (10, 100)


def _check_outputs(out: Path, backends: set[str], losses: set[str]) -> dict:  # type: ignore[type-arg]
    md = (out / "results.md").read_text()
    result = json.loads((out / "results.json").read_text())
    lines = md.splitlines()
    assert lines[0] == "# unilosses benchmark"
    for key in ("- machine:", "- versions:", "- threads:", "- malloc:", "- memory bandwidth:"):
        assert any(line.startswith(key) for line in lines), key
    header = "| " + " | ".join(COLUMNS) + " |"
    start = lines.index(header)
    assert lines[start + 1] == "|" + "---|" * len(COLUMNS)
    table = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(COLUMNS), line
        table.append(dict(zip(COLUMNS, cells)))
    assert table
    assert {r["backend"] for r in table} == backends
    assert {r["loss"] for r in table} == losses
    for r in table:
        assert r["unilosses ms"] != "error" and r["peer ms"] != "error", r
        assert "≠" not in r["peer"], r
        float(r["unilosses ms"]), float(r["peer ms"]), float(r["ratio"])
        for cell in (r["floor multiple"], r["peak extra MB"]):
            assert len(cell.split(" / ")) == 2, r
    assert result["bandwidth"]["gbs"] > 0
    assert result["machine"]["cpu"]
    for job in result["jobs"]:
        assert "error" not in job, job.get("error")
        for g in job["groups"]:
            assert g["floor_ms"] > 0
            assert all(a["ok"] for a in g["agreement"].values()), g["agreement"]
            for r in g["results"].values():
                assert r["error"] is None and r["median_ms"] > 0, r
    return result


def _smoke_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI sets thread variables for the frameworks; keep them out of this process's state
    from benchmarks.cli import THREAD_ENV

    for name in THREAD_ENV + ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND"):
        monkeypatch.setenv(name, "1")


def test_runner_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    for m in ("torch", "jax"):
        if not _have(m):
            pytest.skip(f"{m} not installed")
    import torch
    from benchmarks.cli import main

    _smoke_env(monkeypatch)
    losses = ["mse", "in_top_k"]
    rc = main(["--backends", "numpy,torch,jax", "--losses", ",".join(losses),
               "--sizes", "16,1e3", "--repeats", "2", "--warmup", "1", "--min-time", "0",
               "--bandwidth-mb", "8", "--malloc", "system", "--no-isolate",
               "--threads", str(torch.get_num_threads()), "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    result = _check_outputs(tmp_path, {"numpy", "torch", "jax"}, set(losses))
    printed = capsys.readouterr().out
    assert "| loss | backend |" in printed
    groups = [g for job in result["jobs"] for g in job["groups"]]
    modes = {(g["backend"], g["mode"]) for g in groups}
    assert modes == {("numpy", "eager"), ("torch", "eager"), ("jax", "eager"),
                     ("jax", "compiled")}  # torch.compile is opt-in
    assert {g["pass"] for g in groups if g["backend"] != "numpy"} == {"fwd", "fwd+bwd"}
    assert {g["size"] for g in groups} == {"16", "1e3"}


def test_runner_isolated_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A size at or above --isolate-min runs in a fresh ``python -m benchmarks`` worker."""
    from benchmarks.cli import main

    _smoke_env(monkeypatch)
    rc = main(["--backends", "numpy", "--losses", "mse,in_top_k", "--sizes", "1e3",
               "--repeats", "2", "--warmup", "1", "--min-time", "0", "--bandwidth-mb", "8",
               "--isolate-min", "1e3", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    result = _check_outputs(tmp_path, {"numpy"}, {"mse", "in_top_k"})
    (job,) = result["jobs"]
    assert job["isolated"] and job["settings"]["malloc"]["setting"] == "retain"


def test_device_steps_wait_once_per_sample() -> None:
    """On a GPU a sample's calls run back to back and wait once, at its end."""
    from benchmarks.timing import Timing, time_group

    calls = {"step": 0, "run": 0, "wait": 0}

    def step() -> int:
        calls["step"] += 1
        return 1

    def run() -> int:
        calls["run"] += 1
        return 2

    def wait(out: int) -> None:
        assert out == 2  # the last call's output
        calls["wait"] += 1

    step.run, step.wait = run, wait  # type: ignore[attr-defined]
    t = Timing()
    time_group([step], repeats=3, warmup=2, min_time=1e-3, timings=[t])
    assert len(t.samples) == 3 and calls["wait"] == 3
    # the warm-up and the calibration of the calls per sample are synchronised
    assert calls["run"] == 3 * t.number and calls["step"] >= 3


def test_samples_are_sized_from_calls_after_the_warm_up() -> None:
    """A first call's one-time cost (here a 50 ms sleep) does not shrink the samples: the
    calls per sample come from calls timed after the warm-up."""
    import time

    from benchmarks.timing import Timing, time_group

    calls = []

    def step() -> None:
        if not calls:
            time.sleep(0.05)
        calls.append(1)

    t = Timing()
    time_group([step], repeats=2, warmup=2, min_time=0.01, timings=[t])
    # (the warm-up's mean, 25 ms a call, would have made it 1)
    assert t.number > 100 and len(t.samples) == 2


@pytest.mark.parametrize("backend", [_backend("torch"), _backend("jax")])
def test_device_step_runs_and_waits(backend: str) -> None:
    """The step's ``run`` and ``wait`` (as on a GPU) give the value and gradient (here on
    the CPU: this machine has no GPU)."""
    import numpy as np

    import unilosses

    a = np.linspace(-2.0, 2.0, 12, dtype=np.float32)
    x, y = B.to_backend(backend, a), B.to_backend(backend, a[::-1].copy())
    step = B.make_step(backend, "eager", "fwd+bwd", unilosses.mse, (x, y), device="cuda")
    out = step.run()  # type: ignore[attr-defined]
    step.wait(out)  # type: ignore[attr-defined]
    expected = np.mean((a.astype(np.float64) - a[::-1]) ** 2)
    np.testing.assert_allclose(B.to_numpy(out[0]), expected, rtol=1e-6)
    np.testing.assert_allclose(B.to_numpy(out[1]), 2 * (a - a[::-1]) / a.size, rtol=1e-6)
    assert not hasattr(B.make_step(backend, "eager", "fwd", unilosses.mse, (x, y)), "run")
    with pytest.raises(ValueError, match="does not run on device"):
        B.to_backend("tensorflow", a, "cuda")


def test_report_of_a_gpu_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's table as written on a GPU: the device, the copy's floor, the allocator's peak."""
    from benchmarks.cli import main
    from benchmarks.report import markdown

    _smoke_env(monkeypatch)
    rc = main(["--backends", "numpy", "--losses", "mse", "--sizes", "16", "--repeats", "1",
               "--warmup", "1", "--min-time", "0", "--bandwidth-mb", "8", "--no-isolate",
               "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert "- memory bandwidth:" in markdown(result) and "device:" not in markdown(result)
    result["config"]["device"] = "cuda"
    result["bandwidth"] = {"bytes": 2 * 10**9, "method": "torch copy_ on the GPU, CUDA events, "
                           "read + write", "repeats": 10, "single_gbs": 4232.0, "threads": 1,
                           "multi_gbs": None, "gbs": 4232.0, "device": "NVIDIA H200"}
    text = markdown(result)
    assert "- device: cuda (NVIDIA H200); memory bandwidth (the floor's): 4232 GB/s" in text
    assert "torch's allocator peak" in text and "resident high-water mark" not in text
    result["interrupted"] = True
    assert "the run was cut short" in markdown(result)


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--min-time", "-1"], "--min-time"),
    (["--threads", "0"], "--threads"),
    (["--bandwidth-mb", "0"], "--bandwidth-mb"),
    (["--sizes", "abc"], "bad size 'abc'"),
    (["--sizes", "0"], "bad size '0'"),
    (["--focal-shape", "2x0"], "bad shape '2x0'"),
], ids=["repeats", "warmup", "min-time", "threads", "bandwidth", "size-text", "size-0",
        "shape"])
def test_bad_values_are_refused_before_running(args: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A value that cannot run is a usage error naming it, not a traceback or a table of
    errors (``--repeats 0`` ran, timed nothing and exited 0)."""
    from benchmarks.cli import config_from, parser

    with pytest.raises(SystemExit) as exc:
        config_from(parser().parse_args(["--backends", "numpy", *args]))
    assert exc.value.code not in (0, None)
    assert message in f"{exc.value.code} {capsys.readouterr().err}"


@pytest.mark.skipif(not _have("torch"), reason="benchmarks.options times torch only")
def test_options_benchmark_compares_like_with_like(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.options``: unilosses, its composition and the torch formula give
    the same value and gradient on its inputs, and the runner prints a row for each."""
    import torch
    from benchmarks import options

    for n in (16, 1000):
        for case in options._cases(torch, n):
            (ours, composition, theirs), first = options._steps(torch, case, True)
            got = []
            for step in (ours, composition, theirs):
                first.grad = None
                got.append((step().detach().double(), first.grad.double()))
            # (on probabilities the derivative -t/p + sum(t)/sum(p) cancels: float32's
            # rounding, relative to its terms' size t/p)
            terms = 1.0 if "probabilities" not in case[0] else float(
                (case[3][1] / case[3][0]).abs().max())
            for value, grad in got[1:]:
                torch.testing.assert_close(value, got[0][0], rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(grad, got[0][1], rtol=1e-5, atol=1e-7 * terms)
    assert options.main(["--sizes", "16", "--repeats", "1", "--min-time", "0"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "16" in r]
    assert len(rows) == 2 * len(options._cases(torch, 16))
    assert all(len(r.split("|")) == 10 for r in rows), rows
    # --cases: only the cases whose label holds one of the words (with and without a mask)
    assert options.main(["--sizes", "16", "--repeats", "1", "--min-time", "0",
                         "--cases", "focal,log_cosh"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "16" in r]
    assert sorted({r.split("|")[1].split(",")[0].strip() for r in rows}) == [
        "focal with logits", "log_cosh"]
    assert len(rows) == 8
