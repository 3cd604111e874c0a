"""unilosses.distributed: full-batch values and gradients on JAX, PyTorch DDP and TensorFlow.

The multi-device runs are subprocesses (``tests/_distributed_scripts/``): JAX needs its host
device count before it is imported, torch.distributed needs one process per rank, TensorFlow
needs its logical devices before it initialises.  Each script writes its numbers to an .npz
and the tests here assert on them: the documented recipe matches the single-device full batch
(value, gradient or parameters after one SGD step) to float64 rounding, and the tempting wrong
recipes are shown to differ, by the factor the module docstring derives where there is one.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import unilosses
from conftest import tolerance
from unilosses.distributed import anchor_normalizer, global_mean, global_sum, positive_count

SCRIPTS = Path(__file__).resolve().parent / "_distributed_scripts"
TOL = tolerance("float64")  # every multi-device run is float64
WORLD = 2  # torch ranks and TensorFlow replicas
LR = 0.5  # the scripts' SGD learning rate


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _close(actual, expected, what: str, scale: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=TOL["rtol"] * scale,
                               atol=TOL["atol"] * scale, err_msg=what)


def _far(actual, expected, what: str) -> None:  # type: ignore[no-untyped-def]
    """``actual`` differs from ``expected`` by more than 1% of its size (far beyond rounding)."""
    a, e = np.asarray(actual, float), np.asarray(expected, float)
    gap = np.max(np.abs(a - e))
    assert gap > 0.01 * np.max(np.abs(e)), f"{what}: expected a clear difference, got {gap:.3g}"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    env.pop("JAX_ENABLE_X64", None)  # the scripts set what they need
    env.update(extra)
    return env


class _Job:
    """Subprocesses started together, each in its own session (a timeout kills all they
    started), output to a log; :meth:`results` waits and loads what they wrote."""

    def __init__(self, argvs: list[list[str]], outs: list[Path], env: dict[str, str],
                 timeout: float) -> None:
        self.outs, self.timeout = outs, timeout
        self.deadline = time.monotonic() + timeout
        self.logs = [out.with_suffix(".log") for out in outs]
        self.procs = []
        for argv, log in zip(argvs, self.logs):
            with open(log, "wb") as f:
                self.procs.append(subprocess.Popen(
                    [sys.executable, *argv], stdout=f, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True))
        self._results: list[dict[str, np.ndarray]] | None = None
        self.failure = ""

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def wait(self) -> None:
        try:
            for p in self.procs:
                p.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()
        self.failure = "\n".join(
            f"--- {log.name} (exit {p.returncode}) ---\n" + log.read_text(errors="replace")[-3000:]
            for p, log in zip(self.procs, self.logs) if p.returncode != 0)

    def results(self) -> list[dict[str, np.ndarray]]:
        if self._results is None and not self.failure:
            self.wait()
            if not self.failure:
                self._results = []
                for out in self.outs:
                    with np.load(out) as f:
                        self._results.append(dict(f))
        if self.failure:
            pytest.fail(f"subprocess failed or timed out ({self.timeout:.0f} s):\n"
                        f"{self.failure}", pytrace=False)
        assert self._results is not None
        return self._results


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


def _jax_mesh_api() -> bool:
    """Whether jax has what the 8-device script builds its meshes with (``jax.shard_map``,
    ``jax.set_mesh``, ``jax.sharding.AxisType``: recent jax, not the 0.4.31 pyproject
    allows; ``test_jax_axis_names`` covers global_sum under shard_map there)."""
    import jax

    return all(hasattr(m, a) for m, a in ((jax, "shard_map"), (jax, "set_mesh"),
                                          (jax.sharding, "AxisType")))


def _start(engine: str, tmp: Path) -> _Job:
    if engine == "torch":
        port = _free_port()
        outs = [tmp / f"rank{r}.npz" for r in range(WORLD)]
        # loopback only; a deprecation warning from global_sum's collective is an error
        extra = {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform.startswith("linux") else {}
        env = _env(PYTHONWARNINGS="error::FutureWarning", **extra)
        argvs = [[str(SCRIPTS / "torch_ddp.py"), str(r), str(WORLD), str(port), str(tmp)]
                 for r in range(WORLD)]
        # (the three engines start together, beside the other test worker, on 2 cores: the
        # two ranks once took over 150 s under that load)
        return _Job(argvs, outs, env, timeout=300)
    script = {"jax": "jax_sharded", "tf": "tf_mirrored"}[engine]
    out = tmp / f"{script}.npz"
    return _Job([[str(SCRIPTS / f"{script}.py"), str(out)]], [out], _env(), timeout=300)


#: engine -> (the fixture its tests use, the module it needs)
_ENGINES = {"jax": ("jax_run", "jax"), "torch": ("torch_run", "torch"),
            "tf": ("tf_run", "tensorflow")}


@pytest.fixture(scope="module", autouse=True)
def _jobs(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Start every multi-device run the selected tests need, at once, in the background (the
    in-process tests overlap them); kill what is left at the end."""
    # doctest items (collected in a full run) have no .module
    wanted = {name for item in request.session.items
              if getattr(item, "module", None) is request.module
              for name in item.fixturenames}
    jobs: dict[str, _Job] = {}
    for engine, (fixture, module) in _ENGINES.items():
        if fixture in wanted and _has(module) and (engine != "torch" or _gloo()) \
                and (engine != "jax" or _jax_mesh_api()):
            jobs[engine] = _start(engine, tmp_path_factory.mktemp(engine))
    yield jobs
    for job in jobs.values():
        job.kill()


