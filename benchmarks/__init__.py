"""Side-by-side benchmark of unilosses against each framework's own losses.

Run from the repository root::

    python -m benchmarks                                  # torch, jax, tensorflow; 16, 1e3, 1e6
    python -m benchmarks --backends torch,jax --sizes 16,1e3,1e6 --modes eager
    python -m benchmarks --full --out results/            # + 1.6e7, focal shape, torch.compile

It writes ``results.md`` (a Markdown table) and ``results.json`` to ``--out`` and prints the
table.  For each loss, backend, mode (eager / compiled), size and pass (forward, forward +
backward) it reports the median time of unilosses and of each peer (the framework's own
implementation: ``torch.nn.functional``, optax / jnp under ``jax.jit``, ``tf.nn`` /
``keras.losses``), their ratio, the time as a multiple of the physical floor (the bytes that
must be read and written divided by the memory bandwidth measured in the same run) and the
peak extra resident memory of the pass.

Every peer is checked against the unilosses loss on the benchmark's own inputs (value and
gradient, float32 tolerance) in the run, and in ``tests/test_benchmarks.py``: a ratio compares
two implementations of the same number.

This package is part of the project but is never imported by the library.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from .cli import main as _main

    return _main(argv)
