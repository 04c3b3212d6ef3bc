"""The append path encodes an entry once: the fast canonical encoder equals RFC 8785
wherever it answers, and the line spliced around the hash is canonical(entry)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core import audit
from tandem.core.canonical import MAX_SAFE_INT, canonical, loads_strict
from tandem.errors import InputError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.text(max_size=12)
    | st.sampled_from(["", "a\"b", "back\\slash", "ctl\x01\x1f", "é", "😀", ',"index":1', "\u2028"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_fast_canonical_is_rfc8785(value: Any) -> None:
    assert audit.fast_canonical(value) == canonical(value)


@pytest.mark.parametrize(
    "value",
    [1.5, {"a": float("nan")}, {"a": MAX_SAFE_INT + 1}, [-(MAX_SAFE_INT + 1)], {1: "x"}, {"a": (1, 2)}],
)
def test_fast_canonical_decides_as_rfc8785_on_what_is_not_plain_json(value: Any) -> None:
    try:
        expected: Any = canonical(value)
    except InputError as exc:
        with pytest.raises(type(exc)):
            audit.fast_canonical(value)
    else:
        assert audit.fast_canonical(value) == expected


@settings(max_examples=300, deadline=None)
@given(
    data=st.dictionaries(st.text(max_size=8), values, max_size=5),
    envelope=st.none() | st.dictionaries(st.text(max_size=8), values, max_size=3),
    kind=st.text(min_size=1, max_size=10),
    actor=st.none() | st.text(min_size=1, max_size=10),
)
def test_the_spliced_line_is_canonical_entry(
    data: dict[str, Any], envelope: dict[str, Any] | None, kind: str, actor: str | None
) -> None:
    try:
        entry, line = audit.make_entry_line(
            index=3,
            time=1,
            deployment="dep_x",
            kind=kind,
            actor=actor,
            outcome="ok",
            code=None,
            envelope=envelope,
            data=data,
            prev="ab" * 32,
        )
    except InputError:
        return  # refused (nesting, size): refused the same way as before
    assert line == canonical(entry)
    assert loads_strict(line) == entry
    # The entry is what the parser reads back from the line, member order included.
    assert list(entry) == list(loads_strict(line))
    body = {k: v for k, v in entry.items() if k != "hash"}
    assert entry["hash"] == audit.entry_hash(body)


@pytest.mark.parametrize(
    "data",
    [{"x": 1.5}, {"x": MAX_SAFE_INT + 1}, {"x": "\ud800"}, {1: "int key"}],
    ids=["float", "huge int", "lone surrogate", "int key"],
)
def test_entries_the_verifier_would_refuse_are_still_refused(data: Any) -> None:
    with pytest.raises(InputError):
        audit.make_entry(
            index=0,
            time=1,
            deployment="dep_x",
            kind="k",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data=data,
            prev=audit.GENESIS_PREV,
        )


def test_entries_nested_too_deep_are_still_refused() -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"d": deep}
    with pytest.raises(InputError):
        audit.make_entry(
            index=0,
            time=1,
            deployment="dep_x",
            kind="k",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data={"deep": deep},
            prev=audit.GENESIS_PREV,
        )
