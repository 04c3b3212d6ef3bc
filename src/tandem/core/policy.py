"""Withdrawal policy: which rule applies, what it requires, and whether quorum is met.

This is layer 2 of dual control (ARCHITECTURE.md, "Three layers"). The engine is pure:
a policy, the facts of one withdrawal, the address book, the recent history and the
current time go in; a decision object comes out. Nothing here reads a clock, a
database or the network, so the same inputs always give the same decision, and the
offline signer can re-run it on an exported bundle and reach the server's answer.

Results and refusals are separate steps, as in python-tuf: :func:`evaluate` and
:func:`quorum` return objects that carry everything they found, and ``require()``
raises the first refusal. ``tandem policy show`` prints ``PolicyDecision.explanation``.

A policy is data (see ``docs/policy.md``): a JSON document parsed strictly by
:func:`parse_policy`, identified by its version and by :meth:`Policy.hash`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, TypeVar

from tandem.core import approvals as approvals_engine
from tandem.core.approvals import QuorumResult
from tandem.core.canonical import MAX_SAFE_INT, check_fields, digest, parse_amount
from tandem.core.roles import Role
from tandem.errors import (
    DestinationNotAllowedError,
    ExpiredError,
    FeeExceededError,
    FloatNotAllowedError,
    InputError,
    InvalidAmountError,
    LimitExceededError,
    NoMatchingRuleError,
    PolicyError,
    PolicyVersionError,
    TimeLockedError,
    UnknownFieldError,
    VelocityExceededError,
    WalletLimitExceededError,
)

POLICY_DOMAIN = "policy"

# Roles in the order people read them: the custodian is the point of dual control.
_ROLE_ORDER = (Role.CUSTODIAN, Role.MANAGER, Role.AUDITOR)

# Rule names and match values are shown in the CLI, the API and the audit log. They are
# identifiers, not prose, so anything outside a narrow alphabet is refused rather than
# stored and later rendered by a terminal or a browser.
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,127}")
_EVM_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{40}")
_SPELLING = {
    _RULE_NAME: "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    _IDENTIFIER: "must be 1-128 letters, digits, ':', '.', '_' or '-', starting with a letter or digit",
}

_POLICY_FIELDS = ("version", "change_delay_seconds", "rules")
_POLICY_OPTIONAL = ("wallet_limits", "membership", "fees_charged_to")
# Who bears a withdrawal's network fee in the register of positions.
FEE_PAYERS = ("wallet_owner", "fund")
_MEMBERSHIP_FIELDS = ("approvals", "delay_seconds")
_MEMBERSHIP_OPTIONAL = ("remove_delay_seconds",)
_RULE_REQUIRED = ("name", "match", "approvals", "request_ttl_seconds", "approval_ttl_seconds")
_RULE_OPTIONAL = (
    "max_amount",
    "velocity",
    "allowlist_only",
    "time_lock",
    "fees",
    "release_ttl_seconds",
)
_MATCH_FIELDS = ("wallet", "chain", "network", "asset", "min_amount")


def _fold(value: str) -> str:
    """Comparison key for addresses and assets.

    An EVM address is hex; its letter case carries only the EIP-55 checksum, so
    ``0xA0b8…`` and ``0xa0b8…`` name the same contract or account. Every other form
    (bech32, base58, ticker symbols) is compared exactly: base58 is case-sensitive.
    """
    return value.lower() if _EVM_ADDRESS.fullmatch(value) else value


def _ordered_counts(counts: Mapping[Role, int]) -> Mapping[Role, int]:
    # A zero count means "not required"; dropping it makes two spellings of the same
    # rule equal and give the same policy hash.
    ordered = {role: counts[role] for role in _ROLE_ORDER if counts.get(role)}
    return MappingProxyType(ordered)


def _describe_counts(counts: Mapping[Role, int]) -> str:
    return ", ".join(f"{role.value} {counts[role]}" for role in _ROLE_ORDER if role in counts)


def _approvals_problem(approvals: Mapping[Role, int]) -> str | None:
    """Why a rule's approvals would weaken dual control, or None if they do not."""
    for role, count in approvals.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return f"the {role} count must be a whole number >= 0"
    if approvals.get(Role.AUDITOR):
        return "auditors verify, they never approve"
    if approvals.get(Role.CUSTODIAN, 0) < 1:
        return "custodian must be at least 1: every withdrawal needs a custodian's approval"
    return None


