"""Path validation shared by the client and the tracker (``mydfs.common.paths``)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mydfs.common.errors import InvalidPath
from mydfs.common.paths import (
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    check_dir_path,
    check_file_path,
    from_url,
    join,
    parents,
    split,
    url_quote,
)


@pytest.mark.parametrize(
    "path",
    [
        "/a",
        "/a/b/c.bin",
        "/data/d0042/f000123.bin",
        "/with space/and%percent",
        "/unicode/café/日本語",
        "/dots/...",
        "/dots/.hidden",
        "/dots/a..b",
        "/" + "x" * MAX_COMPONENT_BYTES,
        "/" + "/".join(["y" * 200] * 20),
    ],
)
def test_valid_paths_are_returned_unchanged(path: str) -> None:
    assert check_file_path(path) is path
    assert check_dir_path(path) is path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "empty"),
        ("a/b", "not absolute"),
        ("./a", "not absolute"),
        ("/a/../b", "'..'"),
        ("/..", "'..'"),
        ("/a/./b", "'.'"),
        ("/a/.", "'.'"),
        ("/a//b", "empty component"),
        ("//a", "empty component"),
        ("/a/", "trailing"),
        ("/a\x00b", "NUL"),
        ("/a\nb", "U+000A"),
        ("/a\x7fb", "U+007F"),
        ("/a\x85b", "U+0085"),
        ("/a\ud800b", "Unicode"),
        ("/" + "x" * (MAX_COMPONENT_BYTES + 1), "longer than 255"),
        ("/" + "é" * 128, "longer than 255"),  # 256 UTF-8 bytes
        ("/" + "/".join(["y" * 250] * 17), "longer than 4096"),
        ("/cafe\u0301", "NFC"),  # e + combining acute: looks like the precomposed café
        ("/a/\u212b", "NFC"),  # ANGSTROM SIGN, whose NFC is U+00C5
    ],
)
def test_bad_paths_are_rejected_with_the_path_in_context(path: str, why: str) -> None:
    with pytest.raises(InvalidPath) as info:
        check_file_path(path)
    assert why in info.value.message
    assert info.value.context["path"] == path
    assert info.value.status == 400


def test_root_is_a_directory_only() -> None:
    assert check_dir_path("/") == "/"
    with pytest.raises(InvalidPath, match="root is a directory"):
        check_file_path("/")


def test_split_join_parents() -> None:
    assert split("/a/b/c") == ("/a/b", "c")
    assert split("/c") == ("/", "c")
    assert join("/", "c") == "/c"
    assert join("/a/b", "c") == "/a/b/c"
    assert parents("/a/b/c") == ["/a", "/a/b"]
    assert parents("/c") == []
    assert MAX_PATH_BYTES == 4096


def test_url_quote_and_back() -> None:
    path = "/a b/c%d/é?x#y/z+1"
    quoted = url_quote(path)
    assert quoted == "/a%20b/c%25d/%C3%A9%3Fx%23y/z%2B1"
    assert from_url(quoted[1:]) == path


def test_from_url_rejects_what_decoding_reveals() -> None:
    with pytest.raises(InvalidPath, match=r"'\.\.'"):
        from_url("a/%2E%2E/b")
    with pytest.raises(InvalidPath, match="NUL"):
        from_url("a%00b")
    with pytest.raises(InvalidPath, match="not UTF-8"):
        from_url("%FF%FE")
    for disguised in ("a%2Fb", "a%2fb", "%2F..%2Fetc"):
        with pytest.raises(InvalidPath, match="encoded '/'"):
            from_url(disguised)
    with pytest.raises(InvalidPath, match="NFC"):
        from_url("cafe%CC%81")
    assert from_url("caf%C3%A9") == "/caf\u00e9"
    assert from_url("", directory=True) == "/"
    assert from_url("a/b", directory=True) == "/a/b"


_component = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/"),
    min_size=1,
    max_size=20,
).filter(lambda c: c not in (".", "..") and unicodedata.is_normalized("NFC", c))


@given(st.lists(_component, min_size=1, max_size=6))
def test_any_well_formed_path_round_trips_through_urls(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert check_file_path(path) == path
    assert from_url(url_quote(path)[1:]) == path
    parent, name = split(path)
    assert join(parent, name) == path
    assert len(parents(path)) == len(parts) - 1
