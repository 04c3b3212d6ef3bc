"""The console's pages (Starlette + Jinja2, server-side rendered, no front-end build).

Every handler runs behind :class:`tandem.console.guard.Guard`; every form carries the
run's CSRF token, checked here before anything is signed. The key is unlocked once per
run with the passphrase (a page form) and kept in memory only (``ConsoleState``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tandem.client import RemoteError
from tandem.client import ceremony as cc
from tandem.client import log as client_log
from tandem.client import withdrawal as cw
from tandem.console import pages, proofs
from tandem.console.guard import Guard
from tandem.console.state import ConsoleState
from tandem.core import keygen
from tandem.core.identity import MemberSecrets
from tandem.errors import Error

HERE = Path(__file__).parent
T = TypeVar("T")

# Stable codes a person meets most, in words; the code is always shown beside them.
FRIENDLY = {
    "totp_invalid": "The TOTP code was not accepted. Type the 6 digits your authenticator app shows now.",
    "totp_replayed": "That TOTP code was already used. Wait for the next code (at most 30 seconds) "
    "and type it.",
    "totp_locked": "Too many wrong TOTP codes: the second factor is locked for a while.",
    "totp_throttled": "Too many TOTP attempts in a short time: wait a minute and try again.",
    "expired": "This request has expired: it can no longer be approved. The requester makes a new one.",
    "fingerprint_mismatch": "The fingerprint you typed is not this request's. Do not approve: call the "
    "requester back on a known number and compare again.",
    "request_changed": "The request changed after you reviewed it. Review it again before approving.",
    "self_approval": "You requested this yourself; the other side must approve it.",
    "role_not_allowed": "Your role may not do this.",
    "invalid_state": "The request is no longer in a state that accepts this.",
    "keystore_error": "The keystore could not be opened with that passphrase.",
    "csrf_invalid": "This form is out of date (the console was restarted?). Reload the page and try again.",
    "unreachable": "The Tandem server cannot be reached.",
    "invalid_input": "The input was not accepted.",
}


class ConsoleError(Error):
    """A refusal made by the console itself, before anything is signed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self._code = code

    def diagnostics(self) -> str:
        return f"{self.message} [{self._code}]"

    @property
    def stable_code(self) -> str:
        return self._code


def explain(exc: BaseException) -> dict[str, str]:
    """What a refusal page shows: the words for its code, the code, and the detail."""
    if isinstance(exc, ConsoleError):
        code = exc.stable_code
    elif isinstance(exc, RemoteError):
        code = exc.remote_code
    elif isinstance(exc, Error):
        code = exc.code
    elif isinstance(exc, httpx.HTTPError):
        code = "unreachable"
    else:
        code = "error"
    detail = exc.message if isinstance(exc, Error) else type(exc).__name__
    return {"code": code, "text": FRIENDLY.get(code, detail), "detail": detail}


def normal_fingerprint(text: str) -> str:
    digits = re.sub(r"[^0-9a-f]", "", text.lower())
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def normal_totp(text: str) -> str:
    return re.sub(r"\s", "", text)


