"""Use cases. Each owns its transaction boundary; none knows HTTP or the terminal."""

from __future__ import annotations

from collections.abc import Callable

from tandem.chainio.config import ChainConfig
from tandem.core.service_key import ServiceKey
from tandem.services.audit import AuditService
from tandem.services.base import Runner
from tandem.services.batch import BatchService
from tandem.services.books import Books
from tandem.services.ceremonies import CeremonyService
from tandem.services.keyuse import KeyUseService
from tandem.services.membership import MembershipService
from tandem.services.policies import PolicyService
from tandem.services.proofs import ProofService
from tandem.services.proposals import ProposalService
from tandem.services.withdrawals import WithdrawalService
from tandem.store.db import Database


class Tandem:
    """The whole service, composed: one runner, then each flow on it, built once.

    Every flow service shares the runner (transactions, signatures, second factors,
    refusals, audit) and is handed the other services it needs, nothing more: the
    withdrawals, ceremonies and proofs the operation keys (``keys``), the batch and the
    books the withdrawals, the proposals the member changes they apply (``members``).
    """

    def __init__(
        self, db: Database, key: ServiceKey, *, clock: Callable[[], int], chains: ChainConfig | None = None
    ) -> None:
        self.runner = Runner(db, key, clock=clock)
        self.keys = KeyUseService(self.runner)
        self.members = MembershipService(self.runner)
        self.proposals = ProposalService(self.runner, self.members)
        self.policies = PolicyService(self.runner)
        self.withdrawals = WithdrawalService(self.runner, self.keys)
        self.batch = BatchService(self.runner, self.withdrawals)
        self.ceremonies = CeremonyService(self.runner, self.keys)
        self.proofs = ProofService(self.runner, self.keys)
        self.audit = AuditService(self.runner)
        self.books = Books(self.runner, self.withdrawals, chains)

    # Read-only views of what the runner holds; set them on the runner.

    @property
    def db(self) -> Database:
        return self.runner.db

    @property
    def key(self) -> ServiceKey:
        return self.runner.key

    @property
    def clock(self) -> Callable[[], int]:
        return self.runner.clock


__all__ = ["Tandem"]
