"""Definitions every mydfs role shares: errors, checksums, locations, config loading.

Nothing in here imports from ``mydfs.tracker``, ``mydfs.storage``, ``mydfs.client`` or
``mydfs.raft_ext``, so every role can import it without cycles.
"""

__version__ = "0.1.0"