def _results(jobs: dict[str, _Job], engine: str) -> list[dict[str, np.ndarray]]:
    module = _ENGINES[engine][1]
    if not _has(module):
        pytest.skip(f"{module} is not installed")
    if engine not in jobs:
        pytest.skip("this torch build has no torch.distributed gloo backend")
    return jobs[engine].results()


# -- in process: no replicas, misuse ----------------------------------------------------------

def test_import_does_not_import_frameworks():
    code = (
        "import sys, numpy as np, unilosses\n"
        "assert 'unilosses.distributed' not in sys.modules\n"
        "from unilosses.distributed import global_sum, global_mean, anchor_normalizer\n"
        "x = np.array([1.0, 3.0])\n"
        "assert global_sum(x) is x and float(global_mean(x.sum(), 2)) == 2.0\n"
        "assert float(anchor_normalizer(np.array([[0, -1]]))) == 1.0\n"
        "bad = [m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_docstring_examples():
    # the default run collects doctests under src/unilosses/losses only
    import doctest

    import unilosses.distributed

    failed, attempted = doctest.testmod(unilosses.distributed)
    assert attempted >= 5 and failed == 0


def test_numpy_has_one_replica():
    x = np.array([1.0, 2.0, 4.0])
    assert global_sum(x) is x
    assert float(global_mean(unilosses.mse(x, np.zeros(3), reduction="sum"), x.size)) == 7.0
    # an empty (all-masked) batch: 0, not nan
    assert float(global_mean(np.float64(0.0), 0)) == 0.0
    state = np.array([[1, 0, -1, 1], [0, 1, 1, -1]])
    assert float(positive_count(state)) == 4.0
    assert positive_count(state).dtype == np.float32
    assert float(anchor_normalizer(state)) == 4.0
    assert float(anchor_normalizer(np.zeros((2, 3), int))) == 1.0


def test_numpy_misuse():
    x = np.ones(2)
    with pytest.raises(TypeError, match="axis_name='data'.* is for JAX arrays"):
        global_sum(x, axis_name="data")
    with pytest.raises(TypeError, match=r"group=\.\.\.\) is for torch tensors"):
        global_sum(x, group=object())
    with pytest.raises(TypeError, match="needs an array of your framework, got builtins.int"):
        global_sum(3)
    with pytest.raises(TypeError, match="needs an array of your framework"):
        global_mean(2.0, 1)


def test_global_mean_divides_by_a_weight_sum_below_one():
    # reduction="weighted_mean" divides by the summed weights, which may be below 1 (sample or
    # class weights of 0.01): global_mean of the sum and that weight sum is the same mean
    p, y = np.array([1.0, 2.0, 4.0, -1.0]), np.zeros(4)
    w, m = np.array([0.02, 0.01, 0.05, 0.5]), np.array([True, True, True, False])
    wsum = float((w * m).sum())  # 0.08
    want = float(((w * p**2)[m]).sum() / wsum)  # 0.86 / 0.08 = 10.75
    assert float(unilosses.mse(p, y, weights=w, where=m, reduction="weighted_mean")) == \
        pytest.approx(want, rel=1e-12)
    got = global_mean(unilosses.mse(p, y, reduction="sum", weights=w, where=m), wsum)
    assert float(got) == pytest.approx(want, rel=1e-12)
    # counts: an all-masked (or all-zero-weight) batch still gives its sum, 0, not nan
    assert float(global_mean(np.float64(0.0), 0.0)) == 0.0


def test_global_mean_takes_a_numpy_scalar_count():
    # a NumPy scalar count (``mask.sum()`` of a NumPy mask, ``np.int64(n)``) counts as the
    # number it holds next to any framework's loss sum, as NumPy scalars do as the losses'
    # options; a NumPy *array* count next to a torch sum is still refused
    torch = pytest.importorskip("torch")
    s = torch.tensor(6.0, requires_grad=True)
    got = global_mean(s, np.int64(4))
    assert got.dtype == torch.float32 and float(got.detach()) == 1.5
    got.backward()
    assert float(s.grad) == 0.25
    assert float(global_mean(torch.tensor(3.0, dtype=torch.float64), np.float32(0.5))) == 6.0
    with pytest.raises(TypeError, match="`count` is"):
        global_mean(torch.tensor(6.0), np.array([4]))


def test_dice_shards_combine_per_coefficient_only():
    # the recipe's arithmetic on two shards of 2 images: global_mean of the summed shard sums
    # and counts.  A coefficient per image and class is a mean over coefficients: it combines.
    # One coefficient over the whole batch (axis=None, the default) is a ratio of sums: the
    # shards' coefficients do not give the batch's (README "Multi-device training")
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, (4, 5, 5, 2))
    t = (rng.uniform(size=(4, 5, 5, 2)) > 0.7).astype(float)
    t[2:, ..., 1] = 0.0  # the second shard has no pixel of class 1
    halves = (slice(0, 2), slice(2, 4))
    for loss in (unilosses.dice_loss, unilosses.tversky_loss):
        sums = [loss(p[h], t[h], axis=(1, 2), reduction="sum") for h in halves]
        _close(global_mean(np.float64(sum(sums)), 2 * 2 + 2 * 2), loss(p, t, axis=(1, 2)),
               f"{loss.__name__} per image and class")
        sums = [loss(p[h], t[h], reduction="sum") for h in halves]
        _far(global_mean(np.float64(sum(sums)), 2), loss(p, t), f"{loss.__name__} axis=None")