def _require_time(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int of unix seconds")


# --- the policy document -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Match:
    """Which withdrawals a rule covers. A field left as None matches anything."""

    wallet: str | None = None
    chain: str | None = None
    network: str | None = None
    asset: str | None = None
    min_amount: int | None = None

    def mismatches(self, facts: WithdrawalFacts) -> tuple[str, ...]:
        """Why ``facts`` fall outside this match; empty when the rule applies."""
        reasons: list[str] = []
        exact = (
            ("wallet", self.wallet, facts.wallet),
            ("chain", self.chain, facts.chain),
            ("network", self.network, facts.network),
        )
        for label, wanted, got in exact:
            if wanted is not None and wanted != got:
                reasons.append(f"{label} is {got}, the rule wants {wanted}")
        if self.asset is not None and _fold(self.asset) != _fold(facts.asset):
            reasons.append(f"asset is {facts.asset}, the rule wants {self.asset}")
        if self.min_amount is not None and facts.amount < self.min_amount:
            reasons.append(f"amount {facts.amount} is below min_amount {self.min_amount}")
        return tuple(reasons)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("wallet", "chain", "network", "asset"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.min_amount is not None:
            out["min_amount"] = str(self.min_amount)
        return out


@dataclass(frozen=True, kw_only=True)
class Velocity:
    """At most ``amount`` base units out of one wallet, per asset, in any ``period_seconds``."""

    amount: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.amount < 1 or self.period_seconds < 1:
            raise ValueError("velocity amount and period_seconds must be at least 1")


@dataclass(frozen=True, kw_only=True)
class TimeLock:
    """Amounts strictly above ``above`` wait ``delay_seconds`` before release."""

    above: int
    delay_seconds: int

    def __post_init__(self) -> None:
        if self.above < 0 or self.delay_seconds < 1:
            raise ValueError("time_lock above must be >= 0 and delay_seconds >= 1")


# --- fees (policy data: per-rule limits under fixed per-chain caps) -----------------

DEFAULT_FEE_WARN_BPS = 1000  # the approval view warns above a fee of 10% of the amount
DEFAULT_RELEASE_TTL_SECONDS = 86400
BPS = 10_000
_FEE_FIELDS = ("max_fee", "max_fee_rate", "max_priority_fee", "max_fee_bps", "warn_bps")
FEE_RATE_UNIT: Mapping[str, str] = MappingProxyType(
    {"bitcoin": "sat/vB", "ethereum": "wei/gas", "solana": "lamports/signature"}
)
PRIORITY_FEE_UNIT: Mapping[str, str] = MappingProxyType({"solana": "micro-lamports/compute unit"})


@dataclass(frozen=True, kw_only=True)
class FeeLimits:
    """Most a withdrawal may spend on fees, in the chain's native base units.

    ``max_fee`` bounds the worst case (Bitcoin: inputs - outputs; Ethereum: gas_limit x
    max_fee_per_gas); ``max_fee_rate`` the sat/vB or max_fee_per_gas; ``max_priority_fee``
    the Ethereum tip per gas or the Solana compute-unit price (micro-lamports);
    ``max_fee_bps`` the fee as a share of the amount in basis points (only when the fee
    is paid in the asset withdrawn). ``warn_bps`` is where the
    approval view starts warning. None means "no limit beyond the chain's cap".
    """

    max_fee: int | None = None
    max_fee_rate: int | None = None
    max_priority_fee: int | None = None
    max_fee_bps: int | None = None
    warn_bps: int | None = None

    def __post_init__(self) -> None:
        for name in _FEE_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"fees.{name} must be a whole number >= 0")
        for name in ("max_fee_bps", "warn_bps"):
            value = getattr(self, name)
            if value is not None and value > BPS:
                raise ValueError(f"fees.{name} is in basis points: at most {BPS}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("max_fee", "max_fee_rate", "max_priority_fee"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        for name in ("max_fee_bps", "warn_bps"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


# Caps that hold with no rule saying anything: a fee beyond these is a typo or an
# attack, never a fee market. A rule can only tighten them.
CHAIN_FEE_CAPS: Mapping[str, FeeLimits] = MappingProxyType(
    {
        # 0.05 BTC, 2,000 sat/vB.
        "bitcoin": FeeLimits(max_fee=5_000_000, max_fee_rate=2_000),
        # 0.2 ETH, 1,000 gwei per gas, 100 gwei tip.
        "ethereum": FeeLimits(
            max_fee=200_000_000_000_000_000,
            max_fee_rate=1_000_000_000_000,
            max_priority_fee=100_000_000_000,
        ),
        # 0.01 SOL: the signature fee with room for the rent of a token account the
        # transfer creates and a priority fee; the rate is the base fee per signature,
        # the priority fee a compute-unit price (at most 100 lamports per unit).
        "solana": FeeLimits(max_fee=10_000_000, max_fee_rate=5_000, max_priority_fee=100_000_000),
    }
)


@dataclass(frozen=True, kw_only=True)
class Fee:
    """The worst-case fee of one withdrawal, as decoded from its unsigned transaction."""

    amount: int
    asset: str
    rate: int
    priority_rate: int | None = None

    def __post_init__(self) -> None:
        for value in (self.amount, self.rate, self.priority_rate or 0):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidAmountError("fees are whole numbers >= 0 of base units")


def fee_share_text(fee: int, amount: int) -> str:
    """``fee`` as a percentage of ``amount`` with two decimals, by integer arithmetic."""
    if amount <= 0:
        return "n/a"
    hundredths = fee * BPS // amount
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def _tightest(*values: int | None) -> int | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None


def _check_fees(rule: Rule, facts: WithdrawalFacts, explanation: list[str]) -> list[PolicyError]:
    """Fee refusals for ``facts`` under ``rule`` and the chain's fixed caps."""
    fee = facts.fee
    if fee is None:
        return []
    cap = CHAIN_FEE_CAPS.get(facts.chain, FeeLimits())
    mine = rule.fees or FeeLimits()
    unit = FEE_RATE_UNIT.get(facts.chain, "per unit")
    priority_unit = PRIORITY_FEE_UNIT.get(facts.chain, unit)
    same_asset = _fold(fee.asset) == _fold(facts.asset)
    share = fee_share_text(fee.amount, facts.amount) if same_asset else "n/a (paid in another asset)"
    explanation.append(
        f"fee: at most {fee.amount} {fee.asset} base units (rate {fee.rate} {unit}), {share} of the amount"
    )
    checks = (
        ("fee", fee.amount, _tightest(cap.max_fee, mine.max_fee), f"{fee.asset} base units"),
        ("fee rate", fee.rate, _tightest(cap.max_fee_rate, mine.max_fee_rate), unit),
        (
            "priority fee",
            fee.priority_rate,
            _tightest(cap.max_priority_fee, mine.max_priority_fee),
            priority_unit,
        ),
    )
    violations: list[PolicyError] = []
    for label, value, limit, what in checks:
        if value is None or limit is None:
            continue
        if value > limit:
            over = FeeExceededError(
                f"{label} {value} {what} exceeds the limit {limit}",
                details={"what": label, "value": str(value), "limit": str(limit)},
            )
            violations.append(over)
            explanation.append(f"refused: {over.message}")
    if mine.max_fee_bps is not None and same_asset and fee.amount * BPS > mine.max_fee_bps * facts.amount:
        ratio = FeeExceededError(
            f"fee {fee.amount} is {share} of the amount {facts.amount}, above the rule's "
            f"{fee_share_text(mine.max_fee_bps, BPS)}",
            details={
                "what": "fee share",
                "fee": str(fee.amount),
                "amount": str(facts.amount),
                "max_fee_bps": mine.max_fee_bps,
            },
        )
        violations.append(ratio)
        explanation.append(f"refused: {ratio.message}")
    return violations


def parse_fee_limits(obj: Any, where: str) -> FeeLimits:
    check_fields(obj, required=(), optional=_FEE_FIELDS, where=where)
    amounts = {
        key: _amount_field(obj, key, where)
        for key in ("max_fee", "max_fee_rate", "max_priority_fee")
        if key in obj
    }
    shares = {}
    for key in ("max_fee_bps", "warn_bps"):
        if key in obj:
            shares[key] = _int_field(obj, key, where, minimum=0)
            if shares[key] > BPS:
                raise InputError(f"{where}.{key} is in basis points (1/100 of a percent): at most {BPS}")
    return FeeLimits(**amounts, **shares)


# --- wallet limits (whichever rule matched) -------------------------------------------

_WALLET_LIMIT_REQUIRED = ("name", "period_seconds")
_WALLET_LIMIT_OPTIONAL = ("match", "max_amount", "max_count", "escalate")
_ESCALATE_FIELDS = ("above", "approvals", "delay_seconds")


@dataclass(frozen=True, kw_only=True)
class Escalation:
    """Once the wallet's window total (with this withdrawal) is strictly above ``above``,
    the stronger ``approvals`` (per role, the larger of the rule's and these) and a
    ``delay_seconds`` time lock apply, whichever rule matched."""

    above: int
    approvals: Mapping[Role, int] = field(default_factory=dict)
    delay_seconds: int = 0

    def __post_init__(self) -> None:
        approvals = {Role(role): count for role, count in self.approvals.items()}
        if self.above < 0 or self.delay_seconds < 0:
            raise ValueError("escalate.above and delay_seconds must be >= 0")
        if approvals.get(Role.AUDITOR):
            raise ValueError("auditors verify, they never approve")
        if not approvals and self.delay_seconds == 0:
            raise ValueError("an escalation needs approvals or a delay")
        object.__setattr__(self, "approvals", _ordered_counts(approvals))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"above": str(self.above)}
        if self.approvals:
            out["approvals"] = {role.value: count for role, count in self.approvals.items()}
        if self.delay_seconds:
            out["delay_seconds"] = self.delay_seconds
        return out


@dataclass(frozen=True, kw_only=True)
class WalletLimit:
    """Over any sliding ``period_seconds``, per wallet and asset, counting released and
    pending withdrawals plus this one (worst-case fee included): at most ``max_amount``
    base units, at most ``max_count`` withdrawals, and above ``escalate.above`` the
    stronger approvals and delay. Every limit whose ``match`` fits applies."""

    name: str
    match: Match = field(default_factory=Match)
    period_seconds: int
    max_amount: int | None = None
    max_count: int | None = None
    escalate: Escalation | None = None

    def __post_init__(self) -> None:
        if self.period_seconds < 1:
            raise ValueError(f"wallet limit {self.name!r}: period_seconds must be at least 1")
        if self.match.min_amount is not None:
            raise ValueError(f"wallet limit {self.name!r}: match.min_amount is for rules only")
        if self.max_amount is None and self.max_count is None and self.escalate is None:
            raise ValueError(f"wallet limit {self.name!r} limits nothing")
        if self.max_count is not None and self.max_count < 1:
            raise ValueError(f"wallet limit {self.name!r}: max_count must be at least 1")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "match": self.match.to_json(),
            "period_seconds": self.period_seconds,
        }
        if self.max_amount is not None:
            out["max_amount"] = str(self.max_amount)
        if self.max_count is not None:
            out["max_count"] = self.max_count
        if self.escalate is not None:
            out["escalate"] = self.escalate.to_json()
        return out


