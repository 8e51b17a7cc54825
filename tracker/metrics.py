"""Prometheus metrics of the tracker (one registry per process, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mydfs.common.metrics import LATENCY_BUCKETS, http_metrics

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class TrackerMetrics:
    """Counters and histograms updated where the work happens; gauges refreshed per scrape."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests, self.latency = http_metrics("tracker", r)
        self.groups = Gauge("mydfs_tracker_groups", "storage groups known", registry=r)
        self.groups_writable = Gauge(
            "mydfs_tracker_groups_writable", "storage groups that accept writes", registry=r
        )
        self.nodes = Gauge(
            "mydfs_tracker_nodes", "storage nodes by liveness", ["state"], registry=r
        )
        self.files = Gauge("mydfs_tracker_files", "files in the namespace", registry=r)
        self.file_bytes = Gauge(
            "mydfs_tracker_file_bytes", "sum of the sizes of all files", registry=r
        )
        self.directories = Gauge(
            "mydfs_tracker_directories", "directories (implicit) including the root", registry=r
        )
        self.trash = Gauge("mydfs_tracker_trash_records", "files waiting for the GC", registry=r)
        self.intents = Gauge("mydfs_tracker_intents", "uploads in progress", registry=r)
        self.reclaimed = Counter(
            "mydfs_tracker_reclaimed_slices", "slices the reclaimer freed", registry=r
        )
        self.decisions = Gauge(
            "mydfs_tracker_edit_decisions",
            "decisions of in-place edits remembered (edit_decision_retention)",
            registry=r,
        )
        self.heartbeats = Counter("mydfs_tracker_heartbeats", "heartbeats accepted", registry=r)
        self.placements = Counter(
            "mydfs_tracker_placed_slices", "slices placed, by group", ["group"], registry=r
        )
        self.edits = Counter("mydfs_tracker_edits", "namespace edits by type", ["op"], registry=r)
        self.log_seq = Gauge("mydfs_tracker_editlog_seq", "last edit seq appended", registry=r)
        self.log_durable = Gauge(
            "mydfs_tracker_editlog_durable_seq", "last edit seq on stable storage", registry=r
        )
        self.log_syncs = Gauge(
            "mydfs_tracker_editlog_syncs", "fdatasync calls of the edit log", registry=r
        )
        self.log_batch = Histogram(
            "mydfs_tracker_editlog_batch_records",
            "records per group-committed sync",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "mydfs_tracker_edit_commit_seconds",
            "time from append to durable, per edit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.checkpoint_seq = Gauge(
            "mydfs_tracker_checkpoint_seq", "edit seq covered by the newest checkpoint", registry=r
        )
        self.checkpoint_seconds = Gauge(
            "mydfs_tracker_checkpoint_seconds", "duration of the last checkpoint", registry=r
        )
        self.checkpoint_bytes = Gauge(
            "mydfs_tracker_checkpoint_bytes", "size of the last checkpoint", registry=r
        )
