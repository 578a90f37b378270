"""Reconciling two SQL tables of millions of rows: checksums of segments compared inside each database, rows
read only where segments differ (``drill``), values rendered alike in every engine (``columns``, ``dialects``).

``trackcheck diff`` runs it on two tables; the result is a ``Reconciliation``.
"""

from trackcheck.recon import drill
from trackcheck.recon.drill import ReconSpec, Table, reconcile
from trackcheck.recon.result import Reconciliation

__all__ = ["ReconSpec", "Reconciliation", "Table", "drill", "reconcile"]