def _parse_wallet_limit(obj: Any, where: str) -> WalletLimit:
    check_fields(obj, required=_WALLET_LIMIT_REQUIRED, optional=_WALLET_LIMIT_OPTIONAL, where=where)
    name = _text_field(obj, "name", where, _RULE_NAME)
    match = Match()
    if "match" in obj:
        check_fields(
            obj["match"],
            required=(),
            optional=("wallet", "chain", "network", "asset"),
            where=f"{where}.match",
        )
        match = _parse_match(obj["match"], f"{where}.match")
    max_amount = _amount_field(obj, "max_amount", where, minimum=1) if "max_amount" in obj else None
    max_count = _int_field(obj, "max_count", where, minimum=1) if "max_count" in obj else None
    escalate = None
    if "escalate" in obj:
        w = f"{where}.escalate"
        raw = check_fields(
            obj["escalate"], required=("above",), optional=("approvals", "delay_seconds"), where=w
        )
        approvals: dict[Role, int] = {}
        if "approvals" in raw:
            approvals = _parse_approvals(raw["approvals"], f"{w}.approvals")
        delay = _int_field(raw, "delay_seconds", w, minimum=0) if "delay_seconds" in raw else 0
        if not approvals and delay == 0:
            raise InputError(f"{w} needs approvals or a delay_seconds above 0")
        escalate = Escalation(above=_amount_field(raw, "above", w), approvals=approvals, delay_seconds=delay)
    if max_amount is None and max_count is None and escalate is None:
        raise InputError(f"{where} limits nothing: give max_amount, max_count or escalate")
    return WalletLimit(
        name=name,
        match=match,
        period_seconds=_int_field(obj, "period_seconds", where, minimum=1),
        max_amount=max_amount,
        max_count=max_count,
        escalate=escalate,
    )


def parse_wallet_limits(obj: Any, where: str) -> tuple[WalletLimit, ...]:
    if not isinstance(obj, list):
        raise InputError(f"{where} must be a list of wallet limits")
    return _parse_named(obj, where, _parse_wallet_limit, "wallet limit")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def _parse_named(
    items: list[Any], where: str, parse_one: Callable[[Any, str], _N], noun: str
) -> tuple[_N, ...]:
    """Each of ``items`` parsed at ``where[i]``, refusing a name used twice (the second
    use is named, with the index of the first)."""
    parsed: list[_N] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(items):
        item = parse_one(raw, f"{where}[{index}]")
        if item.name in first_index:
            raise InputError(
                f"{where}[{index}].name: duplicate {noun} name {item.name!r} "
                f"(already used by {where}[{first_index[item.name]}])"
            )
        first_index[item.name] = index
        parsed.append(item)
    return tuple(parsed)


def velocity_window_seconds(policy: Policy) -> int:
    """The longest window any limit of ``policy`` looks back over (0: none), so a caller
    reads only the history that can matter."""
    periods = [r.velocity.period_seconds for r in policy.rules if r.velocity is not None]
    periods += [limit.period_seconds for limit in policy.wallet_limits]
    return max(periods, default=0)


@dataclass(frozen=True)
class _WalletOutcome:
    violations: tuple[PolicyError, ...]
    required: Mapping[Role, int]
    lock_seconds: int


