r"""Losses over replicas: sums and counts across devices, for full-batch values and gradients.

``import unilosses.distributed`` imports no framework.  Every helper looks at the type of its
array (the same ``sys.modules`` dispatch as the losses) and uses that framework's collective:

=============  ======================================  ==========================================
engine         collective used by :func:`global_sum`   outside a distributed context
=============  ======================================  ==========================================
JAX            ``jax.lax.psum(x, axis_name)``           ``axis_name=None``: ``x`` unchanged
PyTorch        a differentiable all-reduce over         no process group: ``x`` unchanged
               ``group`` (default: the world): the
               functional collectives' ``all_reduce``
               where it has autograd (recent torch,
               which deprecates the other), else
               ``torch.distributed.nn.functional``
               ``.all_reduce``
TensorFlow     ``tf.distribute.get_replica_context()``  no strategy: ``x`` unchanged
               ``.all_reduce(SUM, x)``
NumPy, other   none (there are no replicas)             ``x`` unchanged
=============  ======================================  ==========================================

The recipe (the same on every engine)
-------------------------------------
Each replica holds a shard of the batch.  Write ``S_r`` for replica r's loss *sum*, ``n_r`` for
its count (unmasked elements, or positive anchors), ``W`` for the number of replicas and
``N = max(1, sum_r n_r)``.  The full-batch loss is ``L = sum_r S_r / N`` and the full-batch
gradient ``g = sum_r dS_r/dtheta / N``.  On every replica compute::

    # RetinaNet / anchor focal loss
    n = anchor_normalizer(anchor_state, axis_name=...)        # N: positives over all replicas
    loss = global_sum(anchor_focal_loss_with_logits(x, t, anchor_state, normalizer=n),
                      axis_name=...)
    # any other loss whose mean is over elements, samples or coefficients (not a Dice or
    # Tversky coefficient spanning the batch, axis=None: a ratio of sums)
    loss = global_mean(unilosses.mse(p, y, reduction="sum"), count, axis_name=...)

(``axis_name`` for JAX, ``group`` for torch, neither for TensorFlow.)  ``loss`` is then ``L`` on
every replica, and the gradient the engine applies is ``g``, *provided the engine's own
gradient aggregation is left as it is* (do not all-reduce, ``pmean`` or rescale gradients
yourself).  Why, per engine -- the gradient of :func:`global_sum` is chosen to match how the
engine aggregates gradients:

**PyTorch, DistributedDataParallel.**  DDP *averages* parameter gradients over ranks:
``g_applied = (1/W) sum_r dloss_r/dtheta``.  The differentiable all-reduce has an all-reduce as
its backward, so with ``loss_r = (sum_r' S_r') / N`` every rank receives ``sum_r' 1/N = W/N``
as the gradient of its ``S_r``: ``dloss_r/dtheta = (W/N) dS_r/dtheta`` and the average is
``g``.  Without :func:`global_sum` on the loss (``loss_r = S_r / N``) the step is ``g / W``;
with the local normaliser (``S_r / max(1, n_r)``) it is ``(1/W) sum_r (dS_r/dtheta) / n_r``,
which is ``g`` only when every rank has the same count.  (FSDP averages too: same recipe.)

**JAX, shard_map** (``check_vma=True``, the default).  Take ``jax.grad`` of the
``shard_map``-ped loss (``out_specs=P()``), or inside it with respect to replicated parameters:
``psum`` turns the per-shard ``S_r`` into a replicated value and transposes to a no-op, and the
implicit broadcast of the replicated parameters into the per-shard computation transposes to a
``psum``, so the gradient *is* ``g``, replicated -- use it as is, no ``pmean``.  Under
``jax.pmap`` (no varying-axis tracking) ``psum`` transposes to ``psum``: per-device gradient
``(W/N) dS_r/dtheta``, so ``pmean`` the gradients, as DDP does.  Under plain ``jax.jit`` on
arrays sharded with ``NamedSharding`` no helper is needed: the loss of the global arrays *is*
the full-batch loss (the compiler inserts the collectives).

**TensorFlow, MirroredStrategy** custom training loop (``strategy.run`` of a step with a
``GradientTape`` and ``optimizer.apply_gradients``).  ``apply_gradients`` *sums* gradients over
replicas: ``g_applied = sum_r dloss_r/dtheta``.  ``ReplicaContext.all_reduce`` has an
all-reduce as its gradient (as torch), which under a sum would give ``W g``; so
:func:`global_sum` uses it for the value only and passes the incoming gradient through
unchanged -- the partial derivative of the one global loss with respect to this replica's
summand, which is also what JAX computes.  Then ``dloss_r/dtheta = dS_r/dtheta / N`` and the
sum is ``g``.  Do not divide the loss by ``num_replicas_in_sync``.  (This recipe is for custom
loops.  Keras ``Loss`` objects under ``tf.distribute`` divide each replica's loss by
``num_replicas_in_sync`` themselves, so ``model.fit`` averages like DDP and would apply
``g / W``.)

Counts have no gradient, so :func:`anchor_normalizer` and the count in :func:`global_mean` are
the same on every engine.  Counts are summed in floating point (``float32`` by default: exact up
to 2**24 = 16.7 million).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .backends import Adapter, adapter_for, adapter_named

Array = Any

__all__ = ["anchor_normalizer", "global_mean", "global_sum", "positive_count"]

_ENGINES = ("jax", "torch", "tensorflow")


def _describe(x: Any) -> str:
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}"


def _adapter(x: Any) -> Adapter | None:
    """``x``'s adapter, a NumPy scalar's (``x.sum()``, a NumPy loss's "sum") included: NumPy 2's
    scalars carry an array namespace and find one so, NumPy 1.x's do not and found none."""
    adapter = adapter_for(x)
    if adapter is None and isinstance(x, np.generic):
        return adapter_named("numpy")
    return adapter


def _engine_of(x: Any, fn: str) -> str | None:
    """The distributed engine of array ``x`` (None: an array with no replicas, e.g. NumPy)."""
    adapter = _adapter(x)
    if adapter is None:
        raise TypeError(
            f"{fn} needs an array of your framework, got {_describe(x)}. Wrap the number "
            f"first, e.g. torch.tensor(n, dtype=torch.float32), jnp.asarray(n, jnp.float32) "
            f"or tf.constant(n, tf.float32)."
        )
    return adapter.name if adapter.name in _ENGINES else None


def global_sum(x: Array, /, *, axis_name: Any = None, group: Any = None) -> Array:
    """The sum of ``x`` over all replicas (data-parallel devices or processes).

    Parameters
    ----------
    x : array of any framework
        This replica's value (a loss sum, a count).
    axis_name : hashable or tuple, JAX only
        The mapped axis (``shard_map`` mesh axis, ``pmap`` axis name) to sum over.  ``None``:
        ``x`` is returned unchanged (under plain ``jax.jit`` on sharded arrays values are
        already global); inside ``shard_map`` a value that varies over the mesh is an error.
    group : torch ProcessGroup, PyTorch only
        The process group to sum over; ``None``: the default (world) group if
        ``torch.distributed`` is initialised, otherwise ``x`` is returned unchanged.

    Returns
    -------
    array
        Same framework, shape and dtype as ``x``: the sum over replicas, the same on every one.
        TensorFlow inside ``strategy.run``: the replica context's all-reduce; outside any
        strategy, ``x``.  NumPy and other array-API arrays have no replicas: ``x``.

    Notes
    -----
    Gradients (see the module docstring for the proof): JAX ``psum``'s own transpose; PyTorch
    the differentiable all-reduce (backward: all-reduce of the incoming gradient), which DDP's
    averaging turns into the full-batch gradient; TensorFlow the incoming gradient unchanged,
    which ``apply_gradients``' sum over replicas turns into the full-batch gradient.

    Raises
    ------
    NameError
        JAX: ``axis_name`` is not a mapped axis where the call is traced.
    ValueError
        JAX: ``axis_name`` is None but ``x`` varies over ``shard_map`` mesh axes.
    RuntimeError
        PyTorch: ``group`` given but no process group is initialised.  TensorFlow: called in
        cross-replica context (inside ``strategy.scope()`` but outside ``strategy.run``).
    TypeError
        ``x`` is not an array, or ``axis_name``/``group`` given for another framework.

    Examples
    --------
    >>> import numpy as np
    >>> from unilosses.distributed import global_sum
    >>> x = np.array([1.0, 2.0])
    >>> global_sum(x) is x      # NumPy: one replica
    True
    """
    engine = _engine_of(x, "global_sum")
    if engine != "jax" and axis_name is not None:
        raise TypeError(
            f"global_sum(axis_name={axis_name!r}) is for JAX arrays (shard_map/pmap), but x is "
            f"{_describe(x)}. For torch.distributed pass group=..., under tf.distribute pass "
            f"neither."
        )
    if engine != "torch" and group is not None:
        raise TypeError(
            f"global_sum(group=...) is for torch tensors (torch.distributed), but x is "
            f"{_describe(x)}. For JAX pass axis_name=..., under tf.distribute pass neither."
        )
    if engine == "jax":
        return _jax_sum(x, axis_name)
    if engine == "torch":
        return _torch_sum(x, group)
    if engine == "tensorflow":
        return _tf_sum(x)
    return x


def global_mean(loss_sum: Array, count: Any, /, *, axis_name: Any = None,
                group: Any = None) -> Array:
    """The full-batch mean: ``global_sum(loss_sum) / global_sum(count)`` (the sum where that is 0).

    Parameters
    ----------
    loss_sum : 0-d array
        This replica's loss summed over its unmasked elements, e.g.
        ``unilosses.mse(p, y, reduction="sum", where=m)``.
    count : array or Python number
        This replica's number of unmasked elements (``m.sum()``, or ``p.size``/``p.numel()``
        without a mask), or for ``reduction="weighted_mean"`` its summed weights (which may
        add up to less than 1); cast to ``loss_sum``'s dtype.  A Python number (or a NumPy
        scalar) counts the same on every replica.
    axis_name, group
        As :func:`global_sum`.

    Returns
    -------
    0-d array
        The loss ``reduction="mean"`` (or ``"weighted_mean"``) would give on the whole batch,
        on every replica; its gradient, aggregated the engine's own way, is the full-batch
        gradient (module docstring).  An all-masked global batch gives 0.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> from unilosses.distributed import global_mean
    >>> p, y = np.array([1.0, 2.0, 4.0]), np.zeros(3)
    >>> float(global_mean(unilosses.mse(p, y, reduction="sum"), p.size))
    7.0
    """
    _engine_of(loss_sum, "global_mean")
    ad = _adapter(loss_sum)
    assert ad is not None  # _engine_of accepted it
    dtype = loss_sum.dtype
    if isinstance(count, np.generic):
        # a NumPy scalar (``mask.sum()`` of a NumPy mask) counts as the number it holds, as
        # NumPy scalars do as the losses' options; only arrays must share the loss's framework
        count = count.item()
    if hasattr(count, "shape"):
        cad = adapter_for(count)
        if cad is not ad:
            raise TypeError(
                f"global_mean: `loss_sum` is {_describe(loss_sum)} but `count` is "
                f"{_describe(count)}; pass the count as an array of the same framework (or a "
                f"Python number)."
            )
        count = ad.astype(count, dtype)
    else:
        count = ad.asarray(count, dtype=dtype, like=loss_sum)
    total = global_sum(loss_sum, axis_name=axis_name, group=group)
    n = global_sum(count, axis_name=axis_name, group=group)
    # not max(n, 1): a weight sum below 1 is divided by as it is ("weighted_mean"); a count of
    # 0 leaves the sum, which is 0 then (the losses' own rule for an empty mean)
    return total / ad.where(n != 0.0, n, 1.0)


def positive_count(anchor_state: Array, /, *, dtype: Any = None) -> Array:
    """The number of positive anchors (state 1) on this replica, as a 0-d floating array.

    ``anchor_state`` as :func:`unilosses.anchor_focal_loss` (-1 ignore, 0 background,
    1 object); ``dtype`` defaults to the framework's ``float32``.  Sum it over replicas with
    :func:`global_sum`, or use :func:`anchor_normalizer`.

    Examples
    --------
    >>> import numpy as np
    >>> from unilosses.distributed import positive_count
    >>> float(positive_count(np.array([[1, 0, -1], [1, 1, 0]])))
    3.0
    """
    ad = adapter_for(anchor_state)
    if ad is None:
        raise TypeError(f"`anchor_state` must be an array, got {_describe(anchor_state)}.")
    xp = ad.xp
    dtype = xp.float32 if dtype is None else dtype
    return xp.sum(ad.astype(anchor_state == 1, dtype))


def anchor_normalizer(anchor_state: Array, /, *, axis_name: Any = None, group: Any = None,
                      dtype: Any = None) -> Array:
    """``max(1, number of positive anchors over all replicas)``: the ``normalizer=`` to pass.

    With it, :func:`unilosses.anchor_focal_loss` on each replica's shard gives that shard's
    share of the full-batch loss, and :func:`global_sum` of the shares is the full-batch loss
    (exactly the loss's own ``max(1, #positives)`` rule applied to the whole batch).

    Examples
    --------
    >>> import numpy as np
    >>> from unilosses.distributed import anchor_normalizer
    >>> float(anchor_normalizer(np.array([[0, 0, -1]])))
    1.0
    """
    n = global_sum(positive_count(anchor_state, dtype=dtype), axis_name=axis_name, group=group)
    ad = _adapter(n)
    assert ad is not None  # global_sum returns an array of the input's framework
    return ad.where(n > 1.0, n, 1.0)


# -- engines -----------------------------------------------------------------------------------

def _jax_sum(x: Array, axis_name: Any) -> Array:
    jax = sys.modules["jax"]
    if axis_name is None:
        varying = _jax_varying_axes(jax, x)
        if varying:
            names = ", ".join(repr(a) for a in sorted(varying, key=str))
            raise ValueError(
                f"global_sum: x varies over the shard_map mesh axes {names} (it is this "
                f"shard's value), but axis_name is None, which would return it unsummed. "
                f"Pass axis_name= the mesh axes the batch is split over, e.g. "
                f"global_sum(x, axis_name={sorted(varying, key=str)[0]!r})."
            )
        return x
    axis_size = getattr(jax.lax, "axis_size", None)
    try:
        if axis_size is not None:
            axis_size(axis_name)
        return jax.lax.psum(x, axis_name)
    except NameError as e:
        axes = sorted(_jax_varying_axes(jax, x), key=str)
        here = f" (x varies over {', '.join(map(repr, axes))})" if axes else ""
        raise NameError(
            f"global_sum: axis_name={axis_name!r} is not a mapped axis here{here}. Call it inside "
            f"jax.shard_map(f, mesh=mesh, ...) whose mesh has an axis named {axis_name!r} "
            f"(mesh.axis_names), or inside jax.pmap(f, axis_name={axis_name!r}). Under plain "
            f"jax.jit on NamedSharding-sharded arrays the loss is already global: pass "
            f"axis_name=None."
        ) from e


def _jax_varying_axes(jax: Any, x: Array) -> frozenset[Any]:
    typeof = getattr(jax, "typeof", None)
    if typeof is None:
        return frozenset()
    try:
        aval = typeof(x)
    except TypeError:
        return frozenset()
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(getattr(mat, "varying", ()))
    return frozenset(getattr(aval, "vma", ()))


def _torch_sum(x: Array, group: Any) -> Array:
    import torch.distributed as dist  # torch is imported already: x is a torch tensor

    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError(
                "global_sum(group=...): torch.distributed has no process group initialised. "
                "Call torch.distributed.init_process_group(...) in every process first (or "
                "drop group= for single-process training, where the sum is x itself)."
            )
        return x
    group = dist.group.WORLD if group is None else group
    fc = _torch_functional_collectives()
    if fc is not None:
        # differentiable: its backward is the all-reduce of the gradient
        return fc.wait_tensor(fc.all_reduce(x, "sum", group))
    from torch.distributed.nn.functional import all_reduce  # same backward; older torch

    return all_reduce(x, op=dist.ReduceOp.SUM, group=group)


def _torch_functional_collectives() -> Any:
    """torch's functional collectives if their all_reduce has autograd, else None.

    Where it has (recent torch), ``torch.distributed.nn.functional.all_reduce`` is deprecated
    and refused under torch.compile; both have the all-reduce of the gradient as backward.
    """
    try:
        from torch.distributed import _functional_collectives as fc
    except ImportError:
        return None
    if not hasattr(fc, "all_reduce_backward") or not hasattr(fc, "wait_tensor"):
        return None
    return fc


def _tf_sum(x: Array) -> Array:
    tf = sys.modules["tensorflow"]
    if not tf.distribute.has_strategy():
        return x
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError(
            "global_sum was called in cross-replica context (inside strategy.scope() but "
            "outside strategy.run). Call it in the per-replica step: strategy.run(step, ...)."
        )
    sum_op = tf.distribute.ReduceOp.SUM

    @tf.custom_gradient
    def _all_sum(v: Array) -> Any:
        # the value is the all-reduce; the gradient is the incoming one, unchanged, because
        # apply_gradients sums the replicas' gradients (module docstring)
        return ctx.all_reduce(sum_op, v), lambda dy: dy

    return _all_sum(x)
