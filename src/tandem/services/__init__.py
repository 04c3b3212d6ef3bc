"""Use cases. Each owns its transaction boundary; none knows HTTP or the terminal."""

from __future__ import annotations

from tandem.services.audit import AuditService
from tandem.services.batch import BatchService
from tandem.services.ceremonies import CeremonyService
from tandem.services.keyuse import KeyUseService
from tandem.services.membership import MembershipService
from tandem.services.proofs import ProofService
from tandem.services.withdrawals import WithdrawalService


class Tandem(
    CeremonyService,
    BatchService,
    WithdrawalService,
    ProofService,
    KeyUseService,
    MembershipService,
    AuditService,
):
    """The whole service: one object the API and tests drive."""


__all__ = ["Tandem"]