def _check_wallet_limits(
    policy: Policy,
    facts: WithdrawalFacts,
    *,
    now: int,
    history: Sequence[PastWithdrawal],
    explanation: list[str],
) -> _WalletOutcome:
    violations: list[PolicyError] = []
    required: dict[Role, int] = {}
    lock_seconds = 0
    counted = facts.counted_amount
    for limit in policy.wallet_limits:
        if limit.match.mismatches(facts):
            continue
        in_window = _in_window(facts, limit.period_seconds, now, history)
        total = sum(p.amount for p in in_window) + counted
        count = len(in_window) + 1
        explanation.append(
            f"wallet limit {limit.name!r}: {count} withdrawal(s) totalling {total} of {facts.asset} "
            f"from {facts.wallet} in the last {limit.period_seconds}s, this one included"
        )
        if limit.max_amount is not None and total > limit.max_amount:
            over = WalletLimitExceededError(
                f"wallet limit {limit.name!r}: {total} of {facts.asset} out of {facts.wallet} in "
                f"{limit.period_seconds}s with this withdrawal, over {limit.max_amount}",
                details={"limit": limit.name, "total": str(total), "max_amount": str(limit.max_amount)},
            )
            violations.append(over)
            explanation.append(f"refused: {over.message}")
        if limit.max_count is not None and count > limit.max_count:
            many = WalletLimitExceededError(
                f"wallet limit {limit.name!r}: {count} withdrawals of {facts.asset} out of "
                f"{facts.wallet} in {limit.period_seconds}s with this one, over {limit.max_count}",
                details={"limit": limit.name, "count": count, "max_count": limit.max_count},
            )
            violations.append(many)
            explanation.append(f"refused: {many.message}")
        if limit.escalate is not None and total > limit.escalate.above:
            for role, n in limit.escalate.approvals.items():
                required[role] = max(required.get(role, 0), n)
            lock_seconds = max(lock_seconds, limit.escalate.delay_seconds)
            explanation.append(
                f"wallet limit {limit.name!r}: cumulative {total} is above {limit.escalate.above}, "
                f"so at least {_describe_counts(limit.escalate.approvals) or 'the rule approvals'}"
                + (f" and a {limit.escalate.delay_seconds}s delay" if limit.escalate.delay_seconds else "")
                + " apply"
            )
    return _WalletOutcome(tuple(violations), MappingProxyType(required), lock_seconds)


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    match: Match = field(default_factory=Match)
    approvals: Mapping[Role, int]
    request_ttl_seconds: int
    approval_ttl_seconds: int
    # Default true: sending to an address nobody vetted must be a deliberate choice.
    allowlist_only: bool = True
    max_amount: int | None = None
    velocity: Velocity | None = None
    time_lock: TimeLock | None = None
    fees: FeeLimits | None = None
    # How long a signed release may wait for its broadcast to be recorded; None means
    # DEFAULT_RELEASE_TTL_SECONDS.
    release_ttl_seconds: int | None = None

    def __post_init__(self) -> None:
        # parse_policy reports these with field paths; this is the backstop for rules
        # built in code, so no path can produce a rule that skips the custodian.
        approvals = {Role(role): count for role, count in self.approvals.items()}
        problem = _approvals_problem(approvals)
        if problem is not None:
            raise ValueError(f"rule {self.name!r}: {problem}")
        if self.request_ttl_seconds < 1 or self.approval_ttl_seconds < 1:
            raise ValueError(f"rule {self.name!r}: TTLs must be at least 1 second")
        if self.release_ttl_seconds is not None and self.release_ttl_seconds < 1:
            raise ValueError(f"rule {self.name!r}: release_ttl_seconds must be at least 1")
        object.__setattr__(self, "approvals", _ordered_counts(approvals))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "match": self.match.to_json(),
            "approvals": {role.value: count for role, count in self.approvals.items()},
            "allowlist_only": self.allowlist_only,
            "request_ttl_seconds": self.request_ttl_seconds,
            "approval_ttl_seconds": self.approval_ttl_seconds,
        }
        if self.max_amount is not None:
            out["max_amount"] = str(self.max_amount)
        if self.velocity is not None:
            out["velocity"] = {
                "amount": str(self.velocity.amount),
                "period_seconds": self.velocity.period_seconds,
            }
        if self.time_lock is not None:
            out["time_lock"] = {
                "above": str(self.time_lock.above),
                "delay_seconds": self.time_lock.delay_seconds,
            }
        if self.fees is not None:
            out["fees"] = self.fees.to_json()
        if self.release_ttl_seconds is not None:
            out["release_ttl_seconds"] = self.release_ttl_seconds
        return out


@dataclass(frozen=True, kw_only=True)
class MembershipRule:
    """How a membership change (add, remove, rekey a member) is decided.

    ``approvals`` says how many distinct members of the *approving* side a change needs:
    ``{custodian: 2}`` means a manager's proposal needs two custodians, ``{manager: 1}``
    that a custodian's proposal needs one manager. The proposer's own side never counts.
    An approved addition or rekey waits ``delay_seconds``, during which a member of
    either side can veto it; a removal waits ``remove_delay_seconds`` (at once by
    default, because it only takes power away and a lost key must go without delay).
    """

    approvals: Mapping[Role, int]
    delay_seconds: int
    remove_delay_seconds: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "approvals", MappingProxyType(dict(_ordered_counts(self.approvals))))
        for role in (Role.MANAGER, Role.CUSTODIAN):
            if self.approvals.get(role, 0) < 1:
                raise ValueError(f"a membership change needs at least one {role.value} approval")
        if set(self.approvals) - {Role.MANAGER, Role.CUSTODIAN}:
            raise ValueError("only managers and custodians approve membership changes")
        if self.delay_seconds < 0 or self.remove_delay_seconds < 0:
            raise ValueError("membership delays must be >= 0")

    def required(self, proposer_role: Role) -> dict[Role, int]:
        """The quorum a change proposed by a ``proposer_role`` needs (the other side)."""
        side = Role.CUSTODIAN if proposer_role is Role.MANAGER else Role.MANAGER
        return {side: self.approvals[side]}

    def delay_for(self, change: str) -> int:
        return self.remove_delay_seconds if change == "remove" else self.delay_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "approvals": {role.value: count for role, count in self.approvals.items()},
            "delay_seconds": self.delay_seconds,
            "remove_delay_seconds": self.remove_delay_seconds,
        }


def default_membership_rule(change_delay_seconds: int) -> MembershipRule:
    """One approval from the other side, and the policy's own change delay (with veto)
    before an addition or rekey takes effect."""
    return MembershipRule(approvals={Role.MANAGER: 1, Role.CUSTODIAN: 1}, delay_seconds=change_delay_seconds)


def parse_membership(obj: Any, where: str = "policy.membership") -> MembershipRule:
    """The ``membership`` section of a policy document, parsed strictly."""
    check_fields(obj, required=_MEMBERSHIP_FIELDS, optional=_MEMBERSHIP_OPTIONAL, where=where)
    approvals = obj["approvals"]
    path = f"{where}.approvals"
    check_fields(approvals, required=("manager", "custodian"), where=path)
    counts = {
        Role.CUSTODIAN: _int_field(approvals, "custodian", path, minimum=1),
        Role.MANAGER: _int_field(approvals, "manager", path, minimum=1),
    }
    return MembershipRule(
        approvals=counts,
        delay_seconds=_int_field(obj, "delay_seconds", where, minimum=0),
        remove_delay_seconds=(
            _int_field(obj, "remove_delay_seconds", where, minimum=0) if "remove_delay_seconds" in obj else 0
        ),
    )


