"""Ceremony definitions: declarative TOML, strict, and validated whole.

A definition says what a key ceremony makes (curve, chains, count, segregation class)
and who must approve it. It is checked completely before any key is touched, and every
problem is reported at once with the dotted path of its field, so an operator fixes a
file in one pass instead of one error per run. Unknown keys are refused rather than
ignored: a misspelt ``cuve`` silently falling back to a default is how a key ends up on
the wrong curve.

The canonical form (:meth:`CeremonyDefinition.to_dict`) mirrors the TOML layout with
defaults filled in; its digest under the ``ceremony-definition`` domain is what
proposals and transcripts cite, so a definition cannot change under a ceremony.

Chain facts are restated here, not imported from the chain modules, so that a
definition can be validated without loading any chain implementation.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from tandem.core.canonical import JSON, canonical, digest_hex, loads_strict
from tandem.core.chains.base import Curve
from tandem.core.roles import Role
from tandem.errors import InvalidDefinitionError

__all__ = [
    "CHAIN_RULES",
    "Approvals",
    "CeremonyDefinition",
    "ChainRule",
    "ChainTarget",
    "parse_definition",
    "validate_against",
]

Kind = Literal["keygen", "reshare"]

MIN_EXPIRY_SECONDS = 300
MAX_EXPIRY_SECONDS = 604_800
MAX_KEY_COUNT = 100
MAX_APPROVALS = 100
MAX_CHAINS = 16
MAX_DESCRIPTION = 500
MAX_DEFINITION_BYTES = 64 * 1024

_NAME = re.compile(r"[a-z0-9-]{3,64}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KINDS = ("keygen", "reshare")
_CURVES = ("secp256k1", "ed25519")
_KEYGEN_ONLY = ("curve", "count", "segregation", "chains")
_SECTIONS = ("ceremony", "approvals")


@dataclass(frozen=True)
class ChainRule:
    """What a definition may say about one chain."""

    curve: Curve
    networks: Mapping[str, int | None]  # network -> EIP-155 chain id where the chain has one
    address_types: tuple[str, ...] = ()  # first is the default; empty: no choice to make


CHAIN_RULES: Mapping[str, ChainRule] = MappingProxyType(
    {
        "bitcoin": ChainRule(
            curve="secp256k1",
            networks={"mainnet": None, "testnet": None, "signet": None, "regtest": None},
            address_types=("p2wpkh",),
        ),
        "ethereum": ChainRule(
            curve="secp256k1",
            networks={"mainnet": 1, "sepolia": 11155111, "holesky": 17000},
        ),
        "solana": ChainRule(
            curve="ed25519",
            networks={"mainnet": None, "devnet": None, "testnet": None},
        ),
    }
)


@dataclass(frozen=True)
class ChainTarget:
    chain: str
    network: str
    chain_id: int | None = None  # ethereum only
    address_type: str | None = None  # bitcoin only

    def to_dict(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"chain": self.chain, "network": self.network}
        if self.chain_id is not None:
            out["chain_id"] = self.chain_id
        if self.address_type is not None:
            out["address_type"] = self.address_type
        return out


@dataclass(frozen=True)
class Approvals:
    """Approvals required besides the proposer (always a manager)."""

    custodian: int
    manager: int = 0

    def by_role(self) -> Mapping[Role, int]:
        return {Role.CUSTODIAN: self.custodian, Role.MANAGER: self.manager}


@dataclass(frozen=True)
class CeremonyDefinition:
    name: str
    description: str
    kind: Kind
    expiry_seconds: int
    approvals: Approvals
    curve: Curve | None = None  # keygen only, as are the three below
    count: int | None = None
    segregation: str | None = None
    chains: tuple[ChainTarget, ...] = ()

    @property
    def client_id(self) -> str | None:
        """The client of a ``client:<id>`` segregation class, else None."""
        if self.segregation is not None and self.segregation.startswith("client:"):
            return self.segregation.removeprefix("client:")
        return None

    def to_dict(self) -> dict[str, JSON]:
        body: dict[str, JSON] = {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "expiry_seconds": self.expiry_seconds,
            "approvals": {"custodian": self.approvals.custodian, "manager": self.approvals.manager},
        }
        if self.kind == "keygen":
            body["curve"] = self.curve
            body["count"] = self.count
            body["segregation"] = self.segregation
            body["chains"] = [c.to_dict() for c in self.chains]
        return {"ceremony": body}

    def to_json(self) -> str:
        """The canonical form as RFC 8785 JSON text."""
        return canonical(self.to_dict()).decode("utf-8")

    def definition_hash(self) -> str:
        """Hex digest of the canonical form under the ``ceremony-definition`` domain."""
        return digest_hex("ceremony-definition", self.to_dict())

    @classmethod
    def from_dict(cls, value: JSON, *, source: str = "<definition>") -> CeremonyDefinition:
        """Re-validate a canonical form (e.g. one stored with a ceremony)."""
        return _validate(value, source)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "<definition>") -> CeremonyDefinition:
        return _validate(loads_strict(text), source)


def parse_definition(text: str, *, source: str = "<definition>") -> CeremonyDefinition:
    """Parse and validate a TOML definition; :class:`InvalidDefinitionError` lists every
    problem found (``details["problems"]``), each naming its field."""
    if not isinstance(text, str):
        raise _error(source, ["definition: must be TOML text (str)"])
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DEFINITION_BYTES:
        raise _error(source, [f"definition: larger than {MAX_DEFINITION_BYTES} bytes"])
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _error(source, [f"definition: not valid TOML: {exc}"]) from None
    return _validate(document, source)


def validate_against(defn: CeremonyDefinition, members_by_role: Mapping[Role, int]) -> None:
    """Refuse a definition whose approvals the deployment's membership cannot meet."""
    managers = members_by_role.get(Role.MANAGER, 0)
    custodians = members_by_role.get(Role.CUSTODIAN, 0)
    problems: list[str] = []
    needed_custodians = defn.approvals.custodian
    if custodians < needed_custodians:
        problems.append(
            f"ceremony.approvals.custodian: {_plural(needed_custodians, 'custodian')} required "
            f"but the deployment has {custodians}"
        )
    # The proposer is a manager and cannot approve its own proposal.
    needed_managers = defn.approvals.manager + 1
    if managers < needed_managers:
        if defn.approvals.manager == 0:
            problems.append(
                f"ceremony.approvals.manager: a manager must propose the ceremony but the "
                f"deployment has {managers}"
            )
        else:
            problems.append(
                f"ceremony.approvals.manager: the proposer and "
                f"{_plural(defn.approvals.manager, 'more manager')} required "
                f"({needed_managers} managers) but the deployment has {managers}"
            )
    if problems:
        raise _error(f"definition {defn.name!r}", problems)


