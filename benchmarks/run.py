"""Running the benchmark: jobs of one backend and one size, in this process or a fresh one.

A job builds the inputs of every selected loss at its size, converts them to the backend's
arrays and measures each (mode, pass): unilosses and every peer, on the same arrays, timed in
interleaved rounds (:mod:`benchmarks.timing`), checked against each other, and their peak
extra memory (:mod:`benchmarks.memory`).  Jobs of large sizes (``isolate_min`` elements and
more, and the focal shape) run in a fresh subprocess (``python -m benchmarks --worker``), so
that what earlier sizes left in the allocator and the compilers' caches does not leak into
them and the resident high-water mark starts clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backends as B
from .bandwidth import floor_bytes, measure_bandwidth, measure_device_bandwidth
from .cases import CASES, DEFAULT_SIZES, Case, Size, parse_size, size_label
from .memory import available as memory_available
from .memory import configure_malloc, device_peak_extra_bytes, malloc_env, peak_extra_bytes
from .timing import Timing, first_call, time_group

MODES = ("eager", "compiled")
PASSES = ("fwd", "fwd+bwd")
#: agreement of a peer with unilosses (float32): values and gradients
VALUE_RTOL = 1e-4
GRAD_RTOL = 1e-4


@dataclass
class Config:
    backends: list[str] = field(default_factory=lambda: list(B.DEFAULT_BACKENDS))
    losses: list[str] = field(default_factory=lambda: list(CASES))
    sizes: list[Size] = field(default_factory=lambda: [parse_size(str(n))
                                                       for n in DEFAULT_SIZES])
    #: "cpu", or "cuda" (torch and jax on the GPU)
    device: str = "cpu"
    modes: list[str] = field(default_factory=lambda: list(MODES))
    passes: list[str] = field(default_factory=lambda: list(PASSES))
    repeats: int = 7
    warmup: int = 2
    #: seconds a timing sample lasts at least (back-to-back calls)
    min_time: float = 0.002
    #: include torch.compile (inductor) in the compiled mode
    torch_compile: bool = False
    isolate: bool = True
    isolate_min: int = 1_000_000
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0))
                         if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    malloc: str = "retain"
    checks: bool = True
    memory: bool = True
    #: smallest size (elements) whose peak memory is measured (below, it is page noise)
    memory_min: int = 100_000
    bandwidth_bytes: int = 256 * 10**6
    seed: int = 0
    quiet: bool = False
    #: wall-clock time (time.time()) after which no new measurement starts; the run reports
    #: what it finished (``--time-limit``: a lent machine's session is short)
    deadline: float | None = None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = [s.label for s in self.sizes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        d = dict(d)
        d["sizes"] = [parse_size(s) for s in d["sizes"]]
        return cls(**d)

    def isolated(self, size: Size) -> bool:
        return self.isolate and (size.is_shape or size.elements >= self.isolate_min)


def log(config: Config, text: str) -> None:
    if not config.quiet:
        print(text, file=sys.stderr, flush=True)


# -- agreement -----------------------------------------------------------------------------------
def compare(ref: tuple[Any, Any], other: tuple[Any, Any]) -> dict[str, Any]:
    """How far ``other`` (value, grad) is from unilosses's ``ref``; ``ok`` within float32."""
    a, b = B.to_numpy(ref[0]), B.to_numpy(other[0])
    out: dict[str, Any] = {}
    if a is None or b is None:
        return {"ok": False, "reason": "no value"}
    if a.shape != b.shape:
        return {"ok": False, "reason": f"shapes {a.shape} and {b.shape}"}
    if a.dtype == np.bool_ or b.dtype == np.bool_:
        mismatches = int(np.sum(a.astype(bool) != b.astype(bool)))
        return {"ok": mismatches == 0, "mismatches": mismatches}
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = max(float(np.max(np.abs(a64))), 1e-30) if a64.size else 1.0
    out["value_rel"] = float(np.max(np.abs(a64 - b64))) / scale if a64.size else 0.0
    ok = bool(np.allclose(b64, a64, rtol=VALUE_RTOL, atol=1e-7 * scale))
    ga, gb = B.to_numpy(ref[1]), B.to_numpy(other[1])
    if ga is not None and gb is not None:
        ga64, gb64 = ga.astype(np.float64), gb.astype(np.float64)
        gscale = max(float(np.max(np.abs(ga64))), 1e-30)
        out["grad_rel"] = float(np.max(np.abs(ga64 - gb64))) / gscale
        ok = ok and out["grad_rel"] <= GRAD_RTOL and bool(np.all(np.isfinite(gb64)))
    out["ok"] = ok
    return out


def case_elements(case: Case, size: Size) -> int:
    return int(np.prod(case.shape(size) or (0,)))


def unilosses_fn(case: Case) -> Callable[..., Any]:
    import unilosses

    loss = getattr(unilosses, case.loss)
    options = dict(case.options)

    def fn(*arrays: Any) -> Any:
        return loss(*arrays, **options)

    fn.__name__ = f"unilosses_{case.loss}"
    return fn


