"""The worked example in docs/policy.md runs and says what the page says it does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tandem.core.canonical import loads_strict
from tandem.core.policy import PolicyDecision, parse_policy

PAGE = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def fenced(language: str) -> list[str]:
    """Bodies of the page's fenced blocks opened with ```<language>, in order."""
    blocks: list[str] = []
    body: list[str] | None = None
    opened_as = ""
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if body is None and line.startswith("```"):
            body, opened_as = [], line[3:].strip()
        elif body is not None and line.strip() == "```":
            if opened_as == language:
                blocks.append("\n".join(body) + "\n")
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def test_worked_example_policy_parses() -> None:
    policy = parse_policy(loads_strict(fenced("json")[1]))
    assert [rule.name for rule in policy.rules] == ["btc-large", "usdc", "default"]


def test_worked_example_explanation_matches_the_page() -> None:
    namespace: dict[str, Any] = {"document": loads_strict(fenced("json")[1])}
    exec(fenced("python")[0], namespace)  # noqa: S102 - our own documentation
    decision = namespace["decision"]
    assert isinstance(decision, PolicyDecision)
    shown = [block for block in fenced("") if block.startswith("rule 'btc-large' matched")]
    assert len(shown) == 1
    assert list(decision.explanation) == shown[0].strip().splitlines()
    assert decision.allowed
    assert decision.time_lock_until == 1_700_003_600