@pytest.mark.skipif(not _has("torch"), reason="torch is not installed")
def test_torch_without_process_group():
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is initialised in this test process")
    p = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64, requires_grad=True)
    y = torch.zeros(2, 2, dtype=torch.float64)
    m = torch.tensor([[True, False], [True, True]])
    s = unilosses.mse(p, y, reduction="sum", where=m)
    assert global_sum(s) is s
    # global_mean over one process is the loss's own masked mean, value and gradient
    got = global_mean(s, m.sum())
    (g_got,) = torch.autograd.grad(got, p)
    want = unilosses.mse(p, y, where=m)
    (g_want,) = torch.autograd.grad(want, p)
    _close(got.detach(), want.detach(), "value")
    _close(g_got, g_want, "gradient")
    with pytest.raises(RuntimeError, match="no process group initialised.*init_process_group"):
        global_sum(s, group=object())
    with pytest.raises(TypeError, match="is for JAX arrays"):
        global_sum(s, axis_name="data")
    with pytest.raises(TypeError, match="`count` is numpy.ndarray"):
        global_mean(s, np.array(3.0))
    c = positive_count(torch.tensor([[1, 0, 1, -1]]))
    assert c.dtype == torch.float32 and float(c) == 2.0


@pytest.mark.skipif(not _has("jax"), reason="jax is not installed")
def test_jax_axis_names():
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    x = jnp.arange(4.0)
    assert global_sum(x) is x
    # jax 0.4.31 (the lowest pyproject allows) has neither jax.make_mesh nor jax.shard_map
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map

    def run(f):  # type: ignore[no-untyped-def]
        return shard_map(f, mesh=mesh, in_specs=P("batch"), out_specs=P())(xs)

    assert float(run(lambda v: global_sum(jnp.sum(v), axis_name="batch"))) == 6.0
    # which axes a value varies over is read from jax.typeof (recent jax); without it the
    # errors below say less, or (no axis_name) cannot be raised at all
    typed = hasattr(jax, "typeof")
    varies = r" \(x varies over 'batch'\)" if typed else ""
    with pytest.raises(NameError, match=r"axis_name='data' is not a mapped axis here"
                                        + varies + r"\. Call it inside jax\.shard_map"):
        run(lambda v: global_sum(jnp.sum(v), axis_name="data"))
    with pytest.raises(NameError, match="axis_name='batch' is not a mapped axis"):
        jax.jit(lambda v: global_sum(v, axis_name="batch"))(x)
    if typed:
        with pytest.raises(ValueError, match=r"varies over the shard_map mesh axes 'batch'.*"
                                             r"global_sum\(x, axis_name='batch'\)"):
            run(lambda v: global_sum(jnp.sum(v)))
    with pytest.raises(TypeError, match="is for torch tensors"):
        global_sum(x, group=object())


