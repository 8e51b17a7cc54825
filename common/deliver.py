"""Bringing a decided edit's ``commit`` or ``rollback`` to one participant group.

Both coordinators use it: the SDK for a client's edit (``client/editor.py``) and the tracker's
compactor (``tracker/compactor.py``). The decision is already durable at the tracker, so a
delivery never fails the operation: it is retried on ``out_of_order`` (an earlier commit of
the file has not reached the group yet) and on unavailability (an election, a node down) for
``patience`` seconds; a refusal, or the patience running out, is logged and left to the
group's resolver, which asks the tracker itself after ``edit_timeout``
(``docs/transactions.md``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mydfs.common.errors import Conflict, MydfsError, Unavailable


async def deliver(
    send: Callable[[], Awaitable[Any]],
    what: str,
    patience: float,
    log: logging.Logger,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Call ``send()`` until it answers, as above; True when the group took the decision.
    ``what`` names the step in the log lines (``"edit <txn> commit at group 2"``)."""
    until = clock() + patience
    delay = 0.05
    while True:
        try:
            async with asyncio.timeout(max(0.1, until - clock())):
                await send()
            return True
        except TimeoutError:
            log.warning("%s left to the group: no answer in time", what)
            return False
        except Conflict as exc:
            if exc.context.get("reason") != "out_of_order":
                log.warning("%s: %s", what, exc)
                return False
            last: MydfsError = exc
        except Unavailable as exc:
            last = exc
        except MydfsError as exc:
            log.warning("%s: %s", what, exc)
            return False
        if clock() + delay > until:
            log.warning("%s left to the group: %s", what, last)
            return False
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)


__all__ = ["deliver"]
