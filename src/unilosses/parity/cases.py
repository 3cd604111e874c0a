"""The registry of losses the parity report checks, each with its reference and its cases.

A :class:`LossSpec` ties a loss (a callable taking arrays of any backend) to an independent
float64 NumPy reference and to a function that generates its :class:`Case` s from a seeded
random generator.  Every public loss of unilosses is registered below; a user's own loss is
checked the same way by registering a spec before the report runs::

    import numpy as np
    from unilosses.parity import Case, LossSpec, register

    def my_cases(rng):
        p, t = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
        return [Case("ordinary", (p, t)), Case("zero error", (t, t), kind="extreme")]

    register(LossSpec("my_l2", my_l2, value=lambda p, t, *, dtype: np.mean((p - t) ** 2),
                      cases=my_cases))
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

import unilosses

from . import references as ref

#: what a case is for; "extreme" cases get no finite-difference gradient (they sit on clips,
#: kinks or saturated exponentials, where a difference quotient is meaningless)
KINDS = ("ordinary", "extreme", "masked")


@dataclass(frozen=True)
class Case:
    """One set of inputs for a loss.

    Parameters
    ----------
    name : str
        Short label shown in the report ("ordinary", "logits ±1e4", ...).
    args : tuple of numpy arrays
        Positional arrays, predictions first.  Floating arrays are given in float64 and cast to
        the dtype under test; integer and boolean arrays (labels, masks) are passed as they are.
    options : mapping
        Keyword options passed unchanged (``reduction``, ``delta``, ``ignore_index``, ...).
    arrays : mapping
        Keyword arrays (``where``, ``weights``, ``pos_weight``), converted like ``args``.
    kind : {"ordinary", "extreme", "masked"}
    fd : bool, optional
        Whether central finite differences of the reference are a valid gradient reference
        here (the loss is smooth within a few 1e-3 of every input).  Default: not for
        "extreme" cases.
    tags : frozenset of str
        Conventions a case exercises that a framework's own loss may not share ("soft" labels,
        "clipped" probabilities, "smoothing", "pos_weight", "ignore_index"...); peers skip
        cases with tags they do not support.
    """

    name: str
    args: tuple[np.ndarray, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    kind: str = "ordinary"
    fd: bool | None = None
    tags: AbstractSet[str] = frozenset()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Case kind must be one of {KINDS}, got {self.kind!r}")
        if self.fd is None:
            object.__setattr__(self, "fd", self.kind != "extreme")
        object.__setattr__(self, "tags", frozenset(self.tags))

    def cast(self, dtype: str) -> Case:
        """This case with its floating arrays rounded to ``dtype`` (and held as that dtype)."""
        return Case(self.name, tuple(_cast(a, dtype) for a in self.args), dict(self.options),
                    {k: _cast(v, dtype) for k, v in self.arrays.items()}, self.kind, self.fd,
                    self.tags)

    def widened(self) -> Case:
        """This case with floating arrays widened to float64 (exactly: no rounding)."""
        return self.cast("float64")

    @property
    def masked(self) -> bool:
        return "where" in self.arrays


def _cast(a: Any, dtype: str) -> Any:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(dtype)
    return a


@dataclass
class LossSpec:
    """A loss under test.

    Parameters
    ----------
    name : str
        The name the report and ``--losses`` use.
    fn : callable
        The loss: ``fn(*args, **options, **arrays)`` on arrays of any backend.
    value : callable
        Float64 NumPy reference, ``value(*args, dtype=..., **options, **arrays)``; ``dtype`` is
        the computation dtype, for constants the loss rounds to it.
    cases : callable
        ``cases(rng) -> list[Case]`` from a ``numpy.random.Generator``.
    grad : callable, optional
        Analytic gradient of a scalar result with respect to ``args[0]`` (same signature as
        ``value``), returning None where it has no closed form; finite differences of
        ``value`` are used then, on cases with ``fd=True``.
    differentiable : bool
        False for metrics: no gradient is compared.
    exact : bool
        Compare values exactly (boolean results).
    fd_step : float, optional
        First finite-difference step, relative to ``max(|x|, 0.05)``.
    held : callable, optional
        For a loss that stops a gradient: ``held(*args, **options)`` returns a reference like
        ``value`` in which the stopped part is fixed at ``args``; finite differences of it
        are then the gradient reference (CIoU's alpha, computed under ``no_grad``).
    """

    name: str
    fn: Callable[..., Any]
    value: Callable[..., Any]
    cases: Callable[[np.random.Generator], list[Case]]
    grad: Callable[..., Any] | None = None
    differentiable: bool = True
    exact: bool = False
    #: first finite-difference step relative to max(|x|, 0.05) (None: the default 0.02);
    #: smaller for losses that curve on a small scale
    fd_step: float | None = None
    held: Callable[..., Callable[..., Any]] | None = None

    def make_cases(self, seed: int) -> list[Case]:
        """The cases, from a generator seeded by ``seed`` and the loss's name (so adding a loss
        never changes the inputs of another)."""
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        return list(self.cases(rng))


REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec, *, replace: bool = False) -> LossSpec:
    """Add ``spec`` to the losses the report checks."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"a loss named {spec.name!r} is already registered (replace=True)")
    REGISTRY[spec.name] = spec
    return spec