@dataclass(frozen=True, kw_only=True)
class Policy:
    version: int
    change_delay_seconds: int
    rules: tuple[Rule, ...]
    # Limits over the whole wallet, applied whichever rule matched (structuring).
    wallet_limits: tuple[WalletLimit, ...] = ()
    membership: MembershipRule | None = None
    fees_charged_to: str = "wallet_owner"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "wallet_limits", tuple(self.wallet_limits))
        limit_names = [limit.name for limit in self.wallet_limits]
        if len(set(limit_names)) != len(limit_names):
            raise ValueError("wallet limit names must be unique")
        if not self.rules:
            raise ValueError("a policy needs at least one rule")
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        if self.version < 1 or self.change_delay_seconds < 0:
            raise ValueError("version must be >= 1 and change_delay_seconds >= 0")

    def to_json(self) -> dict[str, Any]:
        """The canonical document: parse_policy(p.to_json()) == p."""
        out: dict[str, Any] = {
            "version": self.version,
            "change_delay_seconds": self.change_delay_seconds,
            "rules": [rule.to_json() for rule in self.rules],
        }
        # Absent when empty, so a policy written before wallet limits keeps its hash.
        if self.wallet_limits:
            out["wallet_limits"] = [limit.to_json() for limit in self.wallet_limits]
        if self.membership is not None:
            out["membership"] = self.membership.to_json()
        if self.fees_charged_to != "wallet_owner":
            out["fees_charged_to"] = self.fees_charged_to
        return out

    def membership_rule(self) -> MembershipRule:
        """The membership section, or the default one when the document has none."""
        if self.membership is not None:
            return self.membership
        return default_membership_rule(self.change_delay_seconds)

    def hash(self) -> str:
        """Hex SHA-256 of the canonical document under the ``policy`` domain."""
        return digest(POLICY_DOMAIN, self.to_json()).hex()


def default_policy() -> Policy:
    """One catch-all rule: a custodian approves, allow-listed destinations only."""
    return Policy(
        version=1,
        change_delay_seconds=86400,
        rules=(
            Rule(
                name="default",
                approvals={Role.CUSTODIAN: 1},
                allowlist_only=True,
                request_ttl_seconds=86400,
                approval_ttl_seconds=3600,
            ),
        ),
    )


# --- strict parsing ------------------------------------------------------------------


def _int_field(obj: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int:
    path = f"{where}.{key}"
    value = obj[key]
    if isinstance(value, float):
        raise FloatNotAllowedError(f"{path}: floating-point numbers are not accepted")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{path} must be an integer")
    if value < minimum:
        raise InputError(f"{path} must be at least {minimum}, got {value}")
    # Canonical JSON only carries integers a double can hold exactly.
    if value > MAX_SAFE_INT:
        raise InputError(f"{path} must be at most {MAX_SAFE_INT}")
    return value


def _amount_field(obj: Mapping[str, Any], key: str, where: str, *, minimum: int = 0) -> int:
    path = f"{where}.{key}"
    value = obj[key]
    if isinstance(value, float):
        raise FloatNotAllowedError(
            f"{path}: floating-point numbers are not accepted; "
            'send amounts as decimal strings of base units, e.g. "1500"'
        )
    amount = parse_amount(value, where=path)
    if amount < minimum:
        raise InvalidAmountError(f"{path} must be at least {minimum}")
    return amount


def _text_field(obj: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str]) -> str:
    path = f"{where}.{key}"
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{path} must be a string")
    if not pattern.fullmatch(value):
        raise InputError(f"{path} {_SPELLING[pattern]}, got {value[:80]!r}")
    return value


def _parse_match(obj: Any, where: str) -> Match:
    check_fields(obj, required=(), optional=_MATCH_FIELDS, where=where)
    texts = {
        key: _text_field(obj, key, where, _IDENTIFIER)
        for key in ("wallet", "chain", "network", "asset")
        if key in obj
    }
    min_amount = _amount_field(obj, "min_amount", where) if "min_amount" in obj else None
    return Match(min_amount=min_amount, **texts)


def _parse_approvals(obj: Any, where: str) -> dict[Role, int]:
    if not isinstance(obj, dict):
        raise InputError(f"{where} must be a JSON object of role: count")
    counts: dict[Role, int] = {}
    for key in sorted(obj, key=str):
        if key == Role.AUDITOR.value:
            raise InputError(f"{where}.auditor: auditors verify, they never approve")
        try:
            role = Role(key)
        except ValueError:
            raise UnknownFieldError(
                f"unknown field(s) in {where}: {key} (the approving roles are custodian, manager)"
            ) from None
        counts[role] = _int_field(obj, key, where, minimum=0)
    if counts.get(Role.CUSTODIAN, 0) < 1:
        raise InputError(
            f"{where}.custodian must be at least 1: a rule that lets a withdrawal go "
            "without a custodian's approval is not dual control"
        )
    return counts


def _parse_velocity(obj: Any, where: str) -> Velocity:
    check_fields(obj, required=("amount", "period_seconds"), where=where)
    return Velocity(
        amount=_amount_field(obj, "amount", where, minimum=1),
        period_seconds=_int_field(obj, "period_seconds", where, minimum=1),
    )


def _parse_time_lock(obj: Any, where: str) -> TimeLock:
    check_fields(obj, required=("above", "delay_seconds"), where=where)
    return TimeLock(
        above=_amount_field(obj, "above", where),
        delay_seconds=_int_field(obj, "delay_seconds", where, minimum=1),
    )


def _parse_rule(obj: Any, where: str) -> Rule:
    check_fields(obj, required=_RULE_REQUIRED, optional=_RULE_OPTIONAL, where=where)
    name = _text_field(obj, "name", where, _RULE_NAME)
    match = _parse_match(obj["match"], f"{where}.match")
    approvals = _parse_approvals(obj["approvals"], f"{where}.approvals")
    allowlist_only = obj.get("allowlist_only", True)
    if not isinstance(allowlist_only, bool):
        raise InputError(f"{where}.allowlist_only must be true or false")
    max_amount = _amount_field(obj, "max_amount", where) if "max_amount" in obj else None
    if max_amount is not None and match.min_amount is not None and max_amount < match.min_amount:
        raise InputError(
            f"{where}.max_amount {max_amount} is below {where}.match.min_amount "
            f"{match.min_amount}: the rule could never allow a withdrawal"
        )
    return Rule(
        name=name,
        match=match,
        approvals=approvals,
        request_ttl_seconds=_int_field(obj, "request_ttl_seconds", where, minimum=1),
        approval_ttl_seconds=_int_field(obj, "approval_ttl_seconds", where, minimum=1),
        allowlist_only=allowlist_only,
        max_amount=max_amount,
        velocity=_parse_velocity(obj["velocity"], f"{where}.velocity") if "velocity" in obj else None,
        time_lock=_parse_time_lock(obj["time_lock"], f"{where}.time_lock") if "time_lock" in obj else None,
        fees=parse_fee_limits(obj["fees"], f"{where}.fees") if "fees" in obj else None,
        release_ttl_seconds=_int_field(obj, "release_ttl_seconds", where, minimum=1)
        if "release_ttl_seconds" in obj
        else None,
    )