# -- one measurement -----------------------------------------------------------------------------
def measure(config: Config, backend: str, mode: str, pass_: str, case: Case, size: Size,
            arrays: tuple[Any, ...], peers: list[Any], bandwidth_gbs: float) -> dict[str, Any]:
    names = ["unilosses"] + [p.name for p in peers]
    fns = [unilosses_fn(case)] + [p.fn for p in peers]
    steps: list[Callable[[], Any] | None] = []
    timings: list[Timing] = []
    outputs: list[Any] = []
    for fn in fns:
        t = Timing()
        step: Callable[[], Any] | None
        try:
            step = B.make_step(backend, mode, pass_, fn, arrays, config.device)
            first, t.first_call_s = first_call(step)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            step, first = None, None
            t.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        steps.append(step)
        timings.append(t)
        outputs.append(first)
        del first
    agreement = {name: compare(outputs[0], outputs[i + 1])
                 for i, name in enumerate(names[1:])
                 if outputs[0] is not None and outputs[i + 1] is not None}
    out_bytes = 0
    if outputs[0] is not None and tuple(getattr(outputs[0][0], "shape", ())) != ():
        out_bytes = B.nbytes(backend, outputs[0][0])
    del outputs
    time_group(steps, repeats=config.repeats, warmup=config.warmup,
               min_time=config.min_time, timings=timings)
    peak: list[int | None] = [None] * len(steps)
    on_gpu = config.device != "cpu"
    if (config.memory and case_elements(case, size) >= config.memory_min
            and (on_gpu or memory_available())):
        for i, step in enumerate(steps):
            if step is not None and timings[i].error is None:
                # the larger of two probes: a buffer of an earlier call that the runtime
                # frees during a probe lowers that probe's reading
                probes = [device_peak_extra_bytes(backend, step) if on_gpu
                          else peak_extra_bytes(step) for _ in range(2)]
                known = [v for v in probes if v is not None]
                peak[i] = max(known) if known else None
    input_bytes = [B.nbytes(backend, a) for a in arrays]
    fb = floor_bytes(input_bytes, pass_, out_bytes)
    floor_s = fb / (bandwidth_gbs * 1e9)
    results = {}
    for name, t, p in zip(names, timings, peak):
        r = t.as_dict()
        r["peak_extra_mb"] = None if p is None else p / 1e6
        r["floor_multiple"] = None if t.median_s is None else t.median_s / floor_s
        results[name] = r
    return {
        "loss": case.loss, "backend": backend, "mode": mode, "size": size.label,
        "elements": case_elements(case, size), "shape": list(case.shape(size) or ()),
        "pass": pass_, "input_bytes": input_bytes, "floor_bytes": fb, "floor_ms": floor_s * 1e3,
        "results": results, "peers": names[1:], "agreement": agreement,
        "peer_details": {p.name: p.detail for p in peers if p.detail},
    }


