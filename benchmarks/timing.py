"""Timing: warm-up, then the median of interleaved repeats.

All the implementations of one measurement (unilosses and its peers) are timed in the same
process, on the same arrays, in rounds: each round times every implementation once, starting
from a different one each round, so that drift on a busy machine (other jobs, frequency
changes) falls on all of them alike.  A sample is the mean of ``number`` back-to-back calls,
``number`` chosen once, from calls timed after the warm-up, so that a sample lasts at least
``min_time`` seconds (small sizes are too fast to time one call at a time); each call is
synchronised before the next starts, except on a GPU, where a step's ``run`` is called back
to back and ``wait`` once at the end of the sample (see :mod:`benchmarks.backends`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Step = Callable[[], Any]


@dataclass
class Timing:
    """Seconds per call of one implementation (``error`` set if it failed)."""

    first_call_s: float | None = None
    number: int = 1
    samples: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def as_dict(self) -> dict[str, Any]:
        ms = [s * 1e3 for s in self.samples]
        return {
            "median_ms": None if self.median_s is None else self.median_s * 1e3,
            "min_ms": min(ms) if ms else None,
            "samples_ms": ms,
            "calls_per_sample": self.number,
            "first_call_ms": None if self.first_call_s is None else self.first_call_s * 1e3,
            "error": self.error,
        }


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def first_call(step: Step) -> tuple[Any, float]:
    """Run ``step`` once (tracing and compiling, for the compiled modes); its outputs and time."""
    t0 = time.perf_counter()
    out = step()
    return out, time.perf_counter() - t0


def _calibrate(step: Step, budget: float) -> float:
    """Seconds per call of ``step`` after its warm-up, from calls lasting ``budget`` (at least
    one).  Timed after the warm-up, not during it: a first call's one-time costs (imports,
    caches) made the warm-up's mean many times a call's time on small inputs, and each
    sample a few calls long (49 calls, 3 ms, for weighted ``log_cosh`` on 16 elements, whose
    samples then scattered by 3x)."""
    count, t0 = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget:
            return elapsed / count


def time_group(steps: Sequence[Step | None], *, repeats: int, warmup: int,
               min_time: float, timings: Sequence[Timing]) -> None:
    """Fill ``timings[i]`` for ``steps[i]`` (skipping None steps and those with an error)."""
    live = [i for i, s in enumerate(steps) if s is not None and timings[i].error is None]
    for i in list(live):
        step = steps[i]
        assert step is not None
        try:
            for _ in range(max(warmup, 1)):
                step()
            per_call = _calibrate(step, min_time / 10)
        except Exception as exc:  # noqa: BLE001 - recorded, the other implementations go on
            timings[i].error = _describe(exc)
            live.remove(i)
            continue
        timings[i].number = max(1, math.ceil(min_time / max(per_call, 1e-9)))
    for r in range(repeats):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for i in order:
            step = steps[i]
            assert step is not None
            n = timings[i].number
            run, wait = getattr(step, "run", None), getattr(step, "wait", None)
            t0 = time.perf_counter()
            if run is not None and wait is not None:
                out = None
                for _ in range(n):
                    out = run()
                wait(out)
                del out
            else:
                for _ in range(n):
                    step()
            timings[i].samples.append((time.perf_counter() - t0) / n)


__all__ = ["Timing", "first_call", "time_group"]
