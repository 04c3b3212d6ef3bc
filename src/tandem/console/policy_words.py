"""A withdrawal policy in sentences, beside its exact JSON: what each rule covers, what it
needs and how long things stay open, with amounts in coins where the asset is known and
durations in days, hours and minutes. Only a reading aid: the diff and the digest signed
are of the document itself."""

from __future__ import annotations

from typing import Any

from tandem import humanize
from tandem.core import policy as core
from tandem.errors import Error


def duration(seconds: int) -> str:
    """``86400`` -> ``24 h``, ``5400`` -> ``1 h 30 min``, ``172800`` -> ``2 days``."""
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if secs or not parts:
        parts.append(f"{secs} s")
    return " ".join(parts)


def _amount(value: int, match: core.Match) -> str:
    if match.asset is not None and match.network is not None:
        shown = humanize.measure(value, match.asset, network=match.network)
        if shown.known:
            return shown.text
    return f"{value:,} base units of the asset"


def _covers(match: core.Match, first: bool) -> str:
    where = [
        f"{label} {value}"
        for label, value in (
            ("wallet", match.wallet),
            ("chain", match.chain),
            ("network", match.network),
            ("asset", match.asset),
        )
        if value is not None
    ]
    text = "withdrawals" + (f" on {', '.join(where)}" if where else "")
    if match.min_amount is not None:
        text += f" of at least {_amount(match.min_amount, match)}"
    if where or match.min_amount is not None:
        return text
    return "every withdrawal" if first else "every withdrawal no rule above covers"


def rule_words(rule: core.Rule, *, first: bool = False) -> str:
    needs = " and ".join(f"{n} {role.value}{'s' if n > 1 else ''}" for role, n in rule.approvals.items() if n)
    bits = [f"covers {_covers(rule.match, first)}", f"needs {needs} to approve"]
    bits.append("only to address-book destinations" if rule.allowlist_only else "to any destination")
    if rule.max_amount is not None:
        bits.append(f"at most {_amount(rule.max_amount, rule.match)} (worst-case fee included)")
    if rule.velocity is not None:
        per = duration(rule.velocity.period_seconds)
        bits.append(f"at most {_amount(rule.velocity.amount, rule.match)} per {per}")
    if rule.time_lock is not None:
        bits.append(
            f"above {_amount(rule.time_lock.above, rule.match)} waits "
            f"{duration(rule.time_lock.delay_seconds)} before release"
        )
    bits.append(
        f"a request stays open {duration(rule.request_ttl_seconds)}, "
        f"an approval counts for {duration(rule.approval_ttl_seconds)}"
    )
    return f"“{rule.name}”: " + "; ".join(bits) + "."


def policy_words(doc: Any) -> list[str]:
    """The policy as sentences, or nothing when it does not parse (the JSON still shows)."""
    try:
        parsed = core.parse_policy(doc)
    except (Error, ValueError, TypeError, KeyError):
        return []
    lines = [f"Version {parsed.version}. The first rule that covers a withdrawal decides it."]
    lines += [rule_words(rule, first=i == 0) for i, rule in enumerate(parsed.rules)]
    if parsed.wallet_limits:
        lines.append(f"{len(parsed.wallet_limits)} wallet limit(s) apply whichever rule decides.")
    lines.append(
        f"A later change to this policy waits {duration(parsed.change_delay_seconds)} after approval "
        "before it takes effect; a custodian can veto it meanwhile."
    )
    return lines
