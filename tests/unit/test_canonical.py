"""Strict JSON parsing and RFC 8785 canonical bytes: round-trips and every refusal,
each with its stable code (THREATS 17; ARCHITECTURE "Formats")."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.canonical import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_SAFE_INT,
    canonical,
    check_fields,
    digest,
    domain_bytes,
    loads_strict,
    parse_amount,
)
from tandem.errors import Error, InputError

# --- hypothesis round-trip ----------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_scalars = st.none() | st.booleans() | st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT) | _text
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_round_trip(value: Any) -> None:
    data = canonical(value)
    assert loads_strict(data) == value
    # Canonical bytes are a fixed point: parse and re-serialise changes nothing.
    assert canonical(loads_strict(data)) == data
    assert data.decode("utf-8")  # always valid UTF-8


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, _scalars, min_size=2, max_size=6))
def test_canonical_is_independent_of_insertion_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical(reordered) == canonical(value)


_ascii_keys = st.text(st.characters(max_codepoint=0x7F), max_size=12)
_all_text = st.text(max_size=20)  # any code point, lone surrogates included
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT) | _all_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_ascii_keys, children, max_size=5),
    max_leaves=40,
)


def _reference(value: Any) -> bytes | str:
    try:
        return bytes(rfc8785.dumps(value))
    except Exception:
        return "refused"


def _ours(value: Any) -> bytes | str:
    try:
        return canonical(value)
    except InputError:
        return "refused"


@settings(max_examples=1500, deadline=None)
@given(plain_values | json_values)
def test_fast_encoder_writes_exactly_what_rfc8785_writes(value: Any) -> None:
    """The C-encoder path must be byte-for-byte the reference encoder, control
    characters, non-ASCII text, U+2028, lone surrogates and all."""
    assert _ours(value) == _reference(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\x7f": "\x00\x01\x1f\x7f\u2028\u2029", "b": ["\b\t\n\f\r", '"\\'], "a": -0},
        {"\ue000": 1, "\U0001f600": 2},  # non-ASCII keys: UTF-16 order, through rfc8785
        [MAX_SAFE_INT, -MAX_SAFE_INT, True, False, None, ""],
        {"n": MAX_SAFE_INT + 1},  # outside I-JSON: refused by both
    ],
)
def test_fast_encoder_edges(value: Any) -> None:
    assert _ours(value) == _reference(value)


def test_rfc8785_key_order_is_by_utf16_code_units() -> None:
    # RFC 8785 section 3.2.3's sorting example: U+1F600 (a surrogate pair D83D DE00 in
    # UTF-16) sorts before U+FB33, although its code point is larger.
    doc = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical(doc).decode("utf-8")))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_rfc8785_number_and_string_forms() -> None:
    assert canonical({"b": [1, -0, 9007199254740991], "a": '\u00e9\n"\\/'}) == (
        '{"a":"\u00e9\\n\\"\\\\/","b":[1,0,9007199254740991]}'.encode()
    )
    assert canonical("\x00\x1f") == b'"\\u0000\\u001f"'


# --- refusals -------------------------------------------------------------------------


def _code(data: bytes | str) -> str:
    with pytest.raises(Error) as err:
        loads_strict(data)
    return err.value.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"a":1,"a":2}', "duplicate_key"),
        (b'{"a":{"b":1,"b":1}}', "duplicate_key"),
        (b'[{"x":1,"y":2,"x":1}]', "duplicate_key"),
        (b'{"amount":1.5}', "float_not_allowed"),
        (b'{"amount":1.0}', "float_not_allowed"),
        (b'{"amount":1e5}', "float_not_allowed"),
        (b'{"amount":-0.0}', "float_not_allowed"),
        (b'{"amount":1e400}', "float_not_allowed"),
        (b'{"amount":NaN}', "float_not_allowed"),
        (b'{"amount":Infinity}', "float_not_allowed"),
        (b'{"amount":-Infinity}', "float_not_allowed"),
        (b'{"amount":9007199254740992}', "invalid_input"),
        (b'{"amount":-9007199254740992}', "invalid_input"),
        (b'{"amount":' + b"9" * 400 + b"}", "invalid_input"),
        (b'{"amount":' + b"1" * 5000 + b"}", "invalid_input"),
        (b'"\\ud800"', "malformed_json"),
        (b'{"\\udfff":1}', "malformed_json"),
        (b'"\\ud83d x"', "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),
        (b'"\xc3\x28"', "malformed_json"),
        (b"", "malformed_json"),
        (b"{", "malformed_json"),
        (b"{} {}", "malformed_json"),
        (b"{'a':1}", "malformed_json"),
        (b'{"a":1,}', "malformed_json"),
        (b"[1,]", "malformed_json"),
        (b"01", "malformed_json"),
        (b'{"a":undefined}', "malformed_json"),
    ],
    ids=lambda v: v[:24] if isinstance(v, bytes) else v,
)
def test_refusal_codes(data: bytes, code: str) -> None:
    assert _code(data) == code


def test_largest_safe_integers_are_accepted() -> None:
    assert loads_strict(b"[9007199254740991,-9007199254740991]") == [MAX_SAFE_INT, -MAX_SAFE_INT]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100, 100_000])
def test_deep_nesting_refused_before_parsing(depth: int) -> None:
    assert _code(b"[" * depth + b"]" * depth) == "nesting_too_deep"
    assert _code(b'{"a":' * depth + b"1" + b"}" * depth) == "nesting_too_deep"


def test_nesting_at_the_limit_accepted_and_brackets_in_strings_do_not_count() -> None:
    assert loads_strict(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert loads_strict(json.dumps({"s": "[" * 1000 + '\\"{' * 100})) == {"s": "[" * 1000 + '\\"{' * 100}


def test_oversized_documents_refused_as_bytes_and_as_text() -> None:
    big = b'"' + b"a" * MAX_DOCUMENT_BYTES + b'"'
    assert _code(big) == "payload_too_large"
    assert _code(big.decode()) == "payload_too_large"
    with pytest.raises(Error) as err:
        loads_strict(b'"' + b"a" * 100 + b'"', max_bytes=50)
    assert err.value.code == "payload_too_large"
    assert err.value.status == 413


def test_oversized_check_counts_utf8_bytes_not_characters() -> None:
    text = '"' + "\u20ac" * (MAX_DOCUMENT_BYTES // 3 + 10) + '"'
    assert len(text) < MAX_DOCUMENT_BYTES
    assert _code(text) == "payload_too_large"


def test_refusal_messages_do_not_echo_input() -> None:
    secret_like = "S3CR3T-" + "x" * 40
    for data in (
        f'{{"{secret_like}":1,"{secret_like}":2}}',
        f'{{"a":"{secret_like}"',
        f'{{"{secret_like}":1.5}}',
    ):
        with pytest.raises(Error) as err:
            loads_strict(data)
        # Duplicate keys are named (a field name is public); values never are.
        if err.value.code != "duplicate_key":
            assert secret_like not in str(err.value)


# --- canonical() and domain separation ------------------------------------------------


@pytest.mark.parametrize("value", [1.5, {"a": 0.0}, [1, [2.5]], {"a": float("nan")}, (1.0,)])
def test_canonical_refuses_floats(value: Any) -> None:
    with pytest.raises(Error) as err:
        canonical(value)
    assert err.value.code == "float_not_allowed"


@pytest.mark.parametrize("value", [{1: "int key"}, {"a": b"bytes"}, {"a": object()}, "\ud800"])
def test_canonical_refuses_non_json_values(value: Any) -> None:
    with pytest.raises(InputError):
        canonical(value)


def test_domain_bytes_separate_purposes() -> None:
    value = {"a": 1}
    assert domain_bytes("action", value) != domain_bytes("proposal", value)
    assert domain_bytes("action", value).startswith(b"TANDEM/1/action\x00")
    assert digest("action", value) != digest("actio", value)
    # The NUL terminator means no domain is a prefix-extension of another.
    assert not domain_bytes("ab", value).startswith(b"TANDEM/1/a\x00")


@pytest.mark.parametrize("domain", ["", "a\x00b"])
def test_domain_must_be_non_empty_without_nul(domain: str) -> None:
    with pytest.raises(ValueError, match="domain"):
        domain_bytes(domain, {})


# --- field checks and amounts ---------------------------------------------------------


def test_check_fields_unknown_and_missing() -> None:
    with pytest.raises(Error) as err:
        check_fields({"a": 1, "evil": 2}, required=("a",), where="body")
    assert err.value.code == "unknown_field"
    with pytest.raises(Error) as err:
        check_fields({}, required=("a",), where="body")
    assert err.value.code == "invalid_input"
    with pytest.raises(Error) as err:
        check_fields(["a"], required=("a",), where="body")
    assert err.value.code == "invalid_input"


@pytest.mark.parametrize("text", ["0", "1", "1500", str(2**256 - 1)])
def test_parse_amount_accepts_canonical_decimal_strings(text: str) -> None:
    assert parse_amount(text) == int(text)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1.5",
        "-1",
        "+1",
        "01",
        "1e3",
        " 1",
        "1 ",
        "\uff11\uff12",
        "\u0661",
        str(2**256),
        "9" * 79,
        15,
        1.5,
        None,
    ],
)
def test_parse_amount_refuses(value: Any) -> None:
    with pytest.raises(Error) as err:
        parse_amount(value)
    assert err.value.code == "invalid_amount"


# --- the fast encoder is RFC 8785 on its subset ----------------------------------------

_any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_near_surrogates = st.text(
    st.sampled_from(
        ["a", "\u00e9", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0001f600", "\x7f", "\x1f"]
    ),
    max_size=4,
)
_fast_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT) | _any_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(_any_text | _near_surrogates, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(_fast_values)
def test_fast_encoder_equals_rfc8785(value: Any) -> None:
    import rfc8785

    from tandem.core.canonical import _plain

    assert canonical(value) == bytes(rfc8785.dumps(value))
    # Keys at or above U+D800 must take the reference serialiser, not the fast path.
    if isinstance(value, dict) and any(not k.isascii() and max(k) >= "\ud800" for k in value):
        assert not _plain(value)


def test_fast_encoder_sorts_astral_keys_by_utf16_units() -> None:
    value = {"\U0001f600": 1, "\ue000": 2, "\uffff": 3, "a": 4}
    # UTF-16: U+1F600 is D83D DE00, below U+E000; code-point order would put it last.
    assert canonical(value) == '{"a":4,"\U0001f600":1,"\ue000":2,"\uffff":3}'.encode()


def test_strict_parser_checks_depth_of_parsed_value() -> None:
    doc = '{"k":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + ',"s":"' + "[" * 50 + '"}'
    assert loads_strict(doc)["s"] == "[" * 50
    with pytest.raises(Error) as err:
        loads_strict('{"k":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}")
    assert err.value.code == "nesting_too_deep"