# -- JAX: 8 host devices ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def jax_run(_jobs) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    if "jax" not in _jobs and _has("jax") and not _jax_mesh_api():
        pytest.skip("this jax has no jax.shard_map/set_mesh/sharding.AxisType, which the "
                    "8-device script uses (jax 0.4.31)")
    return _results(_jobs, "jax")[0]


#: losses that select the label's entry with take_along_axis (a gather)
GATHER = ("sparse_categorical_cross_entropy", "sparse_categorical_cross_entropy_with_logits",
          "sparse_categorical_focal_loss", "sparse_categorical_focal_loss_with_logits",
          "in_top_k", "top_k_accuracy")


def _explicit_errors(r: dict[str, np.ndarray]) -> dict[str, str]:
    """case -> why it could not be traced class-sharded on the Explicit mesh."""
    head, tail = "jit/Explicit/", "/error"
    return {k[len(head):-len(tail)]: str(v) for k, v in r.items()
            if k.startswith(head) and k.endswith(tail)}


def _jit_cases(r: dict[str, np.ndarray]) -> list[str]:
    return sorted(k[len("jit/whole/"):-len("/value")] for k in r
                  if k.startswith("jit/whole/") and k.endswith("/value"))


@pytest.mark.slow
def test_jax_every_loss_is_covered(jax_run):
    assert sorted(jax_run["covered"].tolist()) == sorted(unilosses.__all__), (
        "add inputs for the new loss to cases() in _distributed_scripts/jax_sharded.py")


def _assert_jit_equal(r: dict[str, np.ndarray], tag: str, case: str) -> None:
    for part in ("value", "grad"):
        want, got = r[f"jit/whole/{case}/{part}"], r[f"jit/{tag}/{case}/{part}"]
        assert got.shape == want.shape, (case, part)
        if want.dtype == bool:
            np.testing.assert_array_equal(got, want, err_msg=f"{case} {part}")
        else:
            # sums of up to 96 terms, added in another order across the shards
            _close(got, want, f"{tag}: {case} {part}", scale=4.0)


