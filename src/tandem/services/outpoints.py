"""Bitcoin outpoint reservations: an output that one live withdrawal spends is spent by no other.

Two withdrawals over the same outputs are what the segwit v0 fee attack needs (each
release signs its inputs once; witnesses from both combine into one transaction), and
even with honest amounts they are two claims on one coin. So creating a withdrawal
reserves each output it spends, in the same database transaction as the request, in a
table whose primary key is the outpoint: a second reservation cannot be inserted.

A reservation holds while its withdrawal is pending or approved and unexpired, and after
release (its signed transaction may still be in flight). Once the withdrawal is rejected,
cancelled, vetoed, tampered or expired the output is free again: closing releases it,
and an expired holder (expiry is read, never stored) is taken over by the next request.
"""

from __future__ import annotations

from sqlalchemy import and_, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, delete, select

from tandem.core import withdrawal as wcore
from tandem.errors import OutpointReservedError
from tandem.store.models import OutpointReservation, Withdrawal

# Statuses (as read at a time) that free the outputs a withdrawal spent.
FREES = wcore.ENDED_UNSPENT | {wcore.EXPIRED}


def holder_status(session: Session, reservation: OutpointReservation, now: int) -> str | None:
    """The holder's status now, or None when it no longer holds the output."""
    holder = session.get(Withdrawal, reservation.withdrawal)
    if holder is None:
        return None
    status = wcore.effective_status(holder.status, holder.expires_at, now)
    return None if status in FREES else status


def reserve(session: Session, *, withdrawal: Withdrawal, intent: wcore.Intent, now: int) -> None:
    """Reserve every output ``intent`` spends for ``withdrawal``, or refuse the request.
    The reservations are inserted together, each doing nothing where its output is
    reserved already (the primary key decides, inside the request's transaction); only
    then are the existing reservations read, to take over those whose holder no longer
    holds them or to refuse (the intent lists no output twice)."""
    if intent.chain != "bitcoin" or not intent.utxos:
        return
    rows = [
        {
            "network": intent.network,
            "txid": u.txid,
            "vout": u.vout,
            "withdrawal": withdrawal.id,
            "reserved_at": now,
        }
        for u in intent.utxos
    ]
    make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    insert = (
        make(OutpointReservation)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(col(OutpointReservation.vout))
    )
    if len(session.connection().execute(insert).all()) == len(rows):
        return
    query = select(OutpointReservation).where(
        col(OutpointReservation.network) == intent.network,
        col(OutpointReservation.withdrawal) != withdrawal.id,
        or_(
            *(
                and_(col(OutpointReservation.txid) == u.txid, col(OutpointReservation.vout) == u.vout)
                for u in intent.utxos
            )
        ),
    )
    found = {(r.txid, r.vout): r for r in session.exec(query).all()}
    taken = []
    for u in intent.utxos:
        held = found.get((u.txid, u.vout))
        if held is None:
            continue
        status = holder_status(session, held, now)
        if status is not None:
            raise OutpointReservedError(
                f"output {u.txid}:{u.vout} is already spent by withdrawal {held.withdrawal} "
                f"({status}); it can be spent again once that one is rejected, cancelled, "
                "expired or abandoned",
                details={"txid": u.txid, "vout": u.vout, "withdrawal": held.withdrawal},
            )
        session.delete(held)
        taken.append(u)
    session.flush()
    session.add_all(
        OutpointReservation(
            network=intent.network, txid=u.txid, vout=u.vout, withdrawal=withdrawal.id, reserved_at=now
        )
        for u in taken
    )
    # The primary key is checked here, inside the request's transaction.
    session.flush()


def release(session: Session, withdrawal: Withdrawal) -> None:
    """Free the outputs of a withdrawal that ended without a signature."""
    session.exec(delete(OutpointReservation).where(col(OutpointReservation.withdrawal) == withdrawal.id))


def reserved_by(session: Session, withdrawal_id: str) -> list[OutpointReservation]:
    query = select(OutpointReservation).where(col(OutpointReservation.withdrawal) == withdrawal_id)
    return list(session.exec(query).all())