def parse_policy(doc: dict[str, Any]) -> Policy:
    """Parse a policy document, refusing anything unknown, ambiguous or unsafe.

    Every refusal names the offending field by its path, e.g. ``policy.rules[1].approvals``.
    """
    where = "policy"
    check_fields(doc, required=_POLICY_FIELDS, optional=_POLICY_OPTIONAL, where=where)
    version = _int_field(doc, "version", where, minimum=1)
    change_delay = _int_field(doc, "change_delay_seconds", where, minimum=0)
    raw_rules = doc["rules"]
    if not isinstance(raw_rules, list):
        raise InputError(f"{where}.rules must be a list of rules")
    if not raw_rules:
        # With first-match-wins an empty list would refuse every withdrawal; saying so
        # when the policy is proposed beats finding out at the first withdrawal.
        raise InputError(
            f"{where}.rules is empty: a policy needs at least one rule "
            '(end with a catch-all rule, "match": {})'
        )
    rules = _parse_named(raw_rules, f"{where}.rules", _parse_rule, "rule")
    wallet_limits = (
        parse_wallet_limits(doc["wallet_limits"], f"{where}.wallet_limits") if "wallet_limits" in doc else ()
    )
    membership = parse_membership(doc["membership"]) if "membership" in doc else None
    fees_charged_to = doc.get("fees_charged_to", "wallet_owner")
    if fees_charged_to not in FEE_PAYERS:
        raise InputError(f"{where}.fees_charged_to must be one of {', '.join(FEE_PAYERS)}")
    return Policy(
        version=version,
        change_delay_seconds=change_delay,
        rules=rules,
        wallet_limits=wallet_limits,
        membership=membership,
        fees_charged_to=fees_charged_to,
    )


# --- evaluating a withdrawal ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WithdrawalFacts:
    """What the manager asked for, after the service validated and normalised it."""

    wallet: str
    chain: str
    network: str
    asset: str
    amount: int
    destination: str
    # The worst-case fee decoded from the transaction; None where it is not known yet
    # (``tandem policy show`` with bare facts).
    fee: Fee | None = None

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 1:
            raise InvalidAmountError("withdrawal amount must be a positive integer of base units")

    @property
    def counted_amount(self) -> int:
        """What counts against limits and velocity: the amount plus the worst-case fee
        when the fee is paid in the asset withdrawn (a token's gas is paid in ETH)."""
        if self.fee is not None and _fold(self.fee.asset) == _fold(self.asset):
            return self.amount + self.fee.amount
        return self.amount


@dataclass(frozen=True, kw_only=True)
class AddressBookEntry:
    """A vetted destination. ``asset`` None means any asset on that chain and network."""

    chain: str
    network: str
    address: str
    label: str
    asset: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AddressBookEntry:
        return cls(
            chain=doc["chain"],
            network=doc["network"],
            address=doc["address"],
            label=doc["label"],
            asset=doc.get("asset"),
        )

    def allows(self, facts: WithdrawalFacts) -> bool:
        return (
            self.chain == facts.chain
            and self.network == facts.network
            and _fold(self.address) == _fold(facts.destination)
            and (self.asset is None or _fold(self.asset) == _fold(facts.asset))
        )


@dataclass(frozen=True, kw_only=True)
class PastWithdrawal:
    """A released or pending withdrawal, counted against velocity limits."""

    wallet: str
    asset: str
    amount: int
    time: int


@dataclass(frozen=True, kw_only=True)
class PolicyDecision:
    """What the policy says about one withdrawal. ``require()`` raises the first refusal."""

    policy_version: int
    policy_hash: str
    rule_name: str | None
    required: Mapping[Role, int]
    request_expires_at: int
    approval_ttl_seconds: int
    time_lock_until: int | None
    violations: tuple[PolicyError, ...]
    explanation: tuple[str, ...]
    release_ttl_seconds: int = DEFAULT_RELEASE_TTL_SECONDS
    fee_warn_bps: int = DEFAULT_FEE_WARN_BPS

    def __post_init__(self) -> None:
        # Even a refusal states a custodian requirement, so code that forgets to check
        # ``allowed`` still cannot reach a release without a custodian.
        required = {Role(role): count for role, count in self.required.items()}
        problem = _approvals_problem(required)
        if problem is not None:
            raise ValueError(f"decision: {problem}")
        object.__setattr__(self, "required", _ordered_counts(required))
        object.__setattr__(self, "violations", tuple(self.violations))
        object.__setattr__(self, "explanation", tuple(self.explanation))

    @property
    def allowed(self) -> bool:
        return not self.violations

    def require(self) -> None:
        if self.violations:
            # A fresh traceback each time: the stored instance may be raised repeatedly.
            raise self.violations[0].with_traceback(None)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "policy_hash": self.policy_hash,
            "rule": self.rule_name,
            "required": {role.value: count for role, count in self.required.items()},
            "request_expires_at": self.request_expires_at,
            "approval_ttl_seconds": self.approval_ttl_seconds,
            "time_lock_until": self.time_lock_until,
            "violations": [violation.to_dict() for violation in self.violations],
            "explanation": list(self.explanation),
            "release_ttl_seconds": self.release_ttl_seconds,
            "fee_warn_bps": self.fee_warn_bps,
        }


