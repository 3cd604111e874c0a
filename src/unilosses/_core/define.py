"""``@unilosses.loss``: a user's elementwise function becomes a loss with our conventions.

It is the same path the built-in losses take: :func:`~unilosses._core.call.prepare` for
dispatch, validation, casting, half-precision upcast and mask cleaning, then
:meth:`~unilosses._core.call.Call.reduce` for ``reduction``/``weights``/``where``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .call import prepare
from .validate import check_same_shape

_P = inspect.Parameter


def loss(fn: Callable[..., Any] | None = None, *, fill: float = 0.0) -> Any:
    """Turn ``fn(xp, predictions, targets, ..., *, options)`` into a unilosses loss.

    ``fn`` receives the array-API namespace ``xp`` of the inputs first, then the arrays (cast
    to the computation dtype, same shape, masked elements replaced by ``fill``), then its own
    keyword options, and returns the **elementwise** loss (the shape of ``predictions``).  Use
    ``xp`` functions and :mod:`unilosses.ops` for the stable extras.  The result is called as
    ``f(predictions, targets, ..., *, reduction="mean", weights=None, where=None, **options)``
    and is traceable under ``jax.jit``/``torch.compile``/``tf.function`` as long as ``fn`` does
    no Python branching on array values.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> @unilosses.loss
    ... def charbonnier(xp, predictions, targets, *, eps=1e-3):
    ...     d = predictions - targets
    ...     return xp.sqrt(d * d + eps * eps) - eps
    >>> round(float(charbonnier(np.array([0.0, 3.0]), np.array([0.0, 0.0]))), 6)
    1.4995
    """
    if fn is None:
        return functools.partial(loss, fill=fill)

    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{fn.__name__} must take the namespace `xp` as its first argument.")
    arrays = [p for p in params[1:] if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    options = [p for p in params[1:] if p.kind is _P.KEYWORD_ONLY]
    if not arrays:
        raise TypeError(f"{fn.__name__} must take at least one array (the predictions).")
    names = tuple(p.name for p in arrays)
    option_names = {p.name for p in options}
    reserved = option_names & {"reduction", "weights", "where"}
    if reserved:
        raise TypeError(f"{fn.__name__}: option names {sorted(reserved)} are reserved.")

    @functools.wraps(fn)
    def wrapper(*values: Any, reduction: str = "mean", weights: Any = None, where: Any = None,
                **kwargs: Any) -> Any:
        if len(values) != len(names):
            raise TypeError(
                f"{fn.__name__}() takes {len(names)} arrays ({', '.join(names)}), "
                f"got {len(values)}."
            )
        unknown = set(kwargs) - option_names
        if unknown:
            raise TypeError(
                f"{fn.__name__}() got unknown option(s) {sorted(unknown)}; its options are "
                f"{sorted(option_names) + ['reduction', 'weights', 'where']}."
            )
        call, xs = prepare(names, values, reduction=reduction, weights=weights, where=where)
        xs = [call.clean(x, fill) for x in xs]
        out = fn(call.xp, *xs, **kwargs)
        check_same_shape(f"{fn.__name__}'s elementwise loss", call.ad.shape(out),
                         names[0], call.loss_shape)
        if out.dtype != call.dtype:
            # checked like the shape: an astype or a float64 array in `fn` (perhaps on one
            # backend only) would otherwise change the loss's dtype silently
            raise TypeError(
                f"{fn.__name__} returned an elementwise loss of dtype {out.dtype}, but the "
                f"computation dtype is {call.dtype}; return it in the dtype of the arrays "
                f"`{fn.__name__}` receives (e.g. xp.astype(loss, {names[0]}.dtype))."
            )
        return call.reduce(out)

    sig = [_P(n, _P.POSITIONAL_ONLY) for n in names]
    sig += [p.replace(kind=_P.KEYWORD_ONLY) for p in options]
    sig += [_P("reduction", _P.KEYWORD_ONLY, default="mean"),
            _P("weights", _P.KEYWORD_ONLY, default=None),
            _P("where", _P.KEYWORD_ONLY, default=None)]
    wrapper.__signature__ = inspect.Signature(sig)  # type: ignore[attr-defined]
    wrapper.__wrapped_loss__ = fn  # type: ignore[attr-defined]
    return wrapper
