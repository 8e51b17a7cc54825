"""raft_ext: a thin, reusable layer on pysyncobj 0.3.17 for a 3-node storage group.

It replicates small JSON commands to a pure, deterministic :class:`StateMachine` and knows
nothing about slices. See ``docs/raft_ext.md`` and ``shared/notes/pysyncobj.md``.

Modules (one responsibility each):

* :mod:`.machine`  - the ``StateMachine`` protocol and the command codec / size guard;
* :mod:`.settings` - ``RaftSettings``: vetted pysyncobj settings and their validation;
* :mod:`.journal`  - ``FsyncFileJournal``: the durable (pwrite + fdatasync) journal;
* :mod:`.journal_meta` - the journal's term/vote/commit-index file, rewritten in place;
* :mod:`.diskguard` - a full disk: refuse what cannot be logged, hand leadership over;
* :mod:`.snapshot` - the pickle-free, fsynced snapshot file (custom serializer);
* :mod:`.bridge`   - pysyncobj outcome codes -> mydfs errors;
* :mod:`.pysyncobj_patch` - ``SafeSyncObj``: pysyncobj 0.3.17 with Raft-correct
  append-entries handling (a follower never drops entries it holds unless they conflict);
* :mod:`.host`     - the SyncObj subclass (tick thread: apply, keepalive, status);
* :mod:`.node`     - ``RaftNode``: the asyncio API used by the storage server.
"""

from .bridge import error_for_fail_reason
from .machine import HARD_MAX_COMMAND_BYTES, StateMachine, decode_command, encode_command
from .node import RaftNode
from .settings import RaftSettings
from .snapshot import decode_snapshot, encode_snapshot, read_snapshot_file

__all__ = [
    "HARD_MAX_COMMAND_BYTES",
    "RaftNode",
    "RaftSettings",
    "StateMachine",
    "decode_command",
    "decode_snapshot",
    "encode_command",
    "encode_snapshot",
    "error_for_fail_reason",
    "read_snapshot_file",
]
