"""A storage node: the slice store (volume), the group state machine and the node's server."""