def evaluate(
    policy: Policy,
    facts: WithdrawalFacts,
    *,
    now: int,
    address_book: Iterable[AddressBookEntry],
    history: Iterable[PastWithdrawal],
) -> PolicyDecision:
    """Decide what ``facts`` need under ``policy``: the first matching rule wins.

    ``history`` must hold the wallet's released *and* pending withdrawals: leaving out
    pending ones would let several requests inside one window each pass the velocity
    check on its own. (At release the service passes what was released, so signed but
    unbroadcast transactions cannot be stockpiled past a limit.) Each entry's amount
    includes its worst-case fee where that is paid in the same asset.

    Wallet limits (``policy.wallet_limits``) apply on top of whichever rule matched.
    """
    _require_time(now, "now")
    history = tuple(history)
    explanation: list[str] = []
    for rule in policy.rules:
        reasons = rule.match.mismatches(facts)
        if reasons:
            explanation.append(f"rule {rule.name!r} skipped: {'; '.join(reasons)}")
            continue
        return _decide(
            policy,
            rule,
            facts,
            now=now,
            address_book=address_book,
            history=history,
            explanation=explanation,
        )

    refusal = NoMatchingRuleError(
        f"no rule of policy version {policy.version} matches a withdrawal of "
        f"{facts.amount} {facts.asset} from {facts.wallet} on {facts.chain}/{facts.network}",
        details={"policy_version": policy.version},
    )
    explanation.append(f"no rule matched: refused ({refusal.message})")
    # Every field fails closed: expired at once, no approval is ever fresh, and a
    # custodian is still named as required.
    return PolicyDecision(
        policy_version=policy.version,
        policy_hash=policy.hash(),
        rule_name=None,
        required={Role.CUSTODIAN: 1},
        request_expires_at=now,
        approval_ttl_seconds=0,
        time_lock_until=None,
        violations=(refusal,),
        explanation=tuple(explanation),
    )


def _decide(
    policy: Policy,
    rule: Rule,
    facts: WithdrawalFacts,
    *,
    now: int,
    address_book: Iterable[AddressBookEntry],
    history: Sequence[PastWithdrawal],
    explanation: list[str],
) -> PolicyDecision:
    explanation.append(f"rule {rule.name!r} matched (first match wins; later rules not considered)")
    explanation.append(f"requires approvals: {_describe_counts(rule.approvals)} (the requester never counts)")
    violations: list[PolicyError] = []
    violations.extend(_check_fees(rule, facts, explanation))
    violations.extend(_check_max_amount(rule, facts, explanation))
    violations.extend(_check_velocity(rule, facts, now, history, explanation))
    violations.extend(_check_destination(rule, facts, address_book, explanation))
    time_lock_until = _rule_time_lock(rule, facts, now, explanation)
    required: Mapping[Role, int] = rule.approvals
    if policy.wallet_limits:
        wallet = _check_wallet_limits(policy, facts, now=now, history=history, explanation=explanation)
        violations.extend(wallet.violations)
        required = _with_wallet_approvals(rule, wallet, explanation)
        time_lock_until = _with_wallet_lock(time_lock_until, wallet, now, explanation)

    if violations:
        explanation.append(f"refused: {len(violations)} problem(s); approvals cannot override")
    else:
        explanation.append("allowed once the required approvals are in")

    return PolicyDecision(
        policy_version=policy.version,
        policy_hash=policy.hash(),
        rule_name=rule.name,
        required=required,
        request_expires_at=now + rule.request_ttl_seconds,
        approval_ttl_seconds=rule.approval_ttl_seconds,
        time_lock_until=time_lock_until,
        violations=tuple(violations),
        explanation=tuple(explanation),
        release_ttl_seconds=rule.release_ttl_seconds or DEFAULT_RELEASE_TTL_SECONDS,
        fee_warn_bps=DEFAULT_FEE_WARN_BPS
        if rule.fees is None or rule.fees.warn_bps is None
        else rule.fees.warn_bps,
    )


def _with_fee(facts: WithdrawalFacts) -> str:
    counted = facts.counted_amount
    return "" if counted == facts.amount else f" (with its worst-case fee {counted})"


def _check_max_amount(rule: Rule, facts: WithdrawalFacts, explanation: list[str]) -> list[PolicyError]:
    """The amount, counted with its worst-case fee, stays within the rule's maximum."""
    if rule.max_amount is None:
        return []
    counted = facts.counted_amount
    with_fee = _with_fee(facts)
    if counted <= rule.max_amount:
        explanation.append(f"amount {facts.amount}{with_fee} is within the maximum {rule.max_amount}")
        return []
    over = LimitExceededError(
        f"amount {facts.amount}{with_fee} exceeds the rule's maximum {rule.max_amount}",
        details={
            "amount": str(facts.amount),
            "counted": str(counted),
            "max_amount": str(rule.max_amount),
        },
    )
    explanation.append(f"refused: {over.message}")
    return [over]


def _check_velocity(
    rule: Rule,
    facts: WithdrawalFacts,
    now: int,
    history: Sequence[PastWithdrawal],
    explanation: list[str],
) -> list[PolicyError]:
    """What already left the wallet in the rule's window, plus this amount, stays within its limit."""
    if rule.velocity is None:
        return []
    velocity = rule.velocity
    counted = facts.counted_amount
    in_window = _window_sum(facts, velocity.period_seconds, now, history)
    total = in_window + counted
    if total <= velocity.amount:
        explanation.append(
            f"velocity: {in_window} in the last {velocity.period_seconds}s, "
            f"{total} with this withdrawal, limit {velocity.amount}"
        )
        return []
    fast = VelocityExceededError(
        f"velocity limit: {in_window} of {facts.asset} already left wallet "
        f"{facts.wallet} in the last {velocity.period_seconds}s; with {counted} "
        f"more that is {total}, over the rule's limit {velocity.amount}",
        details={
            "window_sum": str(in_window),
            "amount": str(counted),
            "limit": str(velocity.amount),
            "period_seconds": velocity.period_seconds,
        },
    )
    explanation.append(f"refused: {fast.message}")
    return [fast]


def _check_destination(
    rule: Rule,
    facts: WithdrawalFacts,
    address_book: Iterable[AddressBookEntry],
    explanation: list[str],
) -> list[PolicyError]:
    """An allowlist-only rule sends only to a destination on the address book."""
    if not rule.allowlist_only:
        explanation.append("destination not checked: this rule sets allowlist_only to false")
        return []
    # The lowest label of all matching entries, so the explanation does not depend
    # on the order the address book was read in.
    entry = min(
        (e for e in address_book if e.allows(facts)),
        key=lambda e: (e.label, e.address, e.asset or ""),
        default=None,
    )
    if entry is not None:
        explanation.append(f"destination {facts.destination} is on the address book as {entry.label!r}")
        return []
    blocked = DestinationNotAllowedError(
        f"destination {facts.destination} is not on the address book for "
        f"{facts.asset} on {facts.chain}/{facts.network}",
        details={
            "destination": facts.destination,
            "chain": facts.chain,
            "network": facts.network,
            "asset": facts.asset,
        },
    )
    explanation.append(f"refused: {blocked.message}")
    return [blocked]


