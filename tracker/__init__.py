"""The tracker: storage-group registry, placement and the durable file table."""
