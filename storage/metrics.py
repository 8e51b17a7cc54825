"""Prometheus metrics of a storage node (one registry per node, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from mydfs.common.metrics import http_metrics


class StorageMetrics:
    """Counters and histograms updated where the work happens; gauges refreshed per scrape."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests, self.latency = http_metrics("storage", r)
        self.bytes_in = Counter(
            "mydfs_storage_received_bytes", "payload bytes received", registry=r
        )
        self.bytes_out = Counter("mydfs_storage_sent_bytes", "payload bytes sent", registry=r)
        self.uploads = Counter(
            "mydfs_storage_uploads", "slice uploads by outcome", ["outcome"], registry=r
        )
        self.replication = Counter(
            "mydfs_storage_replication",
            "replica pushes and fetches by outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.settled = Counter(
            "mydfs_storage_settled", "pending slots settled by a leader", ["outcome"], registry=r
        )
        self.edits = Counter(
            "mydfs_storage_edits",
            "edit transactions this node, as leader, prepared, committed or rolled back",
            ["outcome"],
            registry=r,
        )
        self.edits_in_doubt = Gauge(
            "mydfs_storage_edits_in_doubt",
            "prepared edits past edit_timeout whose outcome the tracker no longer knows",
            registry=r,
        )
        self.raft_role = Gauge(
            "mydfs_storage_raft_role", "1 for this node's current role", ["role"], registry=r
        )
        self.raft_term = Gauge("mydfs_storage_raft_term", "Raft term", registry=r)
        self.raft_commit = Gauge("mydfs_storage_raft_commit_index", "Raft commit index", registry=r)
        self.raft_applied = Gauge(
            "mydfs_storage_raft_last_applied", "Raft last applied", registry=r
        )
        self.registration_entries = Gauge(
            "mydfs_storage_registration_entries", "slices in the registration table", registry=r
        )
        self.registration_bytes = Gauge(
            "mydfs_storage_registration_bytes", "bytes in the registration table", registry=r
        )
        self.slots = Gauge("mydfs_storage_slots", "slots by state", ["view", "state"], registry=r)
        self.bytes_live = Gauge(
            "mydfs_storage_live_bytes", "payload bytes of live slices", registry=r
        )
        self.bytes_inline = Gauge(
            "mydfs_storage_inline_bytes",
            "payload bytes of inline uploads the group table carries until 2 volumes hold them",
            registry=r,
        )
        self.corrupt = Counter(
            "mydfs_storage_corrupt_reads", "reads that found a corrupt local copy", registry=r
        )
        self.missing = Gauge(
            "mydfs_storage_missing_slices", "live slices this node still has to fetch", registry=r
        )
        self.memory_budget = Gauge(
            "mydfs_storage_memory_budget_bytes",
            "payload bytes this node may hold in flight (memory_budget_mb)",
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "mydfs_storage_inflight_bytes",
            "payload bytes held in flight now (uploads, pushes, registration, fetches, reads)",
            registry=r,
        )
        self.inflight_peak = Gauge(
            "mydfs_storage_inflight_peak_bytes", "the most payload bytes held in flight", registry=r
        )
        self.peer_inflight_bytes = Gauge(
            "mydfs_storage_peer_inflight_bytes",
            "payload bytes of unfinished pushes to a follower",
            ["peer"],
            registry=r,
        )
        self.pushes_dropped = Counter(
            "mydfs_storage_pushes_dropped",
            "pushes not made or cancelled because the follower was lagging",
            ["peer"],
            registry=r,
        )
        # The background scrub (storage/scrub.py, docs/space.md "Scrub").
        self.scrub_slots = Counter(
            "mydfs_storage_scrub_slots", "live slots the scrub read back and checked", registry=r
        )
        self.scrub_bytes = Counter(
            "mydfs_storage_scrub_bytes", "bytes the scrub read back and checked", registry=r
        )
        self.scrub_corrupt = Counter(
            "mydfs_storage_scrub_corrupt",
            "bad local copies the scrub found (dropped for repair)",
            registry=r,
        )
        self.scrub_repairs = Counter(
            "mydfs_storage_scrub_repairs",
            "bad copies the scrub found that were fetched again intact from another holder",
            registry=r,
        )
        self.scrub_last_pass = Gauge(
            "mydfs_storage_scrub_last_pass_end_seconds",
            "unix time the last full scrub pass ended (0: none yet)",
            registry=r,
        )
        self.scrub_pass_duration = Gauge(
            "mydfs_storage_scrub_pass_duration_seconds",
            "how long the last full scrub pass took",
            registry=r,
        )
        self.scrub_unrepairable = Gauge(
            "mydfs_storage_scrub_unrepairable_slots",
            "live slots whose copy here is bad and no other node is listed as holding",
            registry=r,
        )
        self.hot_hits = Counter(
            "mydfs_storage_hot_cache_hits", "slice reads served from the hot cache", registry=r
        )
        self.hot_misses = Counter(
            "mydfs_storage_hot_cache_misses", "slice reads the hot cache did not hold", registry=r
        )
        self.hot_evictions = Counter(
            "mydfs_storage_hot_cache_evictions", "slices evicted to make room", registry=r
        )
        self.hot_bytes = Gauge(
            "mydfs_storage_hot_cache_bytes", "payload bytes held in the hot cache", registry=r
        )
