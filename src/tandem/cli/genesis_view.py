"""What a person reads before signing a genesis: who, which service keys, which policy
and which destinations. The same summary prints when a genesis is drafted, so nobody
meets the defaults for the first time a day after submitting."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from tandem.cli.common import console
from tandem.core.audit import key_id
from tandem.core.identity import IdentityCard
from tandem.core.policy import Policy, Rule, default_policy, parse_policy

DEFAULTS_NOTE = (
    "Why the defaults are what they are: every withdrawal needs one custodian's approval and "
    "may only go to an address-book destination, so nothing leaves for an address nobody "
    "vetted; a policy or address-book change waits {delay} for a custodian's veto, so a "
    "manager's key alone cannot redirect funds overnight."
)
NO_BOOK_NOTE = (
    "The address book is empty: no withdrawal can be made until a destination is added, and "
    "one added after genesis (tandem addressbook propose-add) waits the policy's change delay ({delay}). "
    "To withdraw on the first day, draft again with --address-book FILE (JSON list of "
    "{{chain, network, address, label[, asset]}}); every initial member signs it with genesis "
    "and it is in force at once."
)
DEFAULT_POLICY_NOTE = (
    "No --policy given: the default applies. To start with your own rules or a shorter delay, "
    "draft again with --policy FILE (see docs/policy.md); a later change waits {delay}."
)


def span(seconds: int) -> str:
    """A delay as a person says it: '1 day', '8 s', '2 h 30 min'."""
    if seconds == 0:
        return "no delay"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days} day{'s' if days != 1 else ''}" if days else "",
        f"{hours} h" if hours else "",
        f"{minutes} min" if minutes else "",
        f"{secs} s" if secs else "",
    ]
    return " ".join(p for p in parts if p)


def genesis_policy(genesis: dict[str, Any]) -> tuple[Policy, bool]:
    """The policy genesis puts in force, and whether it is the default."""
    if "policy" in genesis:
        return parse_policy(genesis["policy"]), False
    return default_policy(), True


def _rule_line(rule: Rule) -> str:
    match = rule.match.to_json()
    where = ", ".join(f"{k}={v}" for k, v in sorted(match.items())) or "every withdrawal"
    approvals = ", ".join(
        f"{n} {r.value}" for r, n in sorted(rule.approvals.items(), key=lambda x: x[0].value)
    )
    parts = [f"{rule.name}: {where} -> {approvals}"]
    parts.append("address-book destinations only" if rule.allowlist_only else "any destination")
    if rule.max_amount is not None:
        parts.append(f"at most {rule.max_amount} base units")
    if rule.time_lock is not None:
        parts.append(f"above {rule.time_lock.above} waits {span(rule.time_lock.delay_seconds)}")
    parts.append(f"request valid {span(rule.request_ttl_seconds)}")
    return "; ".join(parts)


def policy_lines(policy: Policy) -> list[str]:
    membership = policy.membership_rule()
    lines = [f"version {policy.version}, hash {policy.hash()}"]
    lines += [f"rule {_rule_line(rule)}" for rule in policy.rules]
    lines.append(
        f"policy and address-book changes wait {span(policy.change_delay_seconds)} (custodians may veto)"
    )
    counts = ", ".join(
        f"{n} {r.value}" for r, n in sorted(membership.approvals.items(), key=lambda x: x[0].value)
    )
    lines.append(
        f"membership changes: approved by the other side ({counts}); an addition or rekey waits "
        f"{span(membership.delay_seconds)}, a removal {span(membership.remove_delay_seconds)} "
        "(either side may veto)"
    )
    return lines


def print_genesis(genesis: dict[str, Any], signatures: dict[str, Any] | None = None) -> None:
    """Everything a signer commits to, in the words they check it by."""
    signed = signatures or {}
    # Plain lines, not tables: an address or fingerprint is never folded, whatever the
    # width, and every text from the file is shown verbatim (escaped, never markup).
    console.print(f"[bold]Genesis of {escape(genesis['deployment'])}[/]")
    console.print(f"  entity         {escape(genesis['entity'])}")
    service = genesis["service"]
    console.print(
        f"  service key    {key_id(bytes.fromhex(service['sign_public']))}  "
        "(signs checkpoints, receives TOTP seeds; compare with what the operator read out)"
    )
    console.print("[bold]Initial members[/] (compare each fingerprint with its owner)")
    cards = [IdentityCard.from_json(raw) for raw in genesis["members"]]
    width = max(len(c.name) for c in cards)
    for card in cards:
        mark = "signed" if card.member_id in signed else "not signed yet"
        console.print(
            f"  {escape(card.name):{width}}  {card.role.value:9}  fingerprint {card.fingerprint}  {mark}"
        )
    policy, is_default = genesis_policy(genesis)
    console.print("[bold]Policy[/]" + (" (the default)" if is_default else ""))
    for line in policy_lines(policy):
        console.print(f"  {escape(line)}")
    book = genesis.get("address_book") or []
    if book:
        console.print("[bold]Address book[/] (in force from genesis, no delay)")
        for entry in book:
            asset = f"  asset {entry['asset']}" if entry.get("asset") else ""
            console.print(
                f"  {escape(entry['label'])}: {entry['chain']} {entry['network']} "
                f"{escape(entry['address'])}{escape(asset)}"
            )
    else:
        console.print("[bold]Address book[/]: empty")
    delay = span(policy.change_delay_seconds)
    if is_default:
        console.print(DEFAULTS_NOTE.format(delay=delay))
        console.print(DEFAULT_POLICY_NOTE.format(delay=delay))
    if not book:
        console.print(NO_BOOK_NOTE.format(delay=delay))
