"""The parity report: every loss on every installed backend against float64 references.

``unilosses parity`` (see :mod:`unilosses.cli`) is the command; :func:`run` is the same as a
function.  The losses it checks live in a registry (:mod:`unilosses.parity.cases`): register a
:class:`LossSpec` to have your own loss checked beside the built-in ones, and a
:class:`~unilosses.parity.peers.Peer` to compare it with a framework's own loss.

Importing this package imports no framework; frameworks are imported when a run selects them.
"""

from . import references
from .cases import KINDS, REGISTRY, Case, LossSpec, register, select, uncovered
from .peers import PEERS, Peer, register_peer
from .results import Report
from .run import Options, run
from .tolerance import DTYPES, tolerance

__all__ = ["DTYPES", "KINDS", "PEERS", "REGISTRY", "Case", "LossSpec", "Options", "Peer",
           "Report", "references", "register", "register_peer", "run", "select", "tolerance",
           "uncovered"]