def uncovered() -> list[str]:
    """Public losses of unilosses (functions of ``unilosses.losses``) with no registered spec."""
    out = []
    for name in getattr(unilosses, "__all__", ()):
        obj = getattr(unilosses, name, None)
        module = getattr(obj, "__module__", "") or ""
        if callable(obj) and module.startswith("unilosses.losses") and name not in REGISTRY:
            out.append(name)
    return out


def select(patterns: Iterable[str] | None) -> list[LossSpec]:
    """Registered specs whose names match any of ``patterns`` (globs; all when None)."""
    if patterns is None:
        return list(REGISTRY.values())
    patterns = list(patterns)
    unknown = [p for p in patterns if not any(fnmatchcase(n, p) for n in REGISTRY)]
    if unknown:
        raise ValueError(
            f"no registered loss matches {', '.join(map(repr, unknown))}; "
            f"known losses: {', '.join(REGISTRY)}"
        )
    return [s for n, s in REGISTRY.items() if any(fnmatchcase(n, p) for p in patterns)]


# -- input generators ----------------------------------------------------------------------------
SHAPE = (8, 5)        # 8 samples (rows), 5 classes or features
ANCHORS = (2, 6, 3)   # batch, anchors, classes


def _row_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.random(n) < 0.6
    m[0], m[1] = True, False  # never all in or all out
    return m


