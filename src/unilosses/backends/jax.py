"""JAX adapter: jax.numpy is array-API compliant; jax.nn supplies the stable extras."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._base import Adapter, Array


class JaxAdapter(Adapter):
    name = "jax"

    def __init__(self) -> None:
        super().__init__(jnp)

    def device(self, x: Array) -> Any:
        # a tracer has no committed device and a sharded array has several: jax places
        # constants and checks placement itself there
        if isinstance(x, jax.core.Tracer):
            return None
        devices = x.devices()
        return next(iter(devices)) if len(devices) == 1 else None

    def is_floating(self, x: Array) -> bool:
        return jnp.issubdtype(x.dtype, jnp.floating)

    def is_integral(self, x: Array) -> bool:
        return jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_

    def is_half(self, dtype: Any) -> bool:
        return dtype in (jnp.float16, jnp.bfloat16)

    def is_tracing(self, x: Array) -> bool:
        return isinstance(x, jax.core.Tracer)

    def asarray(self, value: Any, *, dtype: Any = None, like: Array | None = None) -> Array:
        return jnp.asarray(value, dtype=dtype)

    def astype(self, x: Array, dtype: Any) -> Array:
        return x if x.dtype == dtype else x.astype(dtype)

    def index_dtype(self) -> Any:
        # int32 unless x64 is on; take_along_axis accepts either
        return jnp.int32

    differentiable = True

    def from_numpy(self, a: Any) -> Array:
        return jnp.asarray(a)

    def value_and_grad(self, fn: Any, x: Array, *rest: Array) -> tuple[Array, Array]:
        return jax.value_and_grad(fn)(x, *rest)

    def where(self, cond: Array, x: Any, y: Any) -> Array:
        return jnp.where(cond, x, y)

    def take_along_axis(self, x: Array, indices: Array, axis: int) -> Array:
        if indices.shape[axis] != 1:
            return jnp.take_along_axis(x, indices, axis=axis, mode="clip")
        # Picking one entry along `axis` (a label's score) as a one-hot select and a sum: XLA
        # fuses it with its neighbours, and it works when `axis` is sharded over a mesh,
        # where a gather is refused under explicit sharding.
        iota = jax.lax.broadcasted_iota(indices.dtype, x.shape, axis % x.ndim)
        return jnp.sum(jnp.where(iota == indices, x, 0), axis=axis, keepdims=True)

    def stop_gradient(self, x: Array) -> Array:
        return jax.lax.stop_gradient(x)

    def sigmoid(self, x: Array) -> Array:
        return jax.nn.sigmoid(x)

    def log_sigmoid(self, x: Array) -> Array:
        return jax.nn.log_sigmoid(x)

    def softplus(self, x: Array) -> Array:
        return jax.nn.softplus(x)

    def logsumexp(self, x: Array, axis: int, keepdims: bool = False) -> Array:
        return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)

    def log_softmax(self, x: Array, axis: int) -> Array:
        return jax.nn.log_softmax(x, axis=axis)


def load() -> Adapter:
    return JaxAdapter()
