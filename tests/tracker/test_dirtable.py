"""A directory's packed children (:class:`~mydfs.tracker.dirtable.DirTable`) against a plain
dict: the same answers after any sequence of sets, replacements, deletes, copies and
compactions, in name order."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mydfs.common.errors import InvalidArgument
from mydfs.tracker.dirtable import DirTable

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6
).filter(lambda n: len(n.encode()) <= 255)
values = st.none() | st.binary(min_size=1, max_size=300)


class DirTableVsDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = DirTable()
        self.model: dict[str, bytes | None] = {}

    @rule(name=names, value=values)
    def set(self, name: str, value: bytes | None) -> None:
        self.table[name] = value
        self.model[name] = value

    @rule(name=names)
    def delete(self, name: str) -> None:
        if name in self.model:
            del self.table[name]
            del self.model[name]
        else:
            with pytest.raises(KeyError):
                del self.table[name]

    @rule(name=names)
    def lookup(self, name: str) -> None:
        assert (name in self.table) == (name in self.model)
        assert self.table.get(name) == self.model.get(name)
        assert self.table.get(name, b"?") == self.model.get(name, b"?")
        if name not in self.model:
            with pytest.raises(KeyError):
                self.table[name]
        after = [(n, v) for n, v in sorted(self.model.items()) if n > name]
        assert list(self.table.items(after=name)) == after

    @rule(name=names)
    def copy_is_independent(self, name: str) -> None:
        twin = self.table.copy()
        assert list(twin.items()) == list(self.table.items())
        twin[name] = b"only in the copy"
        del twin[name]
        twin[name + "~"] = None
        assert self.table.get(name + "~", b"?") == self.model.get(name + "~", b"?")

    @rule()
    def compact(self) -> None:
        self.table.compact()

    @invariant()
    def same_as_the_dict(self) -> None:
        assert list(self.table.items()) == sorted(self.model.items())
        assert list(self.table) == sorted(self.model)
        assert len(self.table) == len(self.model)
        assert bool(self.table) == bool(self.model)


TestDirTable = DirTableVsDict.TestCase
TestDirTable.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_garbage_is_compacted_away() -> None:
    table = DirTable()
    for i in range(2000):
        table[f"f{i:05d}"] = b"e" * 60
    live = table.nbytes
    for _ in range(10):  # replaced with values of another size: appended, the old ones garbage
        for i in range(2000):
            table[f"f{i:05d}"] = b"e" * (61 + _ % 2)
    assert table.nbytes <= 3 * live  # never more than half garbage (plus the minimum)
    assert len(table) == 2000 and table["f00007"] == b"e" * 62


@pytest.mark.parametrize(("name", "value"), [("", b"x"), ("n" * 256, b"x"), ("ok", b"")])
def test_bad_names_and_empty_entries_are_refused(name: str, value: bytes) -> None:
    table = DirTable()
    with pytest.raises(InvalidArgument):
        table[name] = value
    assert len(table) == 0