def _nan_where(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``a`` with NaN where the mask drops it: a masked NaN must reach neither value nor grad."""
    keep = np.broadcast_to(keep, a.shape) if keep.ndim == a.ndim else np.expand_dims(keep, -1)
    return np.where(np.broadcast_to(keep, a.shape), a, np.nan)


def _regression(options: Mapping[str, Any] | None = None) -> Callable[..., list[Case]]:
    opts = dict(options or {})

    def cases(rng: np.random.Generator) -> list[Case]:
        p, t = rng.normal(size=SHAPE) * 2.0, rng.normal(size=SHAPE)
        where = rng.random(SHAPE) < 0.7
        where.flat[0] = True
        big = t + rng.choice([-1.0, 1.0], size=SHAPE) * 1e4
        w = rng.uniform(0.5, 2.0, size=(SHAPE[0], 1))
        return [
            Case("ordinary", (p, t), opts),
            Case("weighted sum", (p, t), {**opts, "reduction": "sum"}, {"weights": w}),
            Case("reduction none", (p, t), {**opts, "reduction": "none"}),
            Case("zero error", (t.copy(), t), opts, kind="extreme"),
            Case("error ±1e4", (big, t), opts, kind="extreme"),
            Case("masked", (_nan_where(p, where), t), opts, {"where": where}, kind="masked"),
        ]

    return cases


def _rmse_cases(rng: np.random.Generator) -> list[Case]:
    p, t = rng.normal(size=SHAPE) * 2.0, rng.normal(size=SHAPE)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    return [
        Case("ordinary", (p, t)),
        Case("per column", (p, t), {"axis": 0}),
        Case("weighted", (p, t), {}, {"weights": rng.uniform(0.5, 2.0, size=SHAPE)}),
        Case("zero error", (t.copy(), t), kind="extreme"),
        Case("masked", (_nan_where(p, where), t), {}, {"where": where}, kind="masked"),
    ]


def _bce_cases(rng: np.random.Generator) -> list[Case]:
    p = rng.uniform(0.02, 0.98, size=SHAPE)
    hard = (rng.random(SHAPE) < 0.5).astype(np.float64)
    soft = rng.uniform(0.0, 1.0, size=SHAPE)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    exact = (rng.random(SHAPE) < 0.5).astype(np.float64)
    return [
        Case("ordinary", (p, hard)),
        Case("soft labels", (p, soft), tags={"soft"}),
        Case("exact 0/1", (exact, hard), kind="extreme", tags={"clipped"}),
        Case("masked", (_nan_where(p, where), hard), {}, {"where": where}, kind="masked"),
    ]


def _logit_sample(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(size=shape) * 3.0


def _extreme_logits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice([-1e4, 1e4, 0.0], size=shape)


def _bce_logits_cases(rng: np.random.Generator) -> list[Case]:
    x = _logit_sample(rng, SHAPE)
    hard = (rng.random(SHAPE) < 0.5).astype(np.float64)
    soft = rng.uniform(0.0, 1.0, size=SHAPE)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    pw = rng.uniform(0.5, 3.0, size=(SHAPE[1],))
    return [
        Case("ordinary", (x, hard)),
        Case("soft labels", (x, soft), tags={"soft"}),
        Case("pos_weight", (x, hard), {}, {"pos_weight": pw}, tags={"pos_weight"}),
        Case("logits ±1e4", (_extreme_logits(rng, SHAPE), hard), kind="extreme"),
        Case("masked", (_nan_where(x, where), hard), {}, {"where": where}, kind="masked"),
    ]


def _one_hot(rng: np.random.Generator, rows: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, classes, size=rows)
    return labels, np.eye(classes)[labels]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _categorical(logits: bool, sparse: bool) -> Callable[..., list[Case]]:
    def cases(rng: np.random.Generator) -> list[Case]:
        rows, classes = SHAPE
        x = _logit_sample(rng, SHAPE) if logits else _softmax(rng.normal(size=SHAPE))
        labels, onehot = _one_hot(rng, rows, classes)
        target: np.ndarray = labels if sparse else onehot
        keep = _row_mask(rng, rows)
        if logits:
            ext = _extreme_logits(rng, SHAPE)
            ext[:, 0] = 1e4  # every row saturated: a ±2e4 logit gap somewhere
            extreme = Case("logits ±1e4", (ext, target), kind="extreme")
        else:
            _, hot = _one_hot(rng, rows, classes)
            extreme = Case("exact 0/1", (hot, target), kind="extreme", tags={"clipped"})
        out = [
            Case("ordinary", (x, target)),
            Case("label smoothing", (x, target), {"label_smoothing": 0.1},
                 tags={"smoothing"}),
            extreme,
            Case("masked", (_nan_where(x, keep), target), {}, {"where": keep}, kind="masked"),
        ]
        if sparse:
            ignored = np.where(keep, labels, -100)
            out.insert(2, Case("ignore_index", (x, ignored),
                               {"ignore_index": -100}, tags={"ignore_index"}))
        else:
            soft = _softmax(rng.normal(size=SHAPE))
            out.insert(2, Case("soft targets", (x, soft), tags={"soft"}))
        return out

    return cases


def _focal(logits: bool) -> Callable[..., list[Case]]:
    def cases(rng: np.random.Generator) -> list[Case]:
        x = _logit_sample(rng, SHAPE) if logits else rng.uniform(0.02, 0.98, size=SHAPE)
        hard = (rng.random(SHAPE) < 0.5).astype(np.float64)
        soft = rng.uniform(0.0, 1.0, size=SHAPE)
        where = rng.random(SHAPE) < 0.7
        where.flat[0] = True
        if logits:
            extreme = Case("logits ±1e4", (_extreme_logits(rng, SHAPE), hard), kind="extreme")
        else:
            exact = (rng.random(SHAPE) < 0.5).astype(np.float64)
            extreme = Case("exact 0/1", (exact, hard), kind="extreme", tags={"clipped"})
        return [
            Case("ordinary", (x, hard)),
            Case("soft labels", (x, soft), tags={"soft"}),
            Case("no alpha, gamma 1.5", (x, hard), {"alpha": None, "gamma": 1.5},
                 tags={"no_alpha"}),
            extreme,
            Case("masked", (_nan_where(x, where), hard), {}, {"where": where}, kind="masked"),
        ]

    return cases


def _anchor(logits: bool) -> Callable[..., list[Case]]:
    def cases(rng: np.random.Generator) -> list[Case]:
        b, n, c = ANCHORS
        x = _logit_sample(rng, ANCHORS) if logits else rng.uniform(0.02, 0.98, size=ANCHORS)
        labels = rng.integers(0, c, size=(b, n))
        t = np.eye(c)[labels]
        state = rng.choice([-1.0, 0.0, 1.0], size=(b, n))
        state[0, :3] = [-1.0, 0.0, 1.0]
        xs = np.where(np.expand_dims(state != -1, -1), x, np.nan)  # NaN under ignored anchors
        if logits:
            ext = _extreme_logits(rng, ANCHORS)
            extreme = Case("logits ±1e4", (ext, t, state), kind="extreme")
        else:
            exact = (rng.random(ANCHORS) < 0.5).astype(np.float64)
            extreme = Case("exact 0/1", (exact, t, state), kind="extreme", tags={"clipped"})
        return [
            Case("ordinary", (x, t, state)),
            Case("normalizer", (x, t, state), {"normalizer": 3.0}),
            Case("no positives", (x, t, np.where(state == 1.0, 0.0, state))),
            extreme,
            Case("ignored NaN", (xs, t, state), kind="masked"),
        ]

    return cases


def _top_k(accuracy: bool) -> Callable[..., list[Case]]:
    def cases(rng: np.random.Generator) -> list[Case]:
        rows, classes = SHAPE
        x = rng.normal(size=SHAPE)
        labels = rng.integers(0, classes, size=rows)
        ties = rng.integers(0, 3, size=SHAPE).astype(np.float64)  # small integers: many ties
        bad = x.copy()
        bad[0, 1] = np.inf
        bad[1, 2] = np.nan
        bad_labels = labels.copy()
        bad_labels[2], bad_labels[3] = -1, classes
        out = [
            Case("ordinary", (x, labels), {"k": 2}),
            Case("k=1", (x, labels), {"k": 1}),
            Case("ties", (ties, labels), {"k": 2}, kind="extreme"),
            Case("non-finite / bad labels", (bad, bad_labels), {"k": 2}, kind="extreme"),
        ]
        if accuracy:
            keep = _row_mask(rng, rows)
            out.append(Case("masked", (x, labels), {"k": 2}, {"where": keep}, kind="masked"))
        return out

    return cases


# -- the loss catalogue (issue 9) ----------------------------------------------------------------
ALPHA = np.array([0.1, 0.3, 0.5, 0.7, 0.9])   # one per class of SHAPE
SEGMENTATION = (4, 3, 3, 2)                     # images, height, width, classes


def _categorical_focal(logits: bool, sparse: bool) -> Callable[..., list[Case]]:
    """The cross-entropy cases, plus per-class alpha and gamma variations."""
    base = _categorical(logits, sparse)

    def cases(rng: np.random.Generator) -> list[Case]:
        out = base(rng)
        x, target = out[0].args
        out[1:1] = [
            Case("per-class alpha, gamma 1.5", (x, target), {"gamma": 1.5}, {"alpha": ALPHA},
                 tags={"alpha_array"}),
            Case("no alpha, gamma 0.5", (x, target), {"alpha": None, "gamma": 0.5},
                 tags={"no_alpha"}),
            Case("weighted_mean", (x, target), {"reduction": "weighted_mean"},
                 {"weights": rng.uniform(0.5, 2.0, size=SHAPE[0])}),
        ]
        return out

    return cases


def _poly1_cases(rng: np.random.Generator) -> list[Case]:
    rows, classes = SHAPE
    x = _logit_sample(rng, SHAPE)
    _, onehot = _one_hot(rng, rows, classes)
    keep = _row_mask(rng, rows)
    return [
        Case("ordinary", (x, onehot)),
        Case("epsilon -1, soft targets", (x, _softmax(rng.normal(size=SHAPE))),
             {"epsilon": -1.0}, tags={"soft"}),
        Case("logits ±1e4", (_extreme_logits(rng, SHAPE), onehot), kind="extreme"),
        Case("masked", (_nan_where(x, keep), onehot), {}, {"where": keep}, kind="masked"),
    ]


def _kl_cases(rng: np.random.Generator) -> list[Case]:
    logp = np.log(rng.dirichlet(np.ones(SHAPE[1]), SHAPE[0]))
    t = rng.dirichlet(np.ones(SHAPE[1]), SHAPE[0])
    # a zero target (t log t = 0), the row renormalised after the zero is set (a tuple
    # assignment would divide the old row and put the entry back)
    t[0, 1] = 0.0
    t[0] /= t[0].sum()
    keep = _row_mask(rng, SHAPE[0])
    zero = logp.copy()
    zero[0, 1] = -np.inf                                  # log p = -inf where t = 0
    return [
        Case("ordinary", (logp, t)),
        Case("pointwise (torch)", (logp, t), {"axis": None}),
        Case("batchmean", (logp, t), {"axis": None, "reduction": "batchmean"}),
        Case("log_target", (logp, np.log(rng.dirichlet(np.ones(SHAPE[1]), SHAPE[0]))),
             {"log_target": True}),
        Case("log p = -inf at t = 0", (zero, t), kind="extreme"),
        Case("masked", (_nan_where(logp, keep), t), {}, {"where": keep}, kind="masked"),
    ]


def _poisson_cases(rng: np.random.Generator) -> list[Case]:
    x, k = rng.normal(size=SHAPE), rng.poisson(2.0, SHAPE).astype(np.float64)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    return [
        Case("ordinary", (x, k)),
        Case("full (Stirling)", (x, k), {"full": True}),
        Case("rates", (rng.uniform(0.1, 3.0, SHAPE), k), {"log_input": False}),
        Case("masked", (_nan_where(x, where), k), {}, {"where": where}, kind="masked"),
    ]


def _gaussian_cases(rng: np.random.Generator) -> list[Case]:
    p, t = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    v = rng.uniform(0.2, 2.0, SHAPE)
    tiny = v.copy()
    tiny[0, :2] = [1e-9, 0.0]                           # floored at eps
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    return [
        Case("ordinary", (p, t, v)),
        Case("one variance per row", (p, t, v[:, 0])),
        Case("full", (p, t, v), {"full": True}),
        Case("variance below eps", (p, t, tiny), kind="extreme"),
        Case("masked", (_nan_where(p, where), t, v), {}, {"where": where}, kind="masked"),
    ]


def _hinge_cases(rng: np.random.Generator) -> list[Case]:
    t = rng.choice([-1.0, 1.0], SHAPE)
    # margins 1 - t p kept at least 0.2 from the kink, so that differences are valid
    margin = rng.choice([-1.0, 1.0], SHAPE) * rng.uniform(0.2, 2.0, SHAPE)
    p = t * (1.0 - margin)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    return [
        Case("labels ±1", (p, t)),
        Case("labels 0/1", (p * t, (t + 1.0) / 2.0)),
        Case("at the kink", (t.copy(), t), kind="extreme"),
        Case("masked", (_nan_where(p, where), t), {}, {"where": where}, kind="masked"),
    ]


def _categorical_hinge_cases(rng: np.random.Generator) -> list[Case]:
    rows, classes = SHAPE
    _, onehot = _one_hot(rng, rows, classes)
    p = rng.normal(size=SHAPE)
    keep = _row_mask(rng, rows)
    ties = rng.integers(0, 2, size=SHAPE).astype(np.float64)
    return [
        Case("ordinary", (p, onehot)),
        Case("ties", (ties, onehot), kind="extreme"),
        Case("masked", (_nan_where(p, keep), onehot), {}, {"where": keep}, kind="masked"),
    ]


def _cosine_cases(rng: np.random.Generator) -> list[Case]:
    p, t = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    zero = p.copy()
    zero[0] = 0.0
    keep = _row_mask(rng, SHAPE[0])
    return [
        Case("ordinary", (p, t)),
        Case("along axis 0", (p, t), {"axis": 0}),
        Case("a zero vector", (zero, t), kind="extreme"),
        Case("masked", (_nan_where(p, keep), t), {}, {"where": keep}, kind="masked"),
    ]


def _quantile_cases(rng: np.random.Generator) -> list[Case]:
    p, t = rng.normal(size=SHAPE) * 2.0, rng.normal(size=SHAPE)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    levels = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    return [
        Case("q 0.3", (p, t), {"quantiles": 0.3}),
        Case("five quantiles", (p, t[:, 0]), {}, {"quantiles": levels}),
        Case("zero error", (t.copy(), t), {"quantiles": 0.8}, kind="extreme"),
        Case("masked", (_nan_where(p, where), t), {"quantiles": 0.7}, {"where": where},
             kind="masked"),
    ]


def _msle_cases(rng: np.random.Generator) -> list[Case]:
    p, t = rng.uniform(0.0, 3.0, SHAPE), rng.uniform(0.0, 3.0, SHAPE)
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    return [
        Case("ordinary", (p, t)),
        Case("weighted_mean", (p, t), {"reduction": "weighted_mean"},
             {"weights": rng.uniform(0.5, 2.0, size=(SHAPE[0], 1))}),
        Case("negatives (floored)", (p - 1.5, t - 1.5), kind="extreme"),
        Case("masked", (_nan_where(p, where), t), {}, {"where": where}, kind="masked"),
    ]


def _mape_cases(rng: np.random.Generator) -> list[Case]:
    p = rng.normal(size=SHAPE) * 2.0
    t = rng.choice([-1.0, 1.0], SHAPE) * rng.uniform(0.5, 2.0, SHAPE)
    zero = t.copy()
    zero[0, :3] = 0.0
    where = rng.random(SHAPE) < 0.7
    where.flat[0] = True
    return [
        Case("ordinary", (p, t)),
        Case("zero targets", (p, zero), kind="extreme"),
        Case("masked", (_nan_where(p, where), t), {}, {"where": where}, kind="masked"),
    ]


def _overlap_cases(options: Mapping[str, Any]) -> Callable[..., list[Case]]:
    def cases(rng: np.random.Generator) -> list[Case]:
        p = rng.dirichlet(np.ones(SEGMENTATION[-1]), SEGMENTATION[:-1])
        t = np.eye(SEGMENTATION[-1])[rng.integers(0, SEGMENTATION[-1], SEGMENTATION[:-1])]
        pixels = rng.random(SEGMENTATION[:-1] + (1,)) < 0.7
        pixels[0] = False                                 # an image with no pixel left
        w = rng.uniform(0.5, 2.0, SEGMENTATION[-1])       # per class
        per = {**options, "axis": (1, 2)}
        return [
            Case("per image and class", (p, t), per),
            Case("one coefficient", (p, t), dict(options)),
            Case("smooth 1, class weights", (p, t), {**per, "smooth": 1.0}, {"weights": w}),
            Case("weighted_mean", (p, t), {**per, "reduction": "weighted_mean"},
                 {"weights": w}),
            Case("masked pixels", (_nan_where(p, pixels), t), per, {"where": pixels},
                 kind="masked"),
        ]

    return cases


def _box_cases(rng: np.random.Generator) -> list[Case]:
    n = SHAPE[0]
    xy = rng.uniform(0.0, 4.0, (n, 2))
    b = np.concatenate([xy, xy + rng.uniform(2.5, 4.0, (n, 2))], -1)
    # every target corner at least 0.3 from the box's: no max/min tie within a difference step
    g = b + rng.choice([-1.0, 1.0], b.shape) * rng.uniform(0.3, 1.0, b.shape)
    keep = _row_mask(rng, n)
    # boxes equal to their targets (every max/min a tie) beside others: the loss of an equal
    # box is 1 - I / (I + eps), a cancellation whose float32 value is 0 against 1e-8
    ties = g.copy()
    ties[:3] = b[:3]
    return [
        Case("overlapping", (b, g)),
        Case("disjoint", (b, g + 10.0)),
        Case("weighted sum", (b, g), {"reduction": "sum"},
             {"weights": rng.uniform(0.5, 2.0, n)}),
        Case("some identical (ties)", (b, ties), kind="extreme"),
        Case("masked", (_nan_where(b, keep), g), {}, {"where": keep}, kind="masked"),
    ]


def _builtin() -> None:
    u = unilosses
    specs = [
        LossSpec("mse", u.mse, ref.mse_value, _regression(), ref.mse_grad),
        LossSpec("rmse", u.rmse, ref.rmse_value, _rmse_cases, ref.rmse_grad),
        LossSpec("mae", u.mae, ref.mae_value, _regression(), ref.mae_grad),
        LossSpec("huber", u.huber, ref.huber_value, _regression({"delta": 1.5}),
                 ref.huber_grad),
        LossSpec("smooth_l1", u.smooth_l1, ref.smooth_l1_value, _regression({"beta": 0.5}),
                 ref.smooth_l1_grad),
        LossSpec("log_cosh", u.log_cosh, ref.log_cosh_value, _regression(), ref.log_cosh_grad),
        LossSpec("binary_cross_entropy", u.binary_cross_entropy,
                 ref.binary_cross_entropy_value, _bce_cases, ref.binary_cross_entropy_grad),
        LossSpec("binary_cross_entropy_with_logits", u.binary_cross_entropy_with_logits,
                 ref.binary_cross_entropy_with_logits_value, _bce_logits_cases,
                 ref.binary_cross_entropy_with_logits_grad),
        LossSpec("categorical_cross_entropy", u.categorical_cross_entropy,
                 ref.categorical_cross_entropy_value, _categorical(False, False),
                 ref.categorical_cross_entropy_grad),
        LossSpec("categorical_cross_entropy_with_logits",
                 u.categorical_cross_entropy_with_logits,
                 ref.categorical_cross_entropy_with_logits_value, _categorical(True, False),
                 ref.categorical_cross_entropy_with_logits_grad),
        LossSpec("sparse_categorical_cross_entropy", u.sparse_categorical_cross_entropy,
                 ref.sparse_categorical_cross_entropy_value, _categorical(False, True),
                 ref.sparse_categorical_cross_entropy_grad),
        LossSpec("sparse_categorical_cross_entropy_with_logits",
                 u.sparse_categorical_cross_entropy_with_logits,
                 ref.sparse_categorical_cross_entropy_with_logits_value,
                 _categorical(True, True), ref.sparse_categorical_cross_entropy_with_logits_grad),
        LossSpec("binary_focal_loss", u.binary_focal_loss, ref.binary_focal_loss_value,
                 _focal(False), ref.binary_focal_loss_grad),
        LossSpec("binary_focal_loss_with_logits", u.binary_focal_loss_with_logits,
                 ref.binary_focal_loss_with_logits_value, _focal(True),
                 ref.binary_focal_loss_with_logits_grad),
        LossSpec("anchor_focal_loss", u.anchor_focal_loss, ref.anchor_focal_loss_value,
                 _anchor(False), ref.anchor_focal_loss_grad),
        LossSpec("anchor_focal_loss_with_logits", u.anchor_focal_loss_with_logits,
                 ref.anchor_focal_loss_with_logits_value, _anchor(True),
                 ref.anchor_focal_loss_with_logits_grad),
        LossSpec("categorical_focal_loss", u.categorical_focal_loss,
                 ref.categorical_focal_loss_value, _categorical_focal(False, False)),
        LossSpec("categorical_focal_loss_with_logits", u.categorical_focal_loss_with_logits,
                 ref.categorical_focal_loss_with_logits_value, _categorical_focal(True, False)),
        LossSpec("sparse_categorical_focal_loss", u.sparse_categorical_focal_loss,
                 ref.sparse_categorical_focal_loss_value, _categorical_focal(False, True)),
        LossSpec("sparse_categorical_focal_loss_with_logits",
                 u.sparse_categorical_focal_loss_with_logits,
                 ref.sparse_categorical_focal_loss_with_logits_value,
                 _categorical_focal(True, True)),
        LossSpec("poly1_cross_entropy_with_logits", u.poly1_cross_entropy_with_logits,
                 ref.poly1_cross_entropy_with_logits_value, _poly1_cases,
                 ref.poly1_cross_entropy_with_logits_grad),
        LossSpec("kl_divergence", u.kl_divergence, ref.kl_divergence_value, _kl_cases,
                 ref.kl_divergence_grad),
        LossSpec("poisson_nll", u.poisson_nll, ref.poisson_nll_value, _poisson_cases,
                 ref.poisson_nll_grad),
        LossSpec("gaussian_nll", u.gaussian_nll, ref.gaussian_nll_value, _gaussian_cases,
                 ref.gaussian_nll_grad),
        LossSpec("hinge", u.hinge, ref.hinge_value, _hinge_cases, ref.hinge_grad),
        LossSpec("squared_hinge", u.squared_hinge, ref.squared_hinge_value, _hinge_cases,
                 ref.squared_hinge_grad),
        LossSpec("categorical_hinge", u.categorical_hinge, ref.categorical_hinge_value,
                 _categorical_hinge_cases, ref.categorical_hinge_grad),
        LossSpec("cosine_similarity_loss", u.cosine_similarity_loss,
                 ref.cosine_similarity_loss_value, _cosine_cases,
                 ref.cosine_similarity_loss_grad),
        LossSpec("quantile_loss", u.quantile_loss, ref.quantile_loss_value, _quantile_cases,
                 ref.quantile_loss_grad),
        LossSpec("msle", u.msle, ref.msle_value, _msle_cases, ref.msle_grad),
        LossSpec("mape", u.mape, ref.mape_value, _mape_cases, ref.mape_grad),
        LossSpec("dice_loss", u.dice_loss, ref.dice_loss_value, _overlap_cases({})),
        LossSpec("tversky_loss", u.tversky_loss, ref.tversky_loss_value,
                 _overlap_cases({"alpha": 0.3, "beta": 0.7})),
        LossSpec("giou_loss", u.giou_loss, ref.giou_loss_value, _box_cases),
        LossSpec("diou_loss", u.diou_loss, ref.diou_loss_value, _box_cases),
        LossSpec("ciou_loss", u.ciou_loss, ref.ciou_loss_value, _box_cases,
                 held=ref.ciou_loss_held),
        LossSpec("in_top_k", u.in_top_k, ref.in_top_k_value, _top_k(False),
                 differentiable=False, exact=True),
        LossSpec("top_k_accuracy", u.top_k_accuracy, ref.top_k_accuracy_value, _top_k(True),
                 differentiable=False),
    ]
    for spec in specs:
        register(spec)


_builtin()

__all__ = ["Case", "KINDS", "LossSpec", "REGISTRY", "register", "select", "uncovered"]
