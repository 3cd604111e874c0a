"""The frameworks' own losses ("peers"), run beside unilosses on the same inputs.

A :class:`Peer` is a framework's loss, called as its users call it, for one unilosses loss on
one backend.  It is compared only on the cases whose conventions it shares (a peer lists the
case tags and options it supports; masks and weights are unilosses's own, so cases with
``where=``/``weights=`` are skipped), so a deviation is a real difference, not a different
definition.  Known differences of definition, which are not compared:

* ``torch.nn.functional.binary_cross_entropy`` clamps the log at -100 instead of clipping the
  probability to [1e-7, 1 - 1e-7]: exact 0/1 probabilities ("clipped") are skipped.
* torchvision's and optax's ``sigmoid_focal_loss`` and Keras's ``BinaryFocalCrossentropy`` use
  ``1 - p_t``, which equals unilosses's ``|t - p|`` only for 0/1 labels: "soft" is skipped.
* optax's and tf.nn's integer-label cross-entropies have no label smoothing or ignore index.
* Keras's ``SparseCategoricalCrossentropy`` on probabilities renormalises *after* the clip
  (it takes the log-softmax of the clipped log-probabilities): "clipped" is skipped.

A peer may also declare a *known* difference for a dtype (``known``): the deviation is still
measured and shown, marked "known" with the reason, but does not fail the run.  Each is a
documented imprecision of the peer, not a choice of definition:

* Keras's ``LogCosh`` subtracts ``log(2)`` computed in float32, so in float64 it is off by a
  constant 1.9e-9.

Frameworks are imported inside the peer functions only, when the report runs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends import is_installed
from .cases import Case

PeerFn = Callable[..., Any]


@dataclass(frozen=True)
class Peer:
    """A framework's own loss for the unilosses loss ``loss`` on backend ``backend``.

    ``fn(x, *rest, options=..., arrays=..., dtype=...)`` gets the same backend arrays as the
    unilosses call (``arrays`` holds the keyword arrays such as ``pos_weight``) and returns
    that framework's result; it must be differentiable in ``x`` on a differentiable backend.
    """

    name: str
    loss: str
    backend: str
    fn: PeerFn
    #: case tags this peer's definition covers (see :class:`unilosses.parity.Case`)
    tags: frozenset[str] = frozenset()
    #: option names it accepts (anything else: the case is skipped)
    options: frozenset[str] = frozenset()
    #: reductions it offers
    reductions: frozenset[str] = frozenset({"mean"})
    #: keyword arrays it accepts
    arrays: frozenset[str] = frozenset()
    #: modules that must be importable (beyond the backend's framework)
    requires: tuple[str, ...] = ()
    #: dtype -> reason: a known imprecision of the peer in that dtype (shown, not failed)
    known: Mapping[str, str] = field(default_factory=dict)

    def supports(self, case: Case) -> bool:
        opts = dict(case.options)
        reduction = opts.pop("reduction", "mean")
        return (reduction in self.reductions
                and set(opts) <= self.options
                and set(case.arrays) <= self.arrays
                and case.tags <= self.tags)


@dataclass
class PeerRegistry:
    peers: list[Peer] = field(default_factory=list)

    def add(self, peer: Peer) -> Peer:
        self.peers.append(peer)
        return peer

    def for_loss(self, loss: str, backend: str) -> list[Peer]:
        return [p for p in self.peers if p.loss == loss and p.backend == backend]


PEERS = PeerRegistry()


def register_peer(peer: Peer) -> Peer:
    """Add a framework loss to compare a (possibly user-registered) loss against."""
    return PEERS.add(peer)


def _fs(*names: str) -> frozenset[str]:
    return frozenset(names)


ALL_REDUCTIONS = _fs("mean", "sum", "none")


# -- torch.nn.functional (and torchvision's focal loss, written inline) -------------------------
def _torch_reg(name: str, extra: str | None = None) -> PeerFn:
    def fn(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
           dtype: str) -> Any:
        import torch.nn.functional as F

        kw = {"reduction": options.get("reduction", "mean")}
        if extra is not None:
            kw[extra] = options.get(extra, 1.0)
        return getattr(F, name)(x, t, **kw)

    return fn


def _torch_bce(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
               dtype: str) -> Any:
    import torch.nn.functional as F

    return F.binary_cross_entropy(x, t)


def _torch_bce_logits(x: Any, t: Any, *, options: Mapping[str, Any],
                      arrays: Mapping[str, Any], dtype: str) -> Any:
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(x, t, pos_weight=arrays.get("pos_weight"))


def _torch_ce(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
              dtype: str) -> Any:
    import torch.nn.functional as F

    ignore = options.get("ignore_index")
    return F.cross_entropy(x, t, ignore_index=-100 if ignore is None else ignore,
                           label_smoothing=options.get("label_smoothing", 0.0))


def _torchvision_focal(x: Any, t: Any, *, options: Mapping[str, Any],
                       arrays: Mapping[str, Any], dtype: str) -> Any:
    # torchvision.ops.sigmoid_focal_loss (torchvision 0.2x), verbatim but for the mean
    import torch.nn.functional as F

    alpha = options.get("alpha", 0.25)
    alpha = -1.0 if alpha is None else alpha
    gamma = options.get("gamma", 2.0)
    p = x.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return loss.mean()


# -- optax -------------------------------------------------------------------------------------
def _reduce_jnp(v: Any, reduction: str) -> Any:
    import jax.numpy as jnp

    return v if reduction == "none" else (jnp.sum(v) if reduction == "sum" else jnp.mean(v))


def _optax_elementwise(name: str, extra: str | None = None) -> PeerFn:
    def fn(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
           dtype: str) -> Any:
        import optax

        kw = {} if extra is None else {extra: options.get(extra, 1.0)}
        return _reduce_jnp(getattr(optax, name)(x, t, **kw), options.get("reduction", "mean"))

    return fn


def _optax_bce(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
               dtype: str) -> Any:
    import jax.numpy as jnp
    import optax

    return jnp.mean(optax.sigmoid_binary_cross_entropy(x, t))


def _optax_ce(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
              dtype: str) -> Any:
    import jax.numpy as jnp
    import optax

    s = options.get("label_smoothing", 0.0)
    if s:
        t = optax.smooth_labels(t, s)
    return jnp.mean(optax.softmax_cross_entropy(x, t))


def _optax_sparse(x: Any, y: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
                  dtype: str) -> Any:
    import jax.numpy as jnp
    import optax

    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y))


def _optax_focal(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
                 dtype: str) -> Any:
    import jax.numpy as jnp
    import optax

    return jnp.mean(optax.sigmoid_focal_loss(x, t, alpha=options.get("alpha", 0.25),
                                             gamma=options.get("gamma", 2.0)))


# -- tf.nn -------------------------------------------------------------------------------------
def _tf_bce(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
            dtype: str) -> Any:
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=x))


def _tf_ce(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
           dtype: str) -> Any:
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=t, logits=x))


def _tf_sparse(x: Any, y: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
               dtype: str) -> Any:
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x))


# -- Keras -------------------------------------------------------------------------------------
_KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}


def keras_backend() -> str:
    """The backend Keras will use, read as Keras reads it, without importing Keras."""
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        try:
            with open(os.path.join(home, "keras.json")) as fh:
                name = json.load(fh).get("backend")
        except (OSError, ValueError):
            name = None
    return _KERAS_BACKENDS.get(name or "tensorflow", name or "tensorflow")


def _keras(cls: str, **fixed: Any) -> PeerFn:
    def fn(x: Any, t: Any, *, options: Mapping[str, Any], arrays: Mapping[str, Any],
           dtype: str) -> Any:
        import keras

        kw = dict(fixed)
        for ours, theirs in (("delta", "delta"), ("label_smoothing", "label_smoothing"),
                             ("gamma", "gamma")):
            if ours in options:
                kw[theirs] = options[ours]
        if cls == "BinaryFocalCrossentropy":
            alpha = options.get("alpha", 0.25)
            kw["apply_class_balancing"] = alpha is not None
            if alpha is not None:
                kw["alpha"] = alpha
            kw.setdefault("gamma", 2.0)
        # dtype= keeps float64 inputs in float64 (Keras computes in floatx() otherwise)
        loss = getattr(keras.losses, cls)(dtype=dtype, **kw)
        return loss(t, x)  # Keras takes (y_true, y_pred)

    return fn


def _builtin() -> None:
    add = PEERS.add
    soft, smoothing = "soft", "smoothing"
    # torch
    for loss, fname, extra in (("mse", "mse_loss", None), ("mae", "l1_loss", None),
                               ("huber", "huber_loss", "delta"),
                               ("smooth_l1", "smooth_l1_loss", "beta")):
        add(Peer(f"F.{fname}", loss, "torch", _torch_reg(fname, extra),
                 options=_fs(extra) if extra else _fs(), reductions=ALL_REDUCTIONS))
    add(Peer("F.binary_cross_entropy", "binary_cross_entropy", "torch", _torch_bce,
             tags=_fs(soft)))
    add(Peer("F.binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits", "torch",
             _torch_bce_logits, tags=_fs(soft, "pos_weight"), arrays=_fs("pos_weight")))
    add(Peer("F.cross_entropy", "categorical_cross_entropy_with_logits", "torch", _torch_ce,
             tags=_fs(soft, smoothing), options=_fs("label_smoothing")))
    add(Peer("F.cross_entropy", "sparse_categorical_cross_entropy_with_logits", "torch",
             _torch_ce, tags=_fs(smoothing, "ignore_index"),
             options=_fs("label_smoothing", "ignore_index")))
    add(Peer("torchvision sigmoid_focal_loss", "binary_focal_loss_with_logits", "torch",
             _torchvision_focal, tags=_fs("no_alpha"), options=_fs("alpha", "gamma")))
    # optax
    opt = ("optax",)
    add(Peer("optax.sigmoid_binary_cross_entropy", "binary_cross_entropy_with_logits", "jax",
             _optax_bce, tags=_fs(soft), requires=opt))
    add(Peer("optax.softmax_cross_entropy", "categorical_cross_entropy_with_logits", "jax",
             _optax_ce, tags=_fs(soft, smoothing), options=_fs("label_smoothing"),
             requires=opt))
    add(Peer("optax.softmax_cross_entropy_with_integer_labels",
             "sparse_categorical_cross_entropy_with_logits", "jax", _optax_sparse,
             requires=opt))
    add(Peer("optax.sigmoid_focal_loss", "binary_focal_loss_with_logits", "jax", _optax_focal,
             tags=_fs("no_alpha"), options=_fs("alpha", "gamma"), requires=opt))
    add(Peer("optax.huber_loss", "huber", "jax", _optax_elementwise("huber_loss", "delta"),
             options=_fs("delta"), reductions=ALL_REDUCTIONS, requires=opt))
    add(Peer("optax.log_cosh", "log_cosh", "jax", _optax_elementwise("log_cosh"),
             reductions=ALL_REDUCTIONS, requires=opt))
    # tf.nn
    add(Peer("tf.nn.sigmoid_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
             "tensorflow", _tf_bce, tags=_fs(soft)))
    add(Peer("tf.nn.softmax_cross_entropy_with_logits", "categorical_cross_entropy_with_logits",
             "tensorflow", _tf_ce, tags=_fs(soft)))
    add(Peer("tf.nn.sparse_softmax_cross_entropy_with_logits",
             "sparse_categorical_cross_entropy_with_logits", "tensorflow", _tf_sparse))
    # Keras, under whichever backend Keras is configured for
    kb = keras_backend()
    ker = ("keras",)
    for loss, cls, fixed, tags, options in (
        ("mse", "MeanSquaredError", {}, (), ()),
        ("mae", "MeanAbsoluteError", {}, (), ()),
        ("huber", "Huber", {}, (), ("delta",)),
        ("log_cosh", "LogCosh", {}, (), ()),
        ("binary_cross_entropy", "BinaryCrossentropy", {}, (soft, "clipped"), ()),
        ("binary_cross_entropy_with_logits", "BinaryCrossentropy", {"from_logits": True},
         (soft,), ()),
        ("categorical_cross_entropy", "CategoricalCrossentropy", {},
         (soft, smoothing, "clipped"), ("label_smoothing",)),
        ("categorical_cross_entropy_with_logits", "CategoricalCrossentropy",
         {"from_logits": True}, (soft, smoothing), ("label_smoothing",)),
        ("sparse_categorical_cross_entropy", "SparseCategoricalCrossentropy", {}, (), ()),
        ("sparse_categorical_cross_entropy_with_logits", "SparseCategoricalCrossentropy",
         {"from_logits": True}, (), ()),
        ("binary_focal_loss", "BinaryFocalCrossentropy", {}, ("clipped", "no_alpha"),
         ("alpha", "gamma")),
        ("binary_focal_loss_with_logits", "BinaryFocalCrossentropy", {"from_logits": True},
         ("no_alpha",), ("alpha", "gamma")),
    ):
        known = {"float64": "Keras subtracts log(2) rounded to float32 (1.9e-9 off)"} \
            if cls == "LogCosh" else {}
        add(Peer(f"keras.losses.{cls}", loss, kb, _keras(cls, **fixed), tags=_fs(*tags),
                 options=_fs(*options), requires=ker, known=known))


_builtin()


def missing_requirements(peer: Peer) -> list[str]:
    return [m for m in peer.requires if not is_installed(m)]


#: what to type for a missing peer framework
PEER_INSTALL = {"optax": "pip install optax", "keras": "pip install keras"}

__all__ = ["PEERS", "PEER_INSTALL", "Peer", "keras_backend", "missing_requirements",
           "register_peer"]
