"""``python -m unilosses parity``: the same as the ``unilosses`` command."""

import sys

from .cli import main

sys.exit(main())
