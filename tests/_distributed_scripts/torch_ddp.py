"""One DDP training step of a linear anchor head, per recipe, on 2 gloo processes.

Run by tests/test_distributed.py: ``python torch_ddp.py RANK WORLD PORT OUT_DIR``, one process
per rank, on 127.0.0.1:PORT.  Rank r trains on the contiguous block of images
``[r * B/WORLD, (r+1) * B/WORLD)``.  Rank 0 also computes the single-process,
full-batch reference before joining the group.  Each rank writes ``rank{r}.npz``; the test
asserts on them.
"""

from __future__ import annotations

import datetime
import faulthandler
import os
import sys
import warnings
from unittest import mock

import numpy as np

if __name__ == "__main__":  # (pytest --doctest-modules imports this file: no side effects)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import unilosses
    import unilosses.distributed as udist
    from unilosses.distributed import (
        anchor_normalizer,
        global_mean,
        global_sum,
        positive_count,
    )

A, F, C = 6, 5, 3
POSITIVES = [4, 3, 0, 1]  # per image: rank 0 holds 7 positives, rank 1 holds 1
LR = 0.5


def make_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    b = len(POSITIVES)
    x = rng.normal(size=(b, A, F))
    t = np.eye(C)[rng.integers(0, C, (b, A))]
    s = np.zeros((b, A), np.int64)
    for i, k in enumerate(POSITIVES):
        s[i, :k] = 1
        s[i, k] = -1  # one ignored anchor per image
        s[i] = rng.permutation(s[i])
    return torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(s)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(F, C, dtype=torch.float64)


def params(m: torch.nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])


def grads(m: torch.nn.Module) -> np.ndarray:
    return np.concatenate([p.grad.numpy().ravel() for p in m.parameters()])


def loss_of(recipe: str, logits: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    afl = unilosses.anchor_focal_loss_with_logits
    if recipe == "recipe":  # the documented one
        return global_sum(afl(logits, t, s, normalizer=anchor_normalizer(s)))
    if recipe == "recipe_nn_functional":  # the same on torch.distributed.nn.functional
        with warnings.catch_warnings():  # deprecated in recent torch
            warnings.simplefilter("ignore", FutureWarning)
            with mock.patch.object(udist, "_torch_functional_collectives", lambda: None):
                return global_sum(afl(logits, t, s, normalizer=anchor_normalizer(s)))
    if recipe == "recipe_mean":  # the same through global_mean
        return global_mean(afl(logits, t, s, normalizer=1.0), positive_count(s))
    if recipe == "normalizer_times_world":  # equivalent without the loss all-reduce
        return afl(logits, t, s, normalizer=anchor_normalizer(s)) * dist.get_world_size()
    if recipe == "normalizer_only":  # wrong: DDP's average makes the step 1/WORLD too small
        return afl(logits, t, s, normalizer=anchor_normalizer(s))
    if recipe == "local_normalizer":  # wrong: each rank divides by its own positives
        return afl(logits, t, s)
    raise ValueError(recipe)


RECIPES = ("recipe", "recipe_nn_functional", "recipe_mean", "normalizer_times_world",
           "normalizer_only", "local_normalizer")


def step(model: torch.nn.Module, loss_fn, x, t, s) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    opt.zero_grad()
    loss = loss_fn(model(x), t, s)
    loss.backward()
    opt.step()
    return float(loss.detach()), grads(model.module if isinstance(model, DDP) else model)


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    faulthandler.enable()  # an abort (SIGABRT from C++) shows every thread's Python stack
    faulthandler.dump_traceback_later(270, exit=True)  # a hang shows where, then exits
    torch.set_num_threads(1)
    x, t, s = make_data()
    res: dict[str, np.ndarray] = {}
    if rank == 0:
        model = make_model()
        res["p0"] = params(model)
        loss, g = step(model, unilosses.anchor_focal_loss_with_logits, x, t, s)
        res["full/loss"], res["full/grad"], res["full/params"] = np.array(loss), g, params(model)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        per = len(POSITIVES) // world
        mine = slice(rank * per, (rank + 1) * per)
        xr, tr, sr = x[mine], t[mine], s[mine]
        res["positives"] = np.array(int((sr == 1).sum()))
        for recipe in RECIPES:
            model = DDP(make_model())
            loss, g = step(model, lambda lg, tt, ss, r=recipe: loss_of(r, lg, tt, ss), xr, tr, sr)
            res[f"{recipe}/loss"], res[f"{recipe}/grad"] = np.array(loss), g
            res[f"{recipe}/params"] = params(model.module)
        np.savez(f"{out}/rank{rank}.npz", **res)
        dist.barrier()  # both ranks are done before either tears the group down
    finally:
        dist.destroy_process_group()
    # Skip the interpreter's finalization: gloo's C++ threads can still hold tensors there and
    # abort the process ("terminate called without an active exception", exit -6, once in CI
    # after both ranks had written their results; pytorch/pytorch#179291 describes the race).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