@pytest.mark.slow
def test_jax_sharded_jit_equals_unsharded(jax_run):
    r = jax_run
    # the inputs really are split: 8 blocks for (batch, class) arrays, 4 for batch-only ones
    assert sorted(set(r["jit/shards"].tolist())) == [4, 8]
    cases = _jit_cases(r)
    assert len(cases) > len(unilosses.__all__)
    for case in cases:
        _assert_jit_equal(r, "Explicit", case)
    # what the Explicit mesh could only run batch-sharded ran class-sharded on an Auto mesh
    for case in _explicit_errors(r):
        _assert_jit_equal(r, "Auto", case)


@pytest.mark.slow
def test_jax_explicit_mesh_class_axis_sharded(jax_run):
    """Under an Explicit mesh with the class axis sharded, every loss traces and matches."""
    errors = _explicit_errors(jax_run)
    unexpected = {c: e for c, e in errors.items()
                  if c.split("/")[0] not in GATHER or not e.startswith("ShardingTypeError")}
    assert not unexpected, unexpected
    # the JAX adapter picks a label's entry with a one-hot select, which shards; a gather
    # along a sharded class axis is refused under an Explicit mesh
    assert not errors, errors


@pytest.mark.slow
def test_jax_shard_map_anchor_focal_recipe(jax_run):
    r = jax_run
    positives = r["sm/positives_per_shard"]
    assert len(positives) == 8 and 0 in positives and len(set(positives.tolist())) >= 4
    for recipe in ("recipe", "recipe_mean", "grad_inside", "pmap"):
        if recipe != "pmap":
            _close(r[f"sm/{recipe}/value"], r["sm/full/value"], f"{recipe} value", scale=4.0)
        for p in ("w", "b"):
            _close(r[f"sm/{recipe}/grad_{p}"], r["sm/full/grad_" + p], f"{recipe} grad {p}",
                   scale=4.0)


@pytest.mark.slow
def test_jax_shard_map_weighted_mean_with_a_weight_sum_below_one(jax_run):
    r = jax_run
    z, labels, cw = r["wm/logits"], r["wm/labels"], r["wm/class_weights"]
    valid = labels != -1
    w = np.where(valid, cw[np.where(valid, labels, 0)], 0.0)
    assert 0.0 < w.sum() < 1.0 and (~valid).any()
    # NumPy reference: sum_i w_i CE_i / sum_i w_i, gradient w_i (softmax_i - onehot_i) / sum w
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    onehot = np.eye(z.shape[-1])[np.where(valid, labels, 0)]
    value = (w * -(logp * onehot).sum(-1)).sum() / w.sum()
    grad = w[:, None] * (np.exp(logp) - onehot) / w.sum()
    for tag in ("full", "recipe"):
        _close(r[f"wm/{tag}/value"], value, f"{tag} weighted mean", scale=4.0)
        _close(r[f"wm/{tag}/grad"], grad, f"{tag} weighted mean gradient", scale=4.0)


@pytest.mark.slow
def test_jax_shard_map_local_normalizer_is_wrong(jax_run):
    r = jax_run
    _far(r["sm/local_normalizer/value"], r["sm/full/value"], "local normaliser value")
    for p in ("w", "b"):
        _far(r[f"sm/local_normalizer/grad_{p}"], r[f"sm/full/grad_{p}"], f"local grad {p}")


# -- PyTorch: DDP on 2 gloo processes ---------------------------------------------------------

