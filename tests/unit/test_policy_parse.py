"""Parsing policy documents: what is accepted, what is refused and with which message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tandem.core.canonical import canonical, digest, loads_strict
from tandem.core.policy import Policy, Rule, default_policy, parse_policy
from tandem.core.roles import Role
from tandem.errors import (
    FloatNotAllowedError,
    InputError,
    InvalidAmountError,
    UnknownFieldError,
)

WALLET = "ks_ab12"


def example_doc() -> dict[str, Any]:
    return {
        "version": 1,
        "change_delay_seconds": 86400,
        "rules": [
            {
                "name": "btc-large",
                "match": {
                    "wallet": WALLET,
                    "chain": "bitcoin",
                    "asset": "BTC",
                    "min_amount": "100000000",
                },
                "approvals": {"custodian": 2},
                "max_amount": "500000000",
                "velocity": {"amount": "1000000000", "period_seconds": 86400},
                "allowlist_only": True,
                "time_lock": {"above": "200000000", "delay_seconds": 3600},
                "request_ttl_seconds": 86400,
                "approval_ttl_seconds": 3600,
            },
            {
                "name": "default",
                "match": {},
                "approvals": {"custodian": 1},
                "allowlist_only": True,
                "request_ttl_seconds": 86400,
                "approval_ttl_seconds": 3600,
            },
        ],
    }


def with_change(path: list[str | int], value: Any) -> dict[str, Any]:
    """The example document with the value at ``path`` replaced."""
    doc = copy.deepcopy(example_doc())
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def without(path: list[str | int]) -> dict[str, Any]:
    doc = copy.deepcopy(example_doc())
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return doc


# --- accepted -------------------------------------------------------------------------


def test_example_document_parses_into_typed_rules() -> None:
    policy = parse_policy(example_doc())

    assert policy.version == 1
    assert policy.change_delay_seconds == 86400
    large, default = policy.rules
    assert large.name == "btc-large"
    assert large.match.wallet == WALLET
    assert large.match.min_amount == 100_000_000
    assert dict(large.approvals) == {Role.CUSTODIAN: 2}
    assert large.max_amount == 500_000_000
    assert large.velocity is not None
    assert large.velocity.amount == 1_000_000_000
    assert large.time_lock is not None
    assert large.time_lock.above == 200_000_000
    assert default.match.to_json() == {}


def test_document_from_strict_json_text_parses() -> None:
    text = json.dumps(example_doc())
    assert parse_policy(loads_strict(text)) == parse_policy(example_doc())


def test_to_json_round_trips() -> None:
    policy = parse_policy(example_doc())
    assert parse_policy(policy.to_json()) == policy
    assert policy.to_json() == example_doc()


def test_hash_is_the_policy_domain_digest_of_the_canonical_document() -> None:
    policy = parse_policy(example_doc())
    assert policy.hash() == digest("policy", policy.to_json()).hex()
    assert len(bytes.fromhex(policy.hash())) == 32


def test_hash_changes_with_any_rule_field() -> None:
    base = parse_policy(example_doc()).hash()
    changed = parse_policy(with_change(["rules", 0, "approvals", "custodian"], 3)).hash()
    assert changed != base


def test_hash_ignores_key_order_and_zero_counts() -> None:
    reordered = json.loads(json.dumps(example_doc()), object_pairs_hook=lambda p: dict(p[::-1]))
    assert parse_policy(reordered).hash() == parse_policy(example_doc()).hash()
    zero_manager = with_change(["rules", 1, "approvals"], {"custodian": 1, "manager": 0})
    assert parse_policy(zero_manager).hash() == parse_policy(example_doc()).hash()


def test_allowlist_only_defaults_to_true() -> None:
    policy = parse_policy(without(["rules", 1, "allowlist_only"]))
    assert policy.rules[1].allowlist_only is True


def test_allowlist_only_false_must_be_explicit_and_is_kept() -> None:
    policy = parse_policy(with_change(["rules", 1, "allowlist_only"], False))
    assert policy.rules[1].allowlist_only is False
    assert policy.to_json()["rules"][1]["allowlist_only"] is False


def test_manager_approvals_beyond_the_requester_are_allowed() -> None:
    policy = parse_policy(with_change(["rules", 0, "approvals"], {"custodian": 1, "manager": 1}))
    assert dict(policy.rules[0].approvals) == {Role.CUSTODIAN: 1, Role.MANAGER: 1}


def test_default_policy() -> None:
    policy = default_policy()
    assert policy.version == 1
    assert policy.change_delay_seconds == 86400
    (rule,) = policy.rules
    assert dict(rule.approvals) == {Role.CUSTODIAN: 1}
    assert rule.allowlist_only is True
    assert rule.request_ttl_seconds == 86400
    assert rule.approval_ttl_seconds == 3600
    assert rule.max_amount is None
    assert rule.velocity is None
    assert rule.time_lock is None
    assert rule.match.to_json() == {}
    assert parse_policy(policy.to_json()) == policy
    # The canonical form is valid RFC 8785 input: no floats, no oversized integers.
    assert canonical(policy.to_json())


# --- refused --------------------------------------------------------------------------


def test_empty_rules_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules is empty"):
        parse_policy(with_change(["rules"], []))


def test_rules_not_a_list_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules must be a list"):
        parse_policy(with_change(["rules"], {"name": "default"}))


def test_rule_without_custodian_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[1\]\.approvals\.custodian"):
        parse_policy(with_change(["rules", 1, "approvals"], {"manager": 2}))


def test_rule_with_zero_custodians_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[0\]\.approvals\.custodian"):
        parse_policy(with_change(["rules", 0, "approvals"], {"custodian": 0, "manager": 2}))


def test_rule_with_no_approvals_at_all_refused() -> None:
    with pytest.raises(InputError, match=r"custodian must be at least 1"):
        parse_policy(with_change(["rules", 1, "approvals"], {}))


def test_auditor_approval_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[1\]\.approvals\.auditor"):
        parse_policy(with_change(["rules", 1, "approvals"], {"custodian": 1, "auditor": 1}))


def test_unknown_role_refused_with_path() -> None:
    with pytest.raises(UnknownFieldError, match=r"policy\.rules\[1\]\.approvals: admin"):
        parse_policy(with_change(["rules", 1, "approvals"], {"custodian": 1, "admin": 1}))


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (["surprise"], r"in policy: surprise"),
        (["rules", 0, "surprise"], r"in policy\.rules\[0\]: surprise"),
        (["rules", 0, "match", "destination"], r"in policy\.rules\[0\]\.match: destination"),
        (["rules", 0, "velocity", "burst"], r"in policy\.rules\[0\]\.velocity: burst"),
        (["rules", 0, "time_lock", "below"], r"in policy\.rules\[0\]\.time_lock: below"),
    ],
)
def test_unknown_field_refused_with_path(path: list[str | int], where: str) -> None:
    with pytest.raises(UnknownFieldError, match=where):
        parse_policy(with_change(path, "x"))


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (["version"], r"policy\.version"),
        (["rules", 1, "request_ttl_seconds"], r"policy\.rules\[1\]\.request_ttl_seconds"),
        (["rules", 0, "approvals", "custodian"], r"policy\.rules\[0\]\.approvals\.custodian"),
        (["rules", 0, "max_amount"], r"policy\.rules\[0\]\.max_amount"),
        (["rules", 0, "match", "min_amount"], r"policy\.rules\[0\]\.match\.min_amount"),
        (["rules", 0, "velocity", "amount"], r"policy\.rules\[0\]\.velocity\.amount"),
    ],
)
def test_float_refused_with_path(path: list[str | int], where: str) -> None:
    with pytest.raises(FloatNotAllowedError, match=where):
        parse_policy(with_change(path, 2.0))


def test_float_in_json_text_refused_before_parsing_the_policy() -> None:
    text = json.dumps(example_doc()).replace(
        '"approval_ttl_seconds": 3600', '"approval_ttl_seconds": 3600.0', 1
    )
    with pytest.raises(FloatNotAllowedError):
        parse_policy(loads_strict(text))


def test_duplicate_rule_names_refused() -> None:
    doc = example_doc()
    doc["rules"][1]["name"] = "btc-large"
    with pytest.raises(
        InputError, match=r"policy\.rules\[1\]\.name: duplicate rule name 'btc-large'.*rules\[0\]"
    ):
        parse_policy(doc)


@pytest.mark.parametrize("field", ["request_ttl_seconds", "approval_ttl_seconds"])
@pytest.mark.parametrize("value", [-1, 0])
def test_non_positive_ttl_refused(field: str, value: int) -> None:
    with pytest.raises(InputError, match=rf"policy\.rules\[1\]\.{field} must be at least 1"):
        parse_policy(with_change(["rules", 1, field], value))


def test_negative_change_delay_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.change_delay_seconds must be at least 0"):
        parse_policy(with_change(["change_delay_seconds"], -1))


def test_boolean_is_not_an_integer() -> None:
    with pytest.raises(
        InputError, match=r"policy\.rules\[1\]\.approval_ttl_seconds must be an integer"
    ):
        parse_policy(with_change(["rules", 1, "approval_ttl_seconds"], True))


def test_integer_beyond_canonical_range_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.change_delay_seconds must be at most"):
        parse_policy(with_change(["change_delay_seconds"], 2**53))


@pytest.mark.parametrize("bad", ["1.5", "-1", "01", "", " 1", "1e8", "0x10", "１", 100])
@pytest.mark.parametrize(
    "path",
    [
        ["rules", 0, "max_amount"],
        ["rules", 0, "match", "min_amount"],
        ["rules", 0, "time_lock", "above"],
    ],
)
def test_bad_amount_strings_refused(bad: object, path: list[str | int]) -> None:
    where = r"\.".join(str(p) for p in path).replace(r"rules\.0", r"rules\[0\]")
    with pytest.raises(InvalidAmountError, match=rf"policy\.{where}"):
        parse_policy(with_change(path, bad))


def test_zero_velocity_refused() -> None:
    with pytest.raises(InvalidAmountError, match=r"policy\.rules\[0\]\.velocity\.amount"):
        parse_policy(with_change(["rules", 0, "velocity", "amount"], "0"))


def test_zero_time_lock_delay_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[0\]\.time_lock\.delay_seconds"):
        parse_policy(with_change(["rules", 0, "time_lock", "delay_seconds"], 0))


def test_max_below_min_amount_refused() -> None:
    with pytest.raises(InputError, match=r"could never allow a withdrawal"):
        parse_policy(with_change(["rules", 0, "max_amount"], "99999999"))


def test_allowlist_only_must_be_boolean() -> None:
    with pytest.raises(
        InputError, match=r"policy\.rules\[1\]\.allowlist_only must be true or false"
    ):
        parse_policy(with_change(["rules", 1, "allowlist_only"], "false"))


@pytest.mark.parametrize(
    "name", ["", "has space", "-leading-dash", "x" * 65, "rule\n", "<script>", "naïve"]
)
def test_rule_names_outside_the_alphabet_refused(name: str) -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[1\]\.name must be"):
        parse_policy(with_change(["rules", 1, "name"], name))


def test_match_value_must_be_a_string() -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[0\]\.match\.chain must be a string"):
        parse_policy(with_change(["rules", 0, "match", "chain"], 1))


@pytest.mark.parametrize("field", ["version", "change_delay_seconds", "rules"])
def test_missing_top_level_field_refused(field: str) -> None:
    with pytest.raises(InputError, match=rf"missing field\(s\) in policy: {field}"):
        parse_policy(without([field]))


def test_missing_rule_field_refused() -> None:
    with pytest.raises(InputError, match=r"missing field\(s\) in policy\.rules\[1\]: approvals"):
        parse_policy(without(["rules", 1, "approvals"]))


def test_rule_not_an_object_refused() -> None:
    with pytest.raises(InputError, match=r"policy\.rules\[1\] must be a JSON object"):
        parse_policy(with_change(["rules", 1], ["default"]))


# --- the constructors hold the same line for policies built in code --------------------


def test_rule_built_in_code_without_custodian_refused() -> None:
    with pytest.raises(ValueError, match="custodian must be at least 1"):
        Rule(
            name="sneaky",
            approvals={Role.MANAGER: 2},
            request_ttl_seconds=60,
            approval_ttl_seconds=60,
        )


def test_rule_built_in_code_with_auditor_refused() -> None:
    with pytest.raises(ValueError, match="auditors"):
        Rule(
            name="sneaky",
            approvals={Role.CUSTODIAN: 1, Role.AUDITOR: 1},
            request_ttl_seconds=60,
            approval_ttl_seconds=60,
        )


def test_policy_built_in_code_without_rules_refused() -> None:
    with pytest.raises(ValueError, match="at least one rule"):
        Policy(version=1, change_delay_seconds=0, rules=())


def test_rule_approvals_cannot_be_mutated_after_parsing() -> None:
    rule = parse_policy(example_doc()).rules[0]
    with pytest.raises(TypeError):
        rule.approvals[Role.CUSTODIAN] = 0  # type: ignore[index]
