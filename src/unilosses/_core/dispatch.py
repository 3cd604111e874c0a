"""From the arguments of a call to one backend adapter, with a clear error for mixed inputs."""

from __future__ import annotations

from typing import Any

from ..backends import _BY_TYPE, Adapter, adapter_for, adapter_named


def _describe(x: Any) -> str:
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}"


def resolve(names: tuple[str, ...], values: tuple[Any, ...]) -> Adapter:
    """The one adapter serving every array among ``values`` (named ``names`` in messages).

    Python scalars, lists and None carry no framework; if no value is an array the call runs
    on NumPy.
    """
    # the common case first: every argument of one array type already seen.  (No for/else:
    # AutoGraph, converting this inside a user's tf.function, warns that it cannot.)
    first = type(values[0])
    adapter = _BY_TYPE.get(first)
    if adapter is not None and all(type(v) is first or v is None for v in values):
        return adapter
    found: Adapter | None = None
    found_name = ""
    found_value: Any = None
    for name, value in zip(names, values):
        if value is None:
            continue
        adapter = adapter_for(value)
        if adapter is None:
            continue
        if found is None:
            found, found_name, found_value = adapter, name, value
        elif adapter is not found:
            raise TypeError(
                f"arrays from two frameworks in one call: `{found_name}` is "
                f"{_describe(found_value)} ({found.name}) but `{name}` is {_describe(value)} "
                f"({adapter.name}). Convert `{name}` to the framework of `{found_name}` "
                f"(e.g. torch.as_tensor(...), jnp.asarray(...), np.asarray(...)) before the call."
            )
    if found is None:
        return adapter_named("numpy")
    return found