# -- one job: a backend and a size ---------------------------------------------------------------
def run_job(config: Config, backend: str, size: Size, bandwidth_gbs: float) -> dict[str, Any]:
    """Every selected loss, mode and pass of ``backend`` at ``size``, in this process."""
    settings: dict[str, Any] = {"pid": os.getpid(), "malloc": configure_malloc(config.malloc),
                                "malloc_env": malloc_env()}
    job: dict[str, Any] = {"backend": backend, "size": size.label, "groups": [],
                           "skipped": [], "settings": settings}
    try:
        settings.update(B.configure_threads(backend, config.threads))
        from .peers import peers_for

        peers = peers_for(backend)
        import unilosses

        unilosses.set_checks(config.checks)
    except Exception as exc:  # noqa: BLE001 - the whole job fails, the run goes on
        job["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return job
    for name in config.losses:
        case = CASES[name]
        if case.shape(size) is None:
            continue
        if config.past_deadline():
            job["skipped"].append(f"{name} and the losses after it at {size.label}: "
                                  f"past --time-limit")
            break
        arrays = tuple(B.to_backend(backend, a, config.device)
                       for a in case.make(size, config.seed))
        for mode in config.modes:
            if mode == "compiled" and backend == "numpy":
                continue
            if mode == "compiled" and backend == "torch" and not config.torch_compile:
                note = "torch.compile (enable with --torch-compile)"
                if note not in job["skipped"]:
                    job["skipped"].append(note)
                continue
            for pass_ in case.passes():
                if pass_ not in config.passes or (backend == "numpy" and pass_ != "fwd"):
                    continue
                t0 = time.perf_counter()
                group = measure(config, backend, mode, pass_, case, size, arrays,
                                peers.get(name, []), bandwidth_gbs)
                job["groups"].append(group)
                log(config, _progress(group, time.perf_counter() - t0))
        del arrays
    return job


def _progress(g: dict[str, Any], seconds: float) -> str:
    parts = []
    for name, r in g["results"].items():
        ms = r["median_ms"]
        parts.append(f"{name} {'error' if ms is None else f'{ms:.4g} ms'}")
    bad = [n for n, a in g["agreement"].items() if not a.get("ok")]
    flag = f"  DISAGREES: {', '.join(bad)}" if bad else ""
    return (f"  {g['backend']:<10} {g['mode']:<8} {g['size']:>6} {g['pass']:<7} {g['loss']}: "
            f"{'; '.join(parts)}  [{seconds:.1f} s]{flag}")


def run_isolated(config: Config, backend: str, size: Size,
                 bandwidth_gbs: float) -> dict[str, Any]:
    """:func:`run_job` in a fresh ``python -m benchmarks --worker`` process."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="unilosses-bench-") as tmp:
        spec, out = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec.write_text(json.dumps({"config": config.as_dict(), "backend": backend,
                                    "size": size.label, "bandwidth_gbs": bandwidth_gbs}))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH"))
                                            if p)
        proc = subprocess.run([sys.executable, "-m", "benchmarks", "--worker", str(spec),
                               str(out)], cwd=root, env=env, check=False)
        if proc.returncode != 0 or not out.exists():
            return {"backend": backend, "size": size.label, "groups": [], "skipped": [],
                    "settings": {}, "isolated": True,
                    "error": f"worker exited with status {proc.returncode}"}
        job = json.loads(out.read_text())
    job["isolated"] = True
    return job


def worker(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    config = Config.from_dict(spec["config"])
    job = run_job(config, spec["backend"], parse_size(spec["size"]), spec["bandwidth_gbs"])
    Path(out_path).write_text(json.dumps(job))
    return 0


# -- the whole run -------------------------------------------------------------------------------
def run(config: Config, argv: list[str] | None = None) -> dict[str, Any]:
    """All jobs; the results as one JSON-able dict (see :mod:`benchmarks.report`)."""
    started = time.time()
    from .report import machine

    machine_info = machine()
    load = machine_info.get("loadavg_start")
    if load and load[0] >= 0.5 * (machine_info["affinity_cpus"] or 1):
        log(config, f"warning: load average {load[0]:.1f} on {machine_info['affinity_cpus']} "
                    f"CPUs: timings will be noisy (and multi-threaded ones much slower when "
                    f"the threads wait for each other; --threads 1 avoids that)")
    main_malloc = configure_malloc(config.malloc)
    log(config, f"measuring memory bandwidth ({config.bandwidth_bytes / 1e6:.0f} MB copies)")
    if config.device == "cpu":
        bw = measure_bandwidth(config.bandwidth_bytes, threads=config.threads)
    else:
        bw = measure_device_bandwidth(config.bandwidth_bytes)
        machine_info["device"] = bw["device"]
    log(config, f"  {bw['gbs']:.1f} GB/s")
    jobs: list[dict[str, Any]] = []
    interrupted = False
    try:
        for backend in config.backends:
            for size in config.sizes:
                if not any(CASES[n].shape(size) is not None for n in config.losses):
                    continue
                if config.past_deadline():
                    interrupted = True
                    log(config, "past --time-limit: reporting the jobs that finished")
                    break
                isolated = config.isolated(size)
                log(config, f"{backend} {size.label}{' (fresh process)' if isolated else ''}")
                if isolated:
                    job = run_isolated(config, backend, size, bw["gbs"])
                else:
                    job = run_job(config, backend, size, bw["gbs"])
                    job["isolated"] = False
                if job.get("error"):
                    log(config, f"  error: {job['error']}")
                jobs.append(job)
    except KeyboardInterrupt:
        # (a time limit's SIGINT, on a lent machine say): the jobs done so far are reported
        interrupted = True
        log(config, "interrupted: reporting the jobs that finished")
    machine_info["loadavg_end"] = _loadavg()
    return {
        "argv": argv if argv is not None else sys.argv[1:],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "duration_s": time.time() - started,
        "config": config.as_dict(),
        "machine": machine_info,
        "versions": B.versions(),
        "environment": {k: os.environ.get(k) for k in ENV_RECORDED if k in os.environ},
        "malloc_main": main_malloc,
        "memory_measured": config.memory and (config.device != "cpu" or memory_available()),
        "bandwidth": bw,
        "compilers": {b: c for b, c in B.COMPILERS.items()
                      if b in config.backends and "compiled" in config.modes
                      and (b != "torch" or config.torch_compile)},
        "jobs": jobs,
        "interrupted": interrupted,
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


ENV_RECORDED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "XLA_FLAGS",
                "JAX_ENABLE_X64", "KERAS_BACKEND", "UNILOSSES_CHECKS", "MALLOC_ARENA_MAX",
                "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


__all__ = ["Config", "MODES", "PASSES", "compare", "run", "run_job", "size_label", "worker"]