def create_console_app(state: ConsoleState) -> Starlette:  # noqa: C901, PLR0915 - page handlers as closures over one state
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    deployment_cache: dict[str, Any] = {}

    def deployment_info() -> dict[str, Any]:
        if not deployment_cache:
            try:
                deployment_cache.update(state.client.deployment())
            except (Error, httpx.HTTPError):
                return {}
        return deployment_cache

    def render(
        request: Request,
        template: str,
        *,
        status: int = 200,
        member: MemberSecrets | None = None,
        **ctx: Any,
    ) -> Response:
        info = deployment_info()
        base = {
            "csrf": state.csrf,
            "member": member,
            "deployment": info.get("deployment", "no deployment"),
            "entity": info.get("entity", ""),
            "server": str(state.client.http.base_url),
            "idle_minutes": state.idle_seconds // 60,
        }
        return templates.TemplateResponse(request, template, {**base, **ctx}, status_code=status)

    async def work(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    async def checked_form(request: Request) -> FormData:
        form = await request.form()
        offered = form.get("csrf")
        if not state.csrf_ok(offered if isinstance(offered, str) else None):
            raise ConsoleError("csrf_invalid", "the form's CSRF token is not this run's")
        return form

    def field(form: FormData, name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    def locked(request: Request) -> Response:
        # After unlocking, a GET returns to its page; a form sent while locked is not
        # replayed (it is read again from the queue).
        target = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/unlock?next={target}", status_code=303)

    def failure(
        request: Request, exc: BaseException, member: MemberSecrets | None, status: int = 502
    ) -> Response:
        return render(request, "error.html", status=status, member=member, error=explain(exc))

    # --- unlock / lock --------------------------------------------------------------------------

    async def unlock_page(request: Request) -> Response:
        return render(request, "unlock.html", next=_safe_next(request.query_params.get("next")))

    async def unlock(request: Request) -> Response:
        try:
            form = await checked_form(request)
            await work(state.unlock, field(form, "passphrase"))
        except Error as exc:
            return render(
                request,
                "unlock.html",
                status=403,
                error=explain(exc),
                next=_safe_next(request.query_params.get("next")),
            )
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)

    async def lock(request: Request) -> Response:
        try:
            await checked_form(request)
        except Error as exc:
            return failure(request, exc, None, 403)
        state.lock()
        return RedirectResponse("/unlock", status_code=303)

    # --- the queue ---------------------------------------------------------------------------------

    async def home(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        try:
            d = await work(pages.directory, state.client, member)
            q = await work(pages.queue, state.client, member, d)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        return render(request, "queue.html", member=member, q=q, names_warning=d.warning, title="Queue")

    # --- withdrawals -----------------------------------------------------------------------------

    notices = {
        "approved": "Your approval was recorded.",
        "rejected": "You rejected this request.",
    }

    async def withdrawal_context(member: MemberSecrets, wid: str) -> dict[str, Any]:
        def build() -> dict[str, Any]:
            d = pages.directory(state.client, member)
            view = cw.get_withdrawal(state.client, member, wid)
            return pages.withdrawal_review(state.client, member, view, d)

        return await work(build)

    async def withdrawal_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        wid = request.path_params["wid"]
        try:
            r = await withdrawal_context(member, wid)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        notice = notices.get(request.query_params.get("notice", ""))
        return render(
            request, "withdrawal.html", member=member, r=r, notice=notice, title=f"Withdrawal {wid}"
        )

    def approve_one(
        member: MemberSecrets, wid: str, *, totp: str, fingerprint: str, reviewed: tuple[str, str]
    ) -> dict[str, Any]:
        """One fetch, checked against what the page showed, then the member-side approval
        built from that very object."""
        view = cw.get_withdrawal(state.client, member, wid)
        checked = cw.review(view)
        if (checked.intent_hash, checked.tx_digest) != reviewed:
            raise ConsoleError("request_changed", "the request differs from the one reviewed")
        if normal_fingerprint(fingerprint) != checked.fingerprint:
            raise ConsoleError("fingerprint_mismatch", f"the fingerprint typed is not this request's ({wid})")
        return cw.approve_withdrawal(
            state.client,
            member,
            wid,
            totp=normal_totp(totp),
            expected_fingerprint=checked.fingerprint,
            view=view,
        )

    async def withdrawal_approve(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        wid = request.path_params["wid"]
        try:
            form = await checked_form(request)
            await work(
                approve_one,
                member,
                wid,
                totp=field(form, "totp"),
                fingerprint=field(form, "fingerprint"),
                reviewed=(field(form, "intent_hash"), field(form, "tx_digest")),
            )
        except (Error, httpx.HTTPError) as exc:
            try:
                r = await withdrawal_context(member, wid)
            except (Error, httpx.HTTPError) as again:
                return failure(request, again, member)
            return render(
                request,
                "withdrawal.html",
                status=422,
                member=member,
                r=r,
                error=explain(exc),
                title=f"Withdrawal {wid}",
            )
        return RedirectResponse(f"/withdrawals/{wid}?notice=approved", status_code=303)

    async def withdrawal_reject(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        wid = request.path_params["wid"]
        try:
            form = await checked_form(request)
            reason = field(form, "reason")
            if not reason:
                raise ConsoleError("invalid_input", "a rejection says why (it goes into the audit log)")
            await work(cw.reject_withdrawal, state.client, member, wid, reason=reason)
        except (Error, httpx.HTTPError) as exc:
            try:
                r = await withdrawal_context(member, wid)
            except (Error, httpx.HTTPError) as again:
                return failure(request, again, member)
            return render(
                request,
                "withdrawal.html",
                status=422,
                member=member,
                r=r,
                error=explain(exc),
                title=f"Withdrawal {wid}",
            )
        return RedirectResponse(f"/withdrawals/{wid}?notice=rejected", status_code=303)

    # --- proposals (membership, policy, address book) ---------------------------------------------

    def proposal_context(member: MemberSecrets, pid: str) -> dict[str, Any]:
        d = pages.directory(state.client, member)
        p: dict[str, Any] = state.client.get(member, f"/v1/proposals/{pid}")
        ctx: dict[str, Any] = {
            "p": p,
            "summary": pages.proposal_summary(p, d),
            "proposer": d.name(p.get("proposer")),
            "digest": state.client.proposal_digest(p),
            "body_json": json.dumps(p.get("body"), indent=2, sort_keys=True, ensure_ascii=False),
            "approvals": [
                {"who": d.name(a.get("member")), "at": pages.local_time(a.get("at"))}
                for a in p.get("approvals", ())
            ],
            "created": pages.local_time(p.get("created_at")),
            "expires": pages.local_time(p.get("expires_at")),
            "effective": pages.local_time(p.get("effective_at")),
            "time_left": pages.time_left(p.get("expires_at"), state.client.clock()),
            "diff": None,
            "names_warning": d.warning,
        }
        if str(p.get("kind", "")).startswith("policy."):
            current = cw.policy_show(state.client, member)
            ctx["diff"] = pages.policy_diff(current.get("policy"), p["body"].get("policy"))
            ctx["current_version"] = current.get("version")
        return ctx

    async def proposal_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        pid = request.path_params["pid"]
        try:
            ctx = await work(proposal_context, member, pid)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        notice = {"approved": "Your approval was recorded.", "rejected": "You rejected this proposal."}.get(
            request.query_params.get("notice", "")
        )
        return render(request, "proposal.html", member=member, notice=notice, title=f"Proposal {pid}", **ctx)

    def approve_proposal(member: MemberSecrets, pid: str, totp: str, digest: str) -> dict[str, Any]:
        p = state.client.get(member, f"/v1/proposals/{pid}")
        if state.client.proposal_digest(p) != digest:
            raise ConsoleError("request_changed", "the proposal differs from the one reviewed")
        return state.client.approve_proposal(member, pid, totp=normal_totp(totp), proposal=p)

    async def proposal_action(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        pid, action = request.path_params["pid"], request.path_params["action"]
        try:
            form = await checked_form(request)
            if action == "approve":
                await work(approve_proposal, member, pid, field(form, "totp"), field(form, "digest"))
            elif action == "reject":
                reason = field(form, "reason")
                if not reason:
                    raise ConsoleError("invalid_input", "a rejection says why (it goes into the audit log)")
                await work(state.client.reject_proposal, member, pid, reason=reason)
            else:
                raise ConsoleError("invalid_input", f"no such action: {action}")
        except (Error, httpx.HTTPError) as exc:
            try:
                ctx = await work(proposal_context, member, pid)
            except (Error, httpx.HTTPError) as again:
                return failure(request, again, member)
            return render(
                request,
                "proposal.html",
                status=422,
                member=member,
                error=explain(exc),
                title=f"Proposal {pid}",
                **ctx,
            )
        done = "approved" if action == "approve" else "rejected"
        return RedirectResponse(f"/proposals/{pid}?notice={done}", status_code=303)

    # --- ceremonies ------------------------------------------------------------------------------------

    def ceremony_context(member: MemberSecrets, cid: str) -> dict[str, Any]:
        d = pages.directory(state.client, member)
        view = cc.get_ceremony(state.client, member, cid)
        problem = None
        digest = None
        try:
            digest = cc.local_digest(view) if view.get("kind") != "import" else None
        except Error as exc:
            problem = exc.diagnostics()
        return {
            "c": view,
            "digest": digest,
            "problem": problem,
            "proposer": d.name(view.get("proposer")),
            "approvals": [d.name(a) for a in view.get("approvals", ())],
            "expires": pages.local_time(view.get("expires_at")),
            "time_left": pages.time_left(view.get("expires_at"), state.client.clock()),
            "names_warning": d.warning,
        }

    async def ceremony_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        cid = request.path_params["cid"]
        try:
            ctx = await work(ceremony_context, member, cid)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        notice = {"approved": "Your approval was recorded.", "rejected": "You rejected this ceremony."}.get(
            request.query_params.get("notice", "")
        )
        return render(request, "ceremony.html", member=member, notice=notice, title=f"Ceremony {cid}", **ctx)

    def approve_ceremony(member: MemberSecrets, cid: str, totp: str, digest: str) -> dict[str, Any]:
        view = cc.get_ceremony(state.client, member, cid)
        if view.get("kind") != "import" and cc.local_digest(view) != digest:
            raise ConsoleError("request_changed", "the ceremony differs from the one reviewed")
        contribution = keygen.make_contribution() if view["kind"] == "keygen" else None
        store = cc.ContributionStore(state.keystore.resolve().parent)
        if contribution is not None:
            store.save(cid, member.member_id, contribution)
        try:
            return cc.approve_ceremony(
                state.client, member, cid, totp=normal_totp(totp), contribution=contribution, view=view
            )
        except Error:
            if contribution is not None:
                store.forget(cid, member.member_id)
            raise

    async def ceremony_action(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        cid, action = request.path_params["cid"], request.path_params["action"]
        try:
            form = await checked_form(request)
            if action == "approve":
                await work(approve_ceremony, member, cid, field(form, "totp"), field(form, "digest"))
            elif action == "reject":
                reason = field(form, "reason")
                if not reason:
                    raise ConsoleError("invalid_input", "a rejection says why (it goes into the audit log)")
                await work(cc.reject_ceremony, state.client, member, cid, reason=reason)
            else:
                raise ConsoleError("invalid_input", f"no such action: {action}")
        except (Error, httpx.HTTPError) as exc:
            try:
                ctx = await work(ceremony_context, member, cid)
            except (Error, httpx.HTTPError) as again:
                return failure(request, again, member)
            return render(
                request,
                "ceremony.html",
                status=422,
                member=member,
                error=explain(exc),
                title=f"Ceremony {cid}",
                **ctx,
            )
        done = "approved" if action == "approve" else "rejected"
        return RedirectResponse(f"/ceremonies/{cid}?notice={done}", status_code=303)

    # --- batch approval -------------------------------------------------------------------------------

    async def batch_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)

        def build() -> list[dict[str, Any]]:
            d = pages.directory(state.client, member)
            out = []
            for w in cw.list_withdrawals(state.client, member, status="pending"):
                view = cw.get_withdrawal(state.client, member, w["id"])
                r = pages.withdrawal_review(state.client, member, view, d)
                if r["ok"] and not r["approved_by_me"] and view["requester"] != member.member_id:
                    out.append(r)
            return out

        try:
            rows = await work(build)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        return render(request, "batch.html", member=member, rows=rows, title="Batch review")

    # --- audit log ----------------------------------------------------------------------------------

    def audit_rows(member: MemberSecrets, params: dict[str, str]) -> dict[str, Any]:
        lines, checkpoint = state.client.audit_export(member)
        pin = state.client.pinned(member)
        verified: str | None = None
        problem: str | None = None
        try:
            client_log.verify_log(lines, checkpoint, genesis_hash_pin=pin.genesis_hash)
            verified = (
                f"verified: {len(lines)} entries chain from the pinned genesis to the signed checkpoint"
            )
        except Error as exc:
            problem = exc.diagnostics()
        d = pages.directory(state.client, member)
        entries = [json.loads(line) for line in lines]
        kinds = sorted({str(e.get("kind")) for e in entries})
        actors = sorted({str(e.get("actor")) for e in entries if e.get("actor")})
        q = params.get("q", "").lower()
        since = _parse_time(params.get("since", ""))
        until = _parse_time(params.get("until", ""))
        shown = []
        for e, line in zip(entries, lines, strict=True):
            if params.get("kind") and e.get("kind") != params["kind"]:
                continue
            if params.get("actor") and e.get("actor") != params["actor"]:
                continue
            if params.get("outcome") and e.get("outcome") != params["outcome"]:
                continue
            if since is not None and int(e.get("time", 0)) < since:
                continue
            if until is not None and int(e.get("time", 0)) > until:
                continue
            if q and q not in line.lower():
                continue
            shown.append(
                {
                    "index": e.get("index"),
                    "time": pages.local_time(e.get("time")),
                    "time_raw": e.get("time"),
                    "kind": e.get("kind"),
                    "actor": d.name(e.get("actor")) if e.get("actor") else "service",
                    "actor_id": e.get("actor"),
                    "outcome": e.get("outcome"),
                    "code": e.get("code") or "",
                    "summary": _audit_summary(e, d),
                    "hash": e.get("hash"),
                }
            )
        return {
            "entries": shown,
            "total": len(entries),
            "kinds": kinds,
            "actors": [(a, d.name(a)) for a in actors],
            "verified": verified,
            "problem": problem,
            "params": params,
        }

    def audit_params(request: Request) -> dict[str, str]:
        keys = ("q", "kind", "actor", "outcome", "since", "until")
        return {k: request.query_params.get(k, "").strip() for k in keys}

    async def audit_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        params = audit_params(request)
        try:
            ctx = await work(audit_rows, member, params)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        return render(
            request, "audit.html", member=member, title="Audit log", export_query=_query(params), **ctx
        )

    async def audit_csv(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        try:
            ctx = await work(audit_rows, member, audit_params(request))
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(
            [
                "index",
                "time_utc_unix",
                "time_local",
                "kind",
                "actor",
                "actor_id",
                "outcome",
                "code",
                "summary",
                "hash",
            ]
        )
        for e in ctx["entries"]:
            writer.writerow(
                [
                    _csv_cell(str(e[k] if e[k] is not None else ""))
                    for k in (
                        "index",
                        "time_raw",
                        "time",
                        "kind",
                        "actor",
                        "actor_id",
                        "outcome",
                        "code",
                        "summary",
                        "hash",
                    )
                ]
            )
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="tandem-audit.csv"'},
        )

    # --- proofs --------------------------------------------------------------------------------------

    async def proofs_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        try:
            ctx = await work(proofs.listing, state.client, member)
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        return render(request, "proofs.html", member=member, title="Proof challenges", **ctx)

    async def proof_page(request: Request) -> Response:
        member = state.member()
        if member is None:
            return locked(request)
        try:
            ctx = await work(proofs.detail, state.client, member, request.path_params["pcid"])
        except (Error, httpx.HTTPError) as exc:
            return failure(request, exc, member)
        return render(
            request, "proof.html", member=member, title=f"Proof {request.path_params['pcid']}", **ctx
        )

    async def favicon(request: Request) -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    routes = [
        Route("/", home),
        Route("/unlock", unlock_page, methods=["GET"]),
        Route("/unlock", unlock, methods=["POST"]),
        Route("/lock", lock, methods=["POST"]),
        Route("/withdrawals/{wid}", withdrawal_page, methods=["GET"]),
        Route("/withdrawals/{wid}/approve", withdrawal_approve, methods=["POST"]),
        Route("/withdrawals/{wid}/reject", withdrawal_reject, methods=["POST"]),
        Route("/batch", batch_page, methods=["GET"]),
        Route("/proposals/{pid}", proposal_page, methods=["GET"]),
        Route("/proposals/{pid}/{action}", proposal_action, methods=["POST"]),
        Route("/ceremonies/{cid}", ceremony_page, methods=["GET"]),
        Route("/ceremonies/{cid}/{action}", ceremony_action, methods=["POST"]),
        Route("/audit", audit_page, methods=["GET"]),
        Route("/audit.csv", audit_csv, methods=["GET"]),
        Route("/proofs", proofs_page, methods=["GET"]),
        Route("/proofs/{pcid}", proof_page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Guard, state=state)
    return app


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another origin (``//x``, ``http:``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _parse_time(text: str) -> int | None:
    """A filter bound typed as ISO-8601 (local time if no offset), or empty."""
    if not text:
        return None
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp())


def _query(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v})


def _csv_cell(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _audit_summary(e: dict[str, Any], d: pages.Directory) -> str:
    env = e.get("envelope") or {}
    action = env.get("action") if isinstance(env, dict) else None
    body = action.get("body", {}) if isinstance(action, dict) else {}
    data = e.get("data") or {}
    bits = []
    for key in ("withdrawal", "proposal", "ceremony", "challenge", "keyset", "member", "reason"):
        value = body.get(key) if isinstance(body, dict) else None
        value = value if value is not None else (data.get(key) if isinstance(data, dict) else None)
        if isinstance(value, str):
            bits.append(f"{key} {d.name(value) if key == 'member' else value}")
    return ", ".join(bits)


__all__ = ["ConsoleError", "create_console_app"]
