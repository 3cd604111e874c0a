"""array-api-strict: the strict referee.  No extras of its own: the generic adapter is exactly
what any standard-only namespace gets, so passing here proves a loss uses only the standard."""

from __future__ import annotations

import array_api_strict

from ._base import Adapter


def _dlpack_takes_bool() -> bool:
    """Whether NumPy's DLPack exchange carries booleans (NumPy >= 1.25; 1.24 raises
    BufferError "DLPack only supports signed/unsigned integers, float and complex dtypes")."""
    import numpy as np

    try:
        np.from_dlpack(np.zeros(1, dtype=bool))
    except BufferError:
        return False
    return True


class StrictAdapter(Adapter):
    name = "array_api_strict"

    def __init__(self) -> None:
        super().__init__(array_api_strict)
        self._bool_dlpack = _dlpack_takes_bool()

    def to_numpy(self, x):  # type: ignore[no-untyped-def]
        import numpy as np

        # array-api-strict refuses __array__ on purpose; DLPack is the standard's way out
        if not self._bool_dlpack and x.dtype == array_api_strict.bool:
            return np.from_dlpack(array_api_strict.astype(x, array_api_strict.uint8)) != 0
        return np.from_dlpack(x)


def load() -> Adapter:
    return StrictAdapter()
