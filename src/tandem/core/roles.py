"""Roles: one person, one role, one identity key."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    MANAGER = "manager"
    CUSTODIAN = "custodian"
    AUDITOR = "auditor"


def a_role(role: str) -> str:
    """The role with its article, as a sentence says it: "a manager", "an auditor"."""
    name = str(role)
    return ("an " if name[:1] in "aeiou" else "a ") + name


def parse_role(text: str) -> Role:
    from tandem.errors import InputError

    try:
        return Role(text)
    except ValueError:
        raise InputError(f"unknown role {text!r}; roles are manager, custodian, auditor") from None
