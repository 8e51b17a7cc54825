"""Where a slice lives: a ``(group, slot)`` pair, shared by every role."""

from __future__ import annotations

from typing import NamedTuple

from mydfs.common.errors import InvalidArgument
from mydfs.common.params import is_uint_text

#: Largest group id and slot number a location may carry (both fit the slot header fields).
MAX_GROUP = 0xFFFF_FFFE
MAX_SLOT = 0xFFFF_FFFF_FFFF_FFFE


class Location(NamedTuple):
    """A slice's address: the storage group and the slot inside that group's volumes."""

    group: int
    slot: int

    def __str__(self) -> str:
        return f"{self.group}:{self.slot}"

    @classmethod
    def parse(cls, text: str) -> Location:
        """Parse ``"GROUP:SLOT"``; raises :class:`InvalidArgument` on anything else."""
        group, sep, slot = text.partition(":")
        if not sep or not is_uint_text(group) or not is_uint_text(slot):
            raise InvalidArgument(f"bad location {text[:60]!r}, expected GROUP:SLOT")
        return cls.checked(int(group), int(slot))

    @classmethod
    def checked(cls, group: int, slot: int) -> Location:
        if not 0 <= group <= MAX_GROUP:
            raise InvalidArgument(f"group id {group} out of range 0..{MAX_GROUP}")
        if not 0 <= slot <= MAX_SLOT:
            raise InvalidArgument(f"slot {slot} out of range 0..{MAX_SLOT}")
        return cls(group, slot)
