"""``prepare``'s short path: the same call as the full path, or no answer at all.

On tiny inputs the full path's checks cost more than the kernel, so ``prepare`` first tries a
short path for arrays with nothing to convert, cast or refuse.  It must return exactly what
the full path would, and decline (return None) whenever the full path would cast, convert or
raise, so that every error message and cast stays the full path's.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from unilosses._core import call as call_module  # noqa: E402
from unilosses._core.call import _prepare_plain, prepare  # noqa: E402

PT = ("predictions", "targets")
LABELS = dict(class_axis=1, labels=("labels",), same_shape=())


def _full(monkeypatch, names, arrays, **kw):  # type: ignore[no-untyped-def]
    with monkeypatch.context() as mp:
        mp.setattr(call_module, "_prepare_plain", lambda *a, **k: None)
        return prepare(names, arrays, **kw)


def _args(kw):  # type: ignore[no-untyped-def]
    return (kw.get("reduction", "mean"), kw.get("class_axis"), kw.get("labels", ()),
            kw.get("same_shape"), kw.get("weights"), kw.get("where"))


_W = torch.tensor([0.5, 1.5, 0.0])  # (1.5 where _M masks it)
_M = torch.tensor([True, False, True])


TAKEN = [
    ("float32 pair", PT, lambda: (torch.randn(3, 4), torch.randn(3, 4)), {}),
    ("float64 sum", PT, lambda: (torch.randn(5, dtype=torch.float64),
                                 torch.randn(5, dtype=torch.float64)), {"reduction": "sum"}),
    ("0-d", PT, lambda: (torch.tensor(1.0), torch.tensor(2.0)), {"reduction": "none"}),
    ("int64 labels", ("logits", "labels"),
     lambda: (torch.randn(4, 3, 2), torch.zeros(4, 2, dtype=torch.int64)), LABELS),
    ("int32 labels", ("logits", "labels"),
     lambda: (torch.randn(4, 3), torch.zeros(4, dtype=torch.int32)), LABELS),
    # weights and masks of the elementwise loss's own shape and dtype
    ("weights", PT, lambda: (torch.randn(3), torch.randn(3)), {"weights": _W}),
    ("where", PT, lambda: (torch.randn(3), torch.randn(3)), {"where": _M, "reduction": "sum"}),
    ("weights and where", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"weights": _W, "where": _M, "reduction": "weighted_mean"}),
    ("row weights", ("logits", "labels"),
     lambda: (torch.randn(3, 4), torch.zeros(3, dtype=torch.int64)),
     {**LABELS, "weights": _W, "where": _M}),
]


@pytest.mark.parametrize("names,make,kw", [t[1:] for t in TAKEN], ids=[t[0] for t in TAKEN])
def test_the_short_path_gives_the_full_paths_call(monkeypatch, names, make, kw):  # type: ignore[no-untyped-def]
    arrays = make()
    prepare(names, arrays, **kw)  # the full path has seen the type once (adapter cached)
    short = _prepare_plain(names, arrays, *_args(kw))
    assert short is not None, "the short path declined a plain call"
    full = _full(monkeypatch, names, arrays, **kw)
    (c1, out1), (c2, out2) = short, full
    assert c1.ad is c2.ad and c1.dtype == c2.dtype and c1.reduction == c2.reduction
    assert c1.loss_shape == c2.loss_shape and type(c1.loss_shape) is tuple
    for a, b in ((c1.mask, c2.mask), (c1.weights, c2.weights)):
        assert (a is None) == (b is None)
        if a is not None:  # (masked weights zeroed on both paths)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if "where" in kw:
        assert c1.mask is kw["where"]
        if "weights" not in kw:
            assert c1.weights is None
    elif "weights" in kw:
        assert c1.weights is kw["weights"] and c1.mask is None
    else:
        assert c1.mask is None and c1.weights is None
    assert len(out1) == len(out2)
    for a, b in zip(out1, out2):
        assert a is b  # nothing cast or copied on either path


DECLINED = [
    ("float16 predictions", PT, lambda: (torch.randn(3).half(), torch.randn(3).half()), {}),
    ("bfloat16 predictions", PT, lambda: (torch.randn(3).bfloat16(), torch.randn(3)), {}),
    ("integer predictions", PT, lambda: (torch.ones(3, dtype=torch.int64), torch.randn(3)), {}),
    ("float64 targets for float32", PT,
     lambda: (torch.randn(3), torch.randn(3, dtype=torch.float64)), {}),
    ("integer targets", PT, lambda: (torch.randn(3), torch.ones(3, dtype=torch.int64)), {}),
    ("shape mismatch", PT, lambda: (torch.randn(3, 1), torch.randn(3)), {}),
    ("a Python list", PT, lambda: (torch.randn(2), [1.0, 2.0]), {}),
    ("a meta tensor", PT, lambda: (torch.randn(2), torch.empty(2, device="meta")), {}),
    ("bool labels", ("logits", "labels"),
     lambda: (torch.randn(4, 3), torch.zeros(4, dtype=torch.bool)), LABELS),
    ("int8 labels", ("logits", "labels"),
     lambda: (torch.randn(4, 3), torch.zeros(4, dtype=torch.int8)), LABELS),
    ("labels of the wrong shape", ("logits", "labels"),
     lambda: (torch.randn(4, 3), torch.zeros(3, dtype=torch.int64)), LABELS),
    # weights and masks the full path casts, broadcasts, converts or refuses
    ("float64 weights", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"weights": _W.double()}),
    ("integer weights", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"weights": torch.ones(3, dtype=torch.int64)}),
    ("broadcast weights", PT, lambda: (torch.randn(2, 3), torch.randn(2, 3)),
     {"weights": _W}),
    ("a Python number as weights", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"weights": 2.0}),
    ("NumPy weights", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"weights": _W.numpy()}),
    ("weights of the predictions' shape for a per-row loss", ("logits", "labels"),
     lambda: (torch.randn(3, 4), torch.zeros(3, dtype=torch.int64)),
     {**LABELS, "weights": torch.ones(3, 4)}),
    ("an integer mask", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"where": _M.long()}),
    ("a broadcast mask", PT, lambda: (torch.randn(2, 3), torch.randn(2, 3)), {"where": _M}),
    ("a mask on another device", PT, lambda: (torch.randn(3), torch.randn(3)),
     {"where": torch.empty(3, dtype=torch.bool, device="meta")}),
]


@pytest.mark.parametrize("names,make,kw", [t[1:] for t in DECLINED], ids=[t[0] for t in DECLINED])
def test_the_short_path_declines_what_the_full_path_casts_or_refuses(names, make, kw):  # type: ignore[no-untyped-def]
    arrays = make()
    prepare(PT, (torch.randn(2), torch.randn(2)))  # the tensor type is known
    assert _prepare_plain(names, arrays, *_args(kw)) is None


def test_errors_on_plain_looking_calls_are_the_full_paths(monkeypatch):  # type: ignore[no-untyped-def]
    p = torch.randn(3, 1)
    with pytest.raises(ValueError, match=r"`predictions` has shape \(3, 1\) but `targets`"):
        prepare(PT, (p, torch.randn(3)))
    with pytest.raises(ValueError, match="reduction='avg' is not supported"):
        prepare(PT, (p, torch.randn(3, 1)), reduction="avg")
    with pytest.raises(ValueError, match="on device cpu but `targets` is on device meta"):
        prepare(PT, (torch.randn(2), torch.empty(2, device="meta")))