# --- validation ------------------------------------------------------------------------


class _Checker:
    """Collects problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(
        self,
        value: Any,
        path: str,
        *,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(path, f"must be a table, got {_type_name(value)}")
            return None
        allowed = (*required, *optional)
        for key in value:
            if key not in allowed:
                full = f"{path}.{key}" if path else key
                hint = difflib.get_close_matches(key, allowed, n=1)
                message = f"unknown field {full!r}"
                if hint:
                    suggested = f"{path}.{hint[0]}" if path else hint[0]
                    message += f" (did you mean {suggested!r}?)"
                self.problems.append(message)
        for key in required:
            if key not in value:
                what = "missing section" if key in _SECTIONS else "missing"
                self.add(f"{path}.{key}" if path else key, what)
        return value

    def integer(self, table: dict[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        where = f"{path}.{key}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, f"must be an integer, got {_type_name(value)}")
            return None
        if not lo <= value <= hi:
            self.add(where, f"must be between {lo} and {hi}, got {value}")
            return None
        return value

    def string(self, table: dict[str, Any], key: str, path: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(f"{path}.{key}", f"must be a string, got {_type_name(value)}")
            return None
        return value

    def choice(self, table: dict[str, Any], key: str, path: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(table, key, path)
        if value is not None and value not in choices:
            self.add(
                f"{path}.{key}",
                f"must be one of {', '.join(repr(c) for c in choices)}, got {_short(value)}",
            )
            return None
        return value


def _validate(document: Any, source: str) -> CeremonyDefinition:
    check = _Checker()
    top = check.table(document, "", required=("ceremony",))
    raw = top.get("ceremony") if top is not None else None
    if raw is None:
        raise _error(source, check.problems)
    c = check.table(
        raw,
        "ceremony",
        required=("name", "description", "kind", "expiry_seconds", "approvals"),
        optional=_KEYGEN_ONLY,
    )
    if c is None:
        raise _error(source, check.problems)

    name = check.string(c, "name", "ceremony")
    if name is not None and not _NAME.fullmatch(name):
        check.add("ceremony.name", "must be 3 to 64 characters of a-z, 0-9 and '-'")
        name = None
    description = check.string(c, "description", "ceremony")
    if description is not None:
        if not 0 < len(description) <= MAX_DESCRIPTION:
            check.add("ceremony.description", f"must be 1 to {MAX_DESCRIPTION} characters")
            description = None
        elif any(unicodedata.category(ch) == "Cc" for ch in description):
            check.add("ceremony.description", "must not contain control characters")
            description = None
    kind = check.choice(c, "kind", "ceremony", _KINDS)
    expiry = check.integer(c, "expiry_seconds", "ceremony", MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS)
    approvals = _approvals(check, c.get("approvals"))

    curve: str | None = None
    count: int | None = None
    segregation: str | None = None
    chains: tuple[ChainTarget, ...] = ()
    if kind == "reshare":
        # A reshare rotates the DEK of an existing key set; what that set holds is fixed.
        for key in _KEYGEN_ONLY:
            if key in c:
                check.add(f"ceremony.{key}", "not allowed when ceremony.kind is 'reshare'")
    else:
        if kind == "keygen":
            for key in _KEYGEN_ONLY:
                if key not in c:
                    check.add(f"ceremony.{key}", "missing (required when ceremony.kind is 'keygen')")
        curve = check.choice(c, "curve", "ceremony", _CURVES)
        count = check.integer(c, "count", "ceremony", 1, MAX_KEY_COUNT)
        segregation = _segregation(check, c)
        if "chains" in c:
            chains = _chains(check, c["chains"], curve)

    if (
        check.problems
        or name is None
        or description is None
        or kind is None
        or expiry is None
        or approvals is None
    ):
        raise _error(source, check.problems)
    return CeremonyDefinition(
        name=name,
        description=description,
        kind="keygen" if kind == "keygen" else "reshare",
        expiry_seconds=expiry,
        approvals=approvals,
        curve=_curve(curve),
        count=count,
        segregation=segregation,
        chains=chains,
    )


def _approvals(check: _Checker, value: Any) -> Approvals | None:
    if value is None:
        return None  # already reported missing
    table = check.table(value, "ceremony.approvals", required=("custodian",), optional=("manager",))
    if table is None:
        return None
    # Dual control: nothing a manager proposes proceeds without a custodian.
    custodian = check.integer(table, "custodian", "ceremony.approvals", 1, MAX_APPROVALS)
    manager = (
        check.integer(table, "manager", "ceremony.approvals", 0, MAX_APPROVALS) if "manager" in table else 0
    )
    if custodian is None or manager is None:
        return None
    return Approvals(custodian=custodian, manager=manager)


def _segregation(check: _Checker, c: dict[str, Any]) -> str | None:
    value = check.string(c, "segregation", "ceremony")
    if value is None or value in ("own", "client-omnibus"):
        return value
    if value.startswith("client:") and _CLIENT_ID.fullmatch(value.removeprefix("client:")):
        return value
    check.add(
        "ceremony.segregation",
        "must be 'own', 'client-omnibus' or 'client:<client-id>' with a client id of 1 to 64 "
        f"characters of A-Z, a-z, 0-9, '_', '.', '-'; got {_short(value)}",
    )
    return None


def _chains(check: _Checker, value: Any, curve: str | None) -> tuple[ChainTarget, ...]:
    if not isinstance(value, list):
        check.add("ceremony.chains", f"must be an array of tables, got {_type_name(value)}")
        return ()
    if not value:
        check.add("ceremony.chains", "at least one chain is required")
        return ()
    if len(value) > MAX_CHAINS:
        check.add("ceremony.chains", f"at most {MAX_CHAINS} chains")
        return ()
    targets: list[ChainTarget] = []
    seen: set[tuple[str, str]] = set()
    first_network: dict[str, tuple[str, int]] = {}
    for i, entry in enumerate(value):
        path = f"ceremony.chains[{i}]"
        table = check.table(entry, path, required=("chain", "network"), optional=("chain_id", "address_type"))
        if table is None:
            continue
        chain = check.choice(table, "chain", path, tuple(CHAIN_RULES))
        if chain is None:
            continue
        rule = CHAIN_RULES[chain]
        if curve is not None and curve != rule.curve:
            check.add(
                f"{path}.chain",
                f"{chain} keys use {rule.curve}, but ceremony.curve is {curve!r}",
            )
        network = check.choice(table, "network", path, tuple(rule.networks))
        chain_id = _chain_id(check, table, path, chain=chain, rule=rule, network=network)
        address_type = _address_type(check, table, path, chain, rule)
        if network is None:
            continue
        if (chain, network) in seen:
            check.add(path, f"{chain} {network} is listed twice")
            continue
        other = first_network.setdefault(chain, (network, i))
        if other[0] != network:
            where = f"ceremony.chains[{other[1]}]"
            check.add(f"{path}.network", _network_mix_message(chain, other[0], network, where))
            continue
        seen.add((chain, network))
        targets.append(
            ChainTarget(chain=chain, network=network, chain_id=chain_id, address_type=address_type)
        )
    return tuple(targets)


def _network_mix_message(chain: str, first: str, second: str, where: str) -> str:
    return (
        f"{chain} {second}: one key serves one network, and {where} already gives {chain} {first}. "
        "A signature does not say which network it is for (BIP-143 commits to none), so a "
        f"{second} withdrawal could spend {first} coins; use one key set per network"
    )


@dataclass(frozen=True)
class NetworkMix:
    key_id: str
    chain: str
    networks: tuple[str, ...]

    def __str__(self) -> str:
        return f"key {self.key_id} serves {self.chain} on {' and '.join(self.networks)}"


def network_mixes(addresses: Iterable[tuple[str, str, str]]) -> list[NetworkMix]:
    """For ``(key_id, chain, network)`` rows of stored addresses, every key that serves
    two networks of one chain (what ceremony validation refuses up front)."""
    networks: dict[tuple[str, str], set[str]] = {}
    for key_id, chain, network in addresses:
        networks.setdefault((key_id, chain), set()).add(network)
    return [
        NetworkMix(key_id, chain, tuple(sorted(nets)))
        for (key_id, chain), nets in sorted(networks.items())
        if len(nets) > 1
    ]


def _chain_id(
    check: _Checker,
    table: dict[str, Any],
    path: str,
    *,
    chain: str,
    rule: ChainRule,
    network: str | None,
) -> int | None:
    has_ids = any(v is not None for v in rule.networks.values())
    if not has_ids:
        if "chain_id" in table:
            check.add(f"{path}.chain_id", f"not allowed for {chain}")
        return None
    if "chain_id" not in table:
        check.add(f"{path}.chain_id", f"missing (required for {chain})")
        return None
    value = check.integer(table, "chain_id", path, 1, (1 << 53) - 1)
    if value is None or network is None:
        return None
    expected = rule.networks[network]
    if value != expected:
        check.add(f"{path}.chain_id", f"{chain} {network} has chain id {expected}, got {value}")
        return None
    return value


def _address_type(
    check: _Checker, table: dict[str, Any], path: str, chain: str, rule: ChainRule
) -> str | None:
    if not rule.address_types:
        if "address_type" in table:
            check.add(f"{path}.address_type", f"not allowed for {chain}")
        return None
    if "address_type" not in table:
        return rule.address_types[0]
    return check.choice(table, "address_type", path, rule.address_types)


def _curve(value: str | None) -> Curve | None:
    if value == "secp256k1":
        return "secp256k1"
    if value == "ed25519":
        return "ed25519"
    return None


def _error(source: str, problems: list[str]) -> InvalidDefinitionError:
    shown = problems or ["definition: invalid"]
    return InvalidDefinitionError(
        f"{source}: invalid ceremony definition: " + "; ".join(shown),
        details={"source": source, "problems": list(shown)},
    )


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__  # TOML dates and times


def _short(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
