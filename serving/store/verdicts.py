"""After the visit: caseworkers' verdicts, then referrals to the departments that help."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving import routing
from serving.store.database import chunks
from serving.store.inputs import VerdictInput
from serving.store.lifecycle import Status, check_transition
from serving.store.models import Referral, Verdict
from serving.store.moves import StatusMoves
from serving.store.records import ReferralOutcome, VerdictConflictError


def stored_verdicts(session: Session, alert_ids: Sequence[int]) -> dict[int, Verdict]:
    """The verdicts already recorded for these alerts, by alert id."""
    found: dict[int, Verdict] = {}
    for chunk in chunks(alert_ids):
        query = select(Verdict).where(Verdict.alert_id.in_(chunk))
        found.update((v.alert_id, v) for v in session.scalars(query))
    return found


class VerdictsPart(StatusMoves):
    """The part of `AlertStore` that records verdicts and referrals."""

    def record_verdict(
        self,
        alert_id: int,
        verdict: str,
        *,
        visited_on: date,
        caseworker: str,
        actor: str,
        risk_types: Sequence[str] = (),
        note: str | None = None,
        source_file: str | None = None,
    ) -> bool:
        """Record a caseworker's verdict; True if stored, False if the same one already was."""
        finding = VerdictInput(alert_id, verdict, tuple(risk_types), visited_on, caseworker, note)
        with self.transaction() as session:
            (stored,) = self.record_verdicts_in(
                session, [finding], actor=actor, source_file=source_file
            )
            return stored

    def record_verdicts_in(
        self,
        session: Session,
        verdicts: Sequence[VerdictInput],
        *,
        actor: str,
        source_file: str | None = None,
    ) -> list[bool]:
        """Record verdicts inside the caller's transaction (e.g. a whole feedback file).

        Per verdict: True if stored, False if the identical verdict already was.
        Raises on the first verdict that breaks a rule; the caller's transaction
        then rolls everything back.
        """
        for finding in verdicts:
            problem = finding.problem()
            if problem:
                raise ValueError(f"alert {finding.alert_id}: {problem}")
        ids = [v.alert_id for v in verdicts]
        alerts = self._load_many(session, ids)
        existing = stored_verdicts(session, ids)
        now = self._clock()
        out = []
        for finding in verdicts:
            alert = alerts[finding.alert_id]
            stored = existing.get(finding.alert_id)
            if stored is not None:
                if not finding.same_as(stored):
                    raise VerdictConflictError(
                        f"alert {alert.id} already has a different verdict ({stored.verdict}, "
                        f"visited {stored.visited_on}); corrections are not imported"
                    )
                out.append(False)
                continue
            if finding.visited_on < alert.as_of:
                raise ValueError(
                    f"alert {alert.id}: visited_on {finding.visited_on} is before "
                    f"its as_of {alert.as_of}"
                )
            target = (
                Status.VERIFIED_CONFIRMED
                if finding.verdict == "confirmed"
                else Status.VERIFIED_DISMISSED
            )
            self._move(session, alert, target, actor=actor, note=finding.note, at=now)
            verdict = Verdict(
                alert_id=alert.id,
                verdict=finding.verdict,
                risk_types=list(finding.risk_types),
                visited_on=finding.visited_on,
                caseworker=finding.caseworker,
                note=finding.note or None,
                recorded_at=now,
                source_file=source_file,
            )
            session.add(verdict)
            existing[alert.id] = verdict
            out.append(True)
        return out

    def refer(
        self,
        alert_id: int,
        *,
        referred_on: date,
        actor: str,
        current_assistance: Iterable[str] = (),
    ) -> ReferralOutcome:
        """Refer a confirmed hardship to its departments; never to one already helping.

        Departments come from the routing of the verdict's hardship types.
        `current_assistance` is the household's current programmes and/or
        departments; departments behind them are skipped and reported (possible
        duplicate assistance otherwise). The alert moves to `referred` even when
        every department already helps: the chain is then in their hands.
        """
        assisting = routing.assisting_departments(current_assistance)
        with self.transaction() as session:
            alert = self._load(session, alert_id)
            check_transition(alert.id, alert.status, Status.REFERRED)
            verdict = session.scalar(select(Verdict).where(Verdict.alert_id == alert_id))
            assert verdict is not None  # verified_confirmed is only reached with a verdict
            departments = routing.departments_for(verdict.risk_types)
            to_refer = [d for d in departments if d not in assisting]
            already = tuple(d for d in departments if d in assisting)
            now = self._clock()
            for department in to_refer:
                session.add(
                    Referral(
                        alert_id=alert_id,
                        department=department,
                        programme=None,
                        status="pending",
                        referred_on=referred_on,
                        updated_at=now,
                    )
                )
            note = None
            if already:
                names = "、".join(routing.department_name(d) for d in already)
                note = f"already assisted by {names}: not re-referred"
            self._move(session, alert, Status.REFERRED, actor=actor, note=note, at=now)
        return ReferralOutcome(alert_id, tuple(to_refer), already)

    def update_referral(
        self,
        alert_id: int,
        department: str,
        status: str,
        *,
        programme: str | None = None,
    ) -> None:
        """A department's answer to a referral: granted (with its programme) or declined."""
        if status not in ("pending", "granted", "declined"):
            raise ValueError(f"referral status must be pending, granted or declined: {status!r}")
        if programme is not None and routing.PROGRAMMES[programme].department != department:
            raise ValueError(f"programme {programme!r} is not run by {department!r}")
        with self.transaction() as session:
            referral = session.scalar(
                select(Referral).where(
                    Referral.alert_id == alert_id, Referral.department == department
                )
            )
            if referral is None:
                raise KeyError(f"alert {alert_id} has no referral to {department!r}")
            referral.status = status
            referral.programme = programme or referral.programme
            referral.updated_at = self._clock()
