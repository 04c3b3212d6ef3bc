"""Ceremony definitions: shipped files parse; broken ones are refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.canonical import canonical, digest_hex
from tandem.core.ceremony_def import (
    Approvals,
    CeremonyDefinition,
    ChainTarget,
    parse_definition,
    validate_against,
)
from tandem.core.roles import Role
from tandem.errors import InvalidDefinitionError

CEREMONIES = Path(__file__).resolve().parents[2] / "ceremonies"
SHIPPED = sorted(CEREMONIES.glob("*.toml"))

KEYGEN = """\
[ceremony]
name = "btc-cold"
description = "Bitcoin cold wallet for own funds"
kind = "keygen"
curve = "secp256k1"
count = 2
segregation = "own"
expiry_seconds = 86400

[[ceremony.chains]]
chain = "bitcoin"
network = "mainnet"

[ceremony.approvals]
custodian = 1
"""

ETHEREUM = KEYGEN.replace(
    'chain = "bitcoin"\nnetwork = "mainnet"',
    'chain = "ethereum"\nnetwork = "mainnet"\nchain_id = 1',
)

RESHARE = """\
[ceremony]
name = "reshare"
description = "Rotate the data key"
kind = "reshare"
expiry_seconds = 3600

[ceremony.approvals]
custodian = 1
"""


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems_of(text: str) -> list[str]:
    with pytest.raises(InvalidDefinitionError) as info:
        parse_definition(text, source="test.toml")
    problems = info.value.details["problems"]
    assert info.value.message.startswith("test.toml: invalid ceremony definition: ")
    for problem in problems:
        assert problem in info.value.message
    return list(problems)


# --- shipped definitions ---------------------------------------------------------------


def test_the_expected_definitions_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {
        "bitcoin-cold",
        "bitcoin-testnet-cold",
        "ethereum-cold",
        "solana-cold",
        "client-segregated",
        "reshare",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_definition_parses(path: Path) -> None:
    defn = parse_definition(path.read_text(encoding="utf-8"), source=str(path))
    assert defn.name == path.stem
    assert CeremonyDefinition.from_json(defn.to_json()) == defn
    validate_against(defn, {Role.MANAGER: 1, Role.CUSTODIAN: 1, Role.AUDITOR: 1})


def test_shipped_definitions_say_what_they_promise() -> None:
    def load(stem: str) -> CeremonyDefinition:
        return parse_definition((CEREMONIES / f"{stem}.toml").read_text(encoding="utf-8"))

    btc = load("bitcoin-cold")
    assert (btc.curve, btc.segregation) == ("secp256k1", "own")
    assert btc.chains == (ChainTarget("bitcoin", "mainnet", address_type="p2wpkh"),)
    assert load("bitcoin-testnet-cold").chains[0].network == "testnet"
    assert load("ethereum-cold").chains == (ChainTarget("ethereum", "mainnet", chain_id=1),)
    sol = load("solana-cold")
    assert (sol.curve, sol.chains) == ("ed25519", (ChainTarget("solana", "mainnet"),))
    client = load("client-segregated")
    assert client.segregation == "client:acme-pension-fund"
    assert client.client_id == "acme-pension-fund"
    assert {c.chain for c in client.chains} == {"bitcoin", "ethereum"}
    reshare = load("reshare")
    assert reshare.kind == "reshare"
    assert (reshare.curve, reshare.count, reshare.chains) == (None, None, ())


# --- the canonical form ----------------------------------------------------------------


def test_canonical_form_fills_defaults_and_hashes_under_its_domain() -> None:
    defn = parse_definition(KEYGEN)
    assert defn.approvals == Approvals(custodian=1, manager=0)
    assert defn.to_dict() == {
        "ceremony": {
            "name": "btc-cold",
            "description": "Bitcoin cold wallet for own funds",
            "kind": "keygen",
            "expiry_seconds": 86400,
            "approvals": {"custodian": 1, "manager": 0},
            "curve": "secp256k1",
            "count": 2,
            "segregation": "own",
            "chains": [{"chain": "bitcoin", "network": "mainnet", "address_type": "p2wpkh"}],
        }
    }
    assert defn.to_json().encode() == canonical(defn.to_dict())
    assert defn.definition_hash() == digest_hex("ceremony-definition", defn.to_dict())


def test_layout_and_comments_do_not_change_the_hash() -> None:
    reordered = (
        "# a comment\n[ceremony.approvals]\nmanager = 0\ncustodian = 1\n\n"
        + KEYGEN.split("[ceremony.approvals]", maxsplit=1)[0]
    )
    assert parse_definition(reordered).definition_hash() == parse_definition(KEYGEN).definition_hash()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("count = 2", "count = 3"),
        ('segregation = "own"', 'segregation = "client-omnibus"'),
        ("expiry_seconds = 86400", "expiry_seconds = 86401"),
        ("custodian = 1", "custodian = 2"),
        ('description = "Bitcoin', 'description = "bitcoin'),
        ('network = "mainnet"', 'network = "signet"'),
    ],
)
def test_any_change_changes_the_hash(old: str, new: str) -> None:
    assert (
        parse_definition(edit(KEYGEN, old, new)).definition_hash()
        != parse_definition(KEYGEN).definition_hash()
    )


def test_a_stored_canonical_form_is_revalidated() -> None:
    value = parse_definition(KEYGEN).to_dict()
    value["ceremony"]["count"] = 0
    with pytest.raises(InvalidDefinitionError, match=r"ceremony\.count"):
        CeremonyDefinition.from_dict(value)
    with pytest.raises(InvalidDefinitionError, match=r"ceremony\.count"):
        CeremonyDefinition.from_json(json.dumps(value))


# --- refusals, each naming its field ---------------------------------------------------


BROKEN = [
    pytest.param(
        edit(KEYGEN, "count = 2", 'count = 2\ncuve = "ed25519"'),
        "unknown field 'ceremony.cuve' (did you mean 'ceremony.curve'?)",
        id="unknown-key",
    ),
    pytest.param(
        edit(KEYGEN, 'chain = "bitcoin"', 'chain = "solana"'),
        "ceremony.chains[0].chain: solana keys use ed25519, but ceremony.curve is 'secp256k1'",
        id="curve-does-not-fit-chain",
    ),
    pytest.param(
        edit(KEYGEN, 'chain = "bitcoin"', 'chain = "dogecoin"'),
        "ceremony.chains[0].chain: must be one of 'bitcoin', 'ethereum', 'solana'",
        id="unknown-chain",
    ),
    pytest.param(
        edit(KEYGEN, 'network = "mainnet"', 'network = "goerli"'),
        "ceremony.chains[0].network: must be one of 'mainnet', 'testnet', 'signet', 'regtest'",
        id="unknown-network",
    ),
    pytest.param(
        edit(ETHEREUM, "chain_id = 1", "chain_id = 5"),
        "ceremony.chains[0].chain_id: ethereum mainnet has chain id 1, got 5",
        id="wrong-chain-id",
    ),
    pytest.param(
        edit(ETHEREUM, 'network = "mainnet"', 'network = "sepolia"'),
        "ceremony.chains[0].chain_id: ethereum sepolia has chain id 11155111, got 1",
        id="chain-id-of-another-network",
    ),
    pytest.param(
        edit(ETHEREUM, "chain_id = 1\n", ""),
        "ceremony.chains[0].chain_id: missing",
        id="ethereum-without-chain-id",
    ),
    pytest.param(
        edit(KEYGEN, 'network = "mainnet"', 'network = "mainnet"\nchain_id = 1'),
        "ceremony.chains[0].chain_id: not allowed for bitcoin",
        id="chain-id-on-bitcoin",
    ),
    pytest.param(
        edit(KEYGEN, 'network = "mainnet"', 'network = "mainnet"\naddress_type = "p2tr"'),
        "ceremony.chains[0].address_type: must be one of 'p2wpkh'",
        id="unsupported-address-type",
    ),
    pytest.param(
        edit(KEYGEN, "count = 2", "count = 0"),
        "ceremony.count: must be between 1 and 100, got 0",
        id="count-zero",
    ),
    pytest.param(
        edit(KEYGEN, "count = 2", "count = 101"),
        "ceremony.count: must be between 1 and 100, got 101",
        id="count-too-large",
    ),
    pytest.param(
        edit(KEYGEN, 'segregation = "own"', 'segregation = "client:"'),
        "ceremony.segregation: must be 'own', 'client-omnibus' or 'client:<client-id>'",
        id="empty-client-id",
    ),
    pytest.param(
        edit(KEYGEN, 'segregation = "own"', 'segregation = "client:acme fund"'),
        "ceremony.segregation:",
        id="client-id-with-space",
    ),
    pytest.param(
        edit(KEYGEN, 'segregation = "own"', 'segregation = "omnibus"'),
        "ceremony.segregation:",
        id="unknown-segregation",
    ),
    pytest.param(
        KEYGEN.split("[ceremony.approvals]", maxsplit=1)[0],
        "ceremony.approvals: missing section",
        id="missing-approvals-section",
    ),
    pytest.param(
        "[other]\nx = 1\n",
        "ceremony: missing section",
        id="missing-ceremony-section",
    ),
    pytest.param(
        edit(KEYGEN, "expiry_seconds = 86400", "expiry_seconds = 299"),
        "ceremony.expiry_seconds: must be between 300 and 604800, got 299",
        id="expiry-too-short",
    ),
    pytest.param(
        edit(KEYGEN, "expiry_seconds = 86400", "expiry_seconds = 604801"),
        "ceremony.expiry_seconds: must be between 300 and 604800, got 604801",
        id="expiry-too-long",
    ),
    pytest.param(
        edit(KEYGEN, "count = 2", "count = 2.0"),
        "ceremony.count: must be an integer, got float",
        id="float-for-int",
    ),
    pytest.param(
        edit(KEYGEN, "custodian = 1", "custodian = true"),
        "ceremony.approvals.custodian: must be an integer, got boolean",
        id="bool-for-int",
    ),
    pytest.param(
        edit(KEYGEN, "expiry_seconds = 86400", 'expiry_seconds = "86400"'),
        "ceremony.expiry_seconds: must be an integer, got string",
        id="string-for-int",
    ),
    pytest.param(
        edit(RESHARE, 'kind = "reshare"', 'kind = "reshare"\ncurve = "secp256k1"'),
        "ceremony.curve: not allowed when ceremony.kind is 'reshare'",
        id="reshare-with-curve",
    ),
    pytest.param(
        edit(KEYGEN, "custodian = 1", "custodian = 0"),
        "ceremony.approvals.custodian: must be between 1 and 100, got 0",
        id="no-custodian-approval",
    ),
    pytest.param(
        edit(KEYGEN, "custodian = 1", "custodian = 1\nauditor = 1"),
        "unknown field 'ceremony.approvals.auditor'",
        id="auditor-approval",
    ),
    pytest.param(
        edit(KEYGEN, 'name = "btc-cold"', 'name = "BTC cold"'),
        "ceremony.name: must be 3 to 64 characters",
        id="bad-name",
    ),
    pytest.param(
        edit(KEYGEN, 'kind = "keygen"', 'kind = "import"'),
        "ceremony.kind: must be one of 'keygen', 'reshare'",
        id="unknown-kind",
    ),
    pytest.param(
        edit(KEYGEN, 'curve = "secp256k1"', 'curve = "p256"'),
        "ceremony.curve: must be one of 'secp256k1', 'ed25519'",
        id="unknown-curve",
    ),
    pytest.param(
        edit(KEYGEN, 'curve = "secp256k1"\n', ""),
        "ceremony.curve: missing (required when ceremony.kind is 'keygen')",
        id="keygen-without-curve",
    ),
    pytest.param(
        edit(KEYGEN, '[[ceremony.chains]]\nchain = "bitcoin"\nnetwork = "mainnet"\n', ""),
        "ceremony.chains: missing",
        id="keygen-without-chains",
    ),
    pytest.param(
        KEYGEN + '\n[[ceremony.chains]]\nchain = "bitcoin"\nnetwork = "mainnet"\n',
        "ceremony.chains[1]: bitcoin mainnet is listed twice",
        id="duplicate-chain",
    ),
    pytest.param(
        KEYGEN + '\n[[ceremony.chains]]\nchain = "bitcoin"\nnetwork = "testnet"\n',
        "ceremony.chains[1].network: bitcoin testnet: one key serves one network, and "
        "ceremony.chains[0] already gives bitcoin mainnet",
        id="two-networks-for-one-key",
    ),
    pytest.param(
        KEYGEN + "\n[extra]\nx = 1\n",
        "unknown field 'extra'",
        id="unknown-top-level-table",
    ),
    pytest.param(
        edit(KEYGEN, 'description = "Bitcoin', 'description = "\\u0007Bitcoin'),
        "ceremony.description: must not contain control characters",
        id="control-character",
    ),
    pytest.param(
        edit(KEYGEN, "count = 2", "count = 2\ncount = 3"),
        "definition: not valid TOML",
        id="duplicate-key",
    ),
    pytest.param(
        "[ceremony\nname = 1",
        "definition: not valid TOML",
        id="not-toml",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_definition_is_refused_naming_the_field(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    text = edit(KEYGEN, "count = 2", "count = 0.5\ncuve = 1")
    text = edit(text, 'network = "mainnet"', 'network = "goerli"')
    text = edit(text, "expiry_seconds = 86400", "expiry_seconds = 1")
    problems = problems_of(text)
    assert len(problems) == 4, problems
    for field in ("ceremony.count", "ceremony.cuve", "ceremony.chains[0].network", "expiry"):
        assert any(field in p for p in problems), field


def test_reshare_refuses_every_keygen_field() -> None:
    text = edit(
        RESHARE,
        'kind = "reshare"',
        'kind = "reshare"\ncurve = "ed25519"\ncount = 1\nsegregation = "own"\n'
        'chains = [{chain = "solana", network = "mainnet"}]',
    )
    problems = problems_of(text)
    assert sorted(p.split(":")[0] for p in problems) == [
        "ceremony.chains",
        "ceremony.count",
        "ceremony.curve",
        "ceremony.segregation",
    ]


def test_refusing_non_text_and_oversized_input() -> None:
    with pytest.raises(InvalidDefinitionError, match="TOML text"):
        parse_definition(KEYGEN.encode())  # type: ignore[arg-type]
    with pytest.raises(InvalidDefinitionError, match="larger than"):
        parse_definition(KEYGEN + "#" * 70_000)


@settings(max_examples=50, deadline=None)
@given(key=st.from_regex(r"[a-z_]{1,20}", fullmatch=True))
def test_any_unknown_ceremony_key_is_refused(key: str) -> None:
    allowed = {"name", "description", "kind", "curve", "count", "segregation"}
    allowed |= {"expiry_seconds", "chains", "approvals"}
    if key in allowed:
        return
    text = edit(KEYGEN, "count = 2", f"count = 2\n{key} = 1")
    assert any(p.startswith(f"unknown field 'ceremony.{key}'") for p in problems_of(text))


# --- quorum against the deployment -----------------------------------------------------


def test_impossible_custodian_quorum_is_refused() -> None:
    defn = parse_definition(edit(KEYGEN, "custodian = 1", "custodian = 2"))
    with pytest.raises(
        InvalidDefinitionError,
        match=r"ceremony\.approvals\.custodian: 2 custodians required but the deployment has 1",
    ):
        validate_against(defn, {Role.MANAGER: 3, Role.CUSTODIAN: 1})
    validate_against(defn, {Role.MANAGER: 1, Role.CUSTODIAN: 2})


def test_manager_approvals_need_managers_besides_the_proposer() -> None:
    defn = parse_definition(edit(KEYGEN, "custodian = 1", "custodian = 1\nmanager = 1"))
    with pytest.raises(InvalidDefinitionError, match=r"ceremony\.approvals\.manager:") as info:
        validate_against(defn, {Role.MANAGER: 1, Role.CUSTODIAN: 5})
    assert "2 managers" in info.value.message
    validate_against(defn, {Role.MANAGER: 2, Role.CUSTODIAN: 1})


def test_a_deployment_without_managers_cannot_propose() -> None:
    defn = parse_definition(RESHARE)
    with pytest.raises(InvalidDefinitionError) as info:
        validate_against(defn, {Role.CUSTODIAN: 0, Role.AUDITOR: 2})
    assert len(info.value.details["problems"]) == 2
    assert "ceremony.approvals.manager: a manager must propose" in info.value.message
    assert "1 custodian required but the deployment has 0" in info.value.message


def test_auditors_never_count_towards_a_quorum() -> None:
    defn = parse_definition(KEYGEN)
    with pytest.raises(InvalidDefinitionError, match="custodian"):
        validate_against(defn, {Role.MANAGER: 1, Role.AUDITOR: 10})
