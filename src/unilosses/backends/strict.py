"""array-api-strict: the strict referee.  No extras of its own: the generic adapter is exactly
what any standard-only namespace gets, so passing here proves a loss uses only the standard."""

from __future__ import annotations

import array_api_strict

from ._base import Adapter


class StrictAdapter(Adapter):
    name = "array_api_strict"

    def __init__(self) -> None:
        super().__init__(array_api_strict)

    def to_numpy(self, x):  # type: ignore[no-untyped-def]
        import numpy as np

        # array-api-strict refuses __array__ on purpose; DLPack is the standard's way out
        return np.from_dlpack(x)


def load() -> Adapter:
    return StrictAdapter()
