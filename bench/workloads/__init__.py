"""The workloads of ``mydfs bench``; importing this package registers them all.

To add one: write a module here with a :class:`~mydfs.bench.suite.Workload` subclass (a name, a
description and ``async run(ctx) -> list[Figure]``), call
:func:`~mydfs.bench.suite.register` on an instance, and import the module below.
"""

from __future__ import annotations

from mydfs.bench.suite import WORKLOADS
from mydfs.bench.workloads import churn, edits, failover, large, meta, small

__all__ = ["WORKLOADS", "churn", "edits", "failover", "large", "meta", "small"]
