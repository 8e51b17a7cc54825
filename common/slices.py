"""Protocol constants of a slice, shared by every role.

A file is cut into slices of exactly :data:`PAYLOAD_CAPACITY` bytes (the last one shorter);
the client cuts, the tracker checks sizes against slice counts, and a storage node stores one
slice per slot. The on-disk format (``storage/format.py``) derives the same number from its
slot layout and asserts that the two agree.
"""

from __future__ import annotations

#: Bytes of payload one slice carries: a 4 MiB slot less its 4 KiB of headers.
PAYLOAD_CAPACITY = 4 * 1024 * 1024 - 4096  # 4_190_208 bytes

#: At most this many slot numbers in a heartbeat's ``unrepairable`` list (a node sends no more,
#: the tracker accepts no more).
MAX_UNREPAIRABLE = 100