@pytest.fixture(scope="module")
def torch_run(_jobs, tmp_path_factory) -> list[dict[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    try:
        return _results(_jobs, "torch")
    except pytest.fail.Exception:
        # One retry, on a new port, for what the ranks' numbers do not depend on: the free
        # port taken between probe and bind, or a rank aborted by the gloo runtime (exit -6,
        # "terminate called without an active exception", once in CI under load).  A failure
        # of ours fails twice; the second message carries the first.
        first = _jobs["torch"].failure
    _jobs["torch"] = _start("torch", tmp_path_factory.mktemp("torch"))
    try:
        return _results(_jobs, "torch")
    except pytest.fail.Exception as e:
        second = e.msg
    pytest.fail(f"{second}\n--- the first attempt ---\n{first}", pytrace=False)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["recipe", "recipe_nn_functional", "recipe_mean",
                                    "normalizer_times_world"])
def test_torch_ddp_recipe_equals_full_batch(torch_run, recipe):
    r0, r1 = torch_run
    assert (int(r0["positives"]), int(r1["positives"])) == (7, 1)
    for r in (r0, r1):
        _close(r[f"{recipe}/params"], r0["full/params"], f"{recipe} parameters after a step")
        # DDP's averaged gradient is the full-batch gradient
        _close(r[f"{recipe}/grad"], r0["full/grad"], f"{recipe} gradient")
    if recipe != "normalizer_times_world":  # the all-reduced loss is the full loss everywhere
        for r in (r0, r1):
            _close(r[f"{recipe}/loss"], r0["full/loss"], f"{recipe} loss")
    else:  # here only the ranks' average is
        _close((r0[f"{recipe}/loss"] + r1[f"{recipe}/loss"]) / WORLD, r0["full/loss"], "mean")
    assert np.max(np.abs(r0["full/params"] - r0["p0"])) > 0.01  # the step moved


@pytest.mark.slow
def test_torch_ddp_without_loss_all_reduce_steps_one_world_th(torch_run):
    r0, r1 = torch_run
    expect = r0["p0"] - LR / WORLD * r0["full/grad"]  # DDP averaged S_r / N: g / WORLD
    for r in (r0, r1):
        _close(r["normalizer_only/params"], expect, "global normaliser, no global_sum")
        _far(r["normalizer_only/params"], r0["full/params"], "normaliser only vs full")


@pytest.mark.slow
def test_torch_ddp_local_normalizer_is_wrong(torch_run):
    r0, r1 = torch_run
    _close(r0["local_normalizer/params"], r1["local_normalizer/params"], "ranks agree")
    _far(r0["local_normalizer/params"], r0["full/params"], "local normaliser vs full")
    _far(r0["local_normalizer/grad"], r0["full/grad"], "local normaliser gradient")


# -- TensorFlow: MirroredStrategy on 2 logical CPUs -------------------------------------------

@pytest.fixture(scope="module")
def tf_run(_jobs) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return _results(_jobs, "tf")[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["recipe", "recipe_mean", "normalizer_only"])
def test_tf_mirrored_recipe_equals_full_batch(tf_run, recipe):
    r = tf_run
    assert int(r["replicas"]) == WORLD and r["positives"].tolist() == [7.0, 1.0]
    expect = r["p0"] - LR * r["full/grad"]
    _close(r[f"{recipe}/params"], expect, f"{recipe} parameters after a step")
    assert np.max(np.abs(expect - r["p0"])) > 0.01  # the step moved
    if recipe != "normalizer_only":  # the all-reduced loss is the full loss on each replica
        _close(r[f"{recipe}/loss"], [r["full/loss"]] * WORLD, f"{recipe} loss")
    else:  # apply_gradients sums the replicas: their losses sum to the full loss
        _close(r[f"{recipe}/loss"].sum(), r["full/loss"], "sum of replica losses")


@pytest.mark.slow
def test_tf_native_all_reduce_gradient_is_world_times_too_big(tf_run):
    # ReplicaContext.all_reduce's gradient is all-reduced too; apply_gradients then sums:
    # the reason global_sum passes the gradient through
    r = tf_run
    _close(r["native_all_reduce/params"], r["p0"] - LR * WORLD * r["full/grad"], "W x step")
    _far(r["native_all_reduce/params"], r["p0"] - LR * r["full/grad"], "native vs full")


@pytest.mark.slow
def test_tf_local_normalizer_is_wrong_and_misuse(tf_run):
    r = tf_run
    _far(r["local_normalizer/params"], r["p0"] - LR * r["full/grad"], "local normaliser")
    assert bool(r["outside_is_x"])
    assert "cross-replica context" in str(r["cross_replica_error"])
    assert "strategy.run" in str(r["cross_replica_error"])