def _rule_time_lock(rule: Rule, facts: WithdrawalFacts, now: int, explanation: list[str]) -> int | None:
    """An amount above the rule's time-lock threshold cannot be released before the delay."""
    if rule.time_lock is None or facts.amount <= rule.time_lock.above:
        return None
    time_lock_until = now + rule.time_lock.delay_seconds
    explanation.append(
        f"time lock: amount above {rule.time_lock.above}, so no release before "
        f"{time_lock_until} ({rule.time_lock.delay_seconds}s from now)"
    )
    return time_lock_until


def _with_wallet_approvals(rule: Rule, wallet: _WalletOutcome, explanation: list[str]) -> Mapping[Role, int]:
    """A wallet limit can raise, never lower, the approvals the rule requires."""
    if not any(n > rule.approvals.get(role, 0) for role, n in wallet.required.items()):
        return rule.approvals
    required = {
        role: max(rule.approvals.get(role, 0), wallet.required.get(role, 0))
        for role in _ROLE_ORDER
        if rule.approvals.get(role, 0) or wallet.required.get(role, 0)
    }
    explanation.append(f"requires approvals: {_describe_counts(_ordered_counts(required))}")
    return required


def _with_wallet_lock(
    time_lock_until: int | None, wallet: _WalletOutcome, now: int, explanation: list[str]
) -> int | None:
    """A wallet limit can lengthen, never shorten, the time lock."""
    if wallet.lock_seconds and (time_lock_until is None or time_lock_until < now + wallet.lock_seconds):
        time_lock_until = now + wallet.lock_seconds
        explanation.append(f"time lock: no release before {time_lock_until} (wallet limit)")
    return time_lock_until


def _window_sum(
    facts: WithdrawalFacts, period_seconds: int, now: int, history: Iterable[PastWithdrawal]
) -> int:
    """Base units of this wallet and asset moved in the ``period_seconds`` up to ``now``.

    The window is sliding, not calendar-aligned, so splitting a large amount across a
    day boundary gains nothing. Entries dated after ``now`` (clock skew between the
    recorder and the caller) are counted: over-counting refuses, under-counting leaks.
    """
    return sum(past.amount for past in _in_window(facts, period_seconds, now, history))


def _in_window(
    facts: WithdrawalFacts, period_seconds: int, now: int, history: Iterable[PastWithdrawal]
) -> list[PastWithdrawal]:
    asset = _fold(facts.asset)
    return [
        past
        for past in history
        if past.wallet == facts.wallet and _fold(past.asset) == asset and now - past.time < period_seconds
    ]


# --- quorum --------------------------------------------------------------------------


class Approval(NamedTuple):
    member_id: str
    role: Role


def quorum(
    required: Mapping[Role, int],
    approvals: Iterable[tuple[str, Role]],
    *,
    requester: str,
    eligible: Mapping[str, Role],
) -> QuorumResult:
    """Count distinct, eligible members per role toward ``required``: the approval
    engine (:mod:`tandem.core.approvals`) asked with roles only, no times or versions.

    ``eligible`` is the membership *now* (member id -> role): someone removed after the
    request was made is absent from it, so their earlier approval no longer counts.
    """
    return approvals_engine.evaluate(
        approvals_engine.Request(requester=requester, kind="quorum"),
        [approvals_engine.Given(member=m, role=Role(r), at=0) for m, r in approvals],
        membership=approvals_engine.standing_by_role(eligible),
        required=required,
        now=0,
    )


# --- freshness, version, expiry, time lock -------------------------------------------


def check_approval_fresh(*, approved_at: int, approval_ttl_seconds: int, now: int) -> None:
    """An approval is good for ``approval_ttl_seconds`` after it was recorded."""
    expires_at = approved_at + approval_ttl_seconds
    if now >= expires_at:
        raise ExpiredError(
            f"approval expired at {expires_at} ({now - expires_at}s ago); "
            f"approvals are valid for {approval_ttl_seconds}s",
            details={"approved_at": approved_at, "expires_at": expires_at},
        )


def check_policy_version(approved_version: int, current_version: int) -> None:
    """An approval binds the policy it was given under; a changed policy needs a new one."""
    if approved_version != current_version:
        raise PolicyVersionError(
            f"approval was given under policy version {approved_version}, but version "
            f"{current_version} is in force; approve again",
            details={"approved_version": approved_version, "current_version": current_version},
        )


def check_request_expiry(expires_at: int, now: int) -> None:
    if now >= expires_at:
        raise ExpiredError(
            f"request expired at {expires_at} ({now - expires_at}s ago)",
            details={"expires_at": expires_at},
        )


def check_time_lock(time_lock_until: int | None, now: int) -> None:
    if time_lock_until is not None and now < time_lock_until:
        raise TimeLockedError(
            f"time-locked for another {time_lock_until - now}s (until {time_lock_until})",
            details={
                "time_lock_until": time_lock_until,
                "remaining_seconds": time_lock_until - now,
            },
        )


# --- policy changes ------------------------------------------------------------------


def check_policy_successor(current: Policy, proposed: Policy) -> None:
    """A proposed policy must be the next version, so approvals name it unambiguously."""
    if proposed.version != current.version + 1:
        raise PolicyVersionError(
            f"a policy change must have version {current.version + 1}, got {proposed.version}"
        )


@dataclass(frozen=True, kw_only=True)
class PendingChange:
    """An approved policy change waiting out its delay, during which it can be vetoed.

    The delay is the *current* policy's ``change_delay_seconds``: taking it from the
    proposed policy would let a change shorten its own veto window.
    """

    proposed_at: int
    approved_at: int
    effective_at: int
    vetoed: bool = False

    def __post_init__(self) -> None:
        if not self.proposed_at <= self.approved_at <= self.effective_at:
            raise ValueError("need proposed_at <= approved_at <= effective_at")

    @classmethod
    def approved(cls, *, proposed_at: int, approved_at: int, change_delay_seconds: int) -> PendingChange:
        if change_delay_seconds < 0:
            raise ValueError("change_delay_seconds must be >= 0")
        return cls(
            proposed_at=proposed_at,
            approved_at=approved_at,
            effective_at=approved_at + change_delay_seconds,
        )

    def is_effective(self, now: int) -> bool:
        return not self.vetoed and now >= self.effective_at

    def can_veto(self, now: int) -> bool:
        return not self.vetoed and now < self.effective_at

    def veto(self, *, now: int) -> PendingChange:
        """The vetoed change; refused once it has taken effect."""
        if self.vetoed:
            return self
        if now >= self.effective_at:
            raise ExpiredError(
                f"the veto window closed at {self.effective_at}; the change is in force",
                details={"effective_at": self.effective_at},
            )
        return replace(self, vetoed=True)
