"""Data audit: corrupt files, duplicates, leakage, shortcuts and confounding, before training.

``run_audit(DATA)`` makes one streaming pass over the images and returns an
:class:`AuditResult` (``audit.json`` / ``audit.html``); ``quick_audit`` is the fast
subset ``medlens train`` runs first, stopping on ``result.blocking``.
"""

from __future__ import annotations

from medlens.audit.exclude import read_exclude_list, write_exclude_list
from medlens.audit.result import AuditResult
from medlens.audit.run import quick_audit, run_audit

__all__ = ["AuditResult", "quick_audit", "read_exclude_list", "run_audit", "write_exclude_list"]
