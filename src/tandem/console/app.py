"""The console's pages (Starlette + Jinja2, server-side rendered, no front-end build).

Every handler runs behind :class:`tandem.console.guard.Guard`; every form carries the
run's CSRF token, checked here before anything is signed. The key is unlocked once per
run with the passphrase (a page form) and kept in memory only (``ConsoleState``).

The requests a member decides on (withdrawals, proposals, ceremonies) are one table,
:data:`tandem.console.reviews.KINDS`: each kind's page and its approve and reject
actions are served by the same two handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tandem.console import audit_view, books, pages, proofs, reviews
from tandem.console.audit_view import csv_cell as _csv_cell
from tandem.console.guard import Guard
from tandem.console.refusal import FRIENDLY, ConsoleError, explain
from tandem.console.reviews import Kind, normal_fingerprint, normal_totp
from tandem.console.state import ConsoleState
from tandem.core.canonical import loads_strict
from tandem.core.identity import MemberSecrets
from tandem.errors import Error

HERE = Path(__file__).parent
T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]
Page = Callable[[Request, MemberSecrets], Awaitable[Response]]
FAILURES = (Error, httpx.HTTPError)
# The register's two pages with a list and forms: template, title, what is listed.
RECONCILIATION = ("reconciliation.html", "Reconciliation", books.report_list)
STATEMENTS = ("statements.html", "Statements", books.statement_list)


async def work(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Member-side calls block (HTTP to the server, key derivation): off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def _fields(form: FormData) -> dict[str, str]:
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


class Console:
    """One run's pages, over one :class:`ConsoleState`."""

    def __init__(self, state: ConsoleState) -> None:
        self.state = state
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self._deployment: dict[str, Any] = {}
        # Statements issued in this run, by PDF hash, for download (newest kept).
        self._issued: dict[str, dict[str, Any]] = {}

    # --- rendering ---------------------------------------------------------------------------

    def deployment_info(self) -> dict[str, Any]:
        if not self._deployment:
            try:
                self._deployment.update(self.state.client.deployment())
            except FAILURES:
                return {}
        return self._deployment

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        member: MemberSecrets | None = None,
        **ctx: Any,
    ) -> Response:
        info = self.deployment_info()
        base = {
            "csrf": self.state.csrf,
            "member": member,
            "deployment": info.get("deployment", "no deployment"),
            "entity": info.get("entity", ""),
            "server": str(self.state.client.http.base_url),
            "idle_minutes": self.state.idle_seconds // 60,
        }
        return self.templates.TemplateResponse(request, template, {**base, **ctx}, status_code=status)

    async def checked_form(self, request: Request) -> FormData:
        form = await request.form()
        offered = form.get("csrf")
        if not self.state.csrf_ok(offered if isinstance(offered, str) else None):
            raise ConsoleError("csrf_invalid", "the form's CSRF token is not this run's")
        return form

    @staticmethod
    def locked(request: Request) -> Response:
        # After unlocking, a GET returns to its page; a form sent while locked is not
        # replayed (it is read again from the queue).
        target = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/unlock?next={target}", status_code=303)

    def failure(
        self, request: Request, exc: BaseException, member: MemberSecrets | None, status: int = 502
    ) -> Response:
        return self.render(request, "error.html", status=status, member=member, error=explain(exc))

    def unlocked(self, page: Page) -> Endpoint:
        """A page for the unlocked member: locked, it sends to the unlock page; a refusal
        or an unreachable server while building it is a readable error page."""

        async def endpoint(request: Request) -> Response:
            member = self.state.member()
            if member is None:
                return self.locked(request)
            try:
                return await page(request, member)
            except FAILURES as exc:
                forged = isinstance(exc, ConsoleError) and exc.stable_code == "csrf_invalid"
                return self.failure(request, exc, member, 403 if forged else 502)

        return endpoint

    # --- unlock / lock -------------------------------------------------------------------------

    async def unlock_page(self, request: Request) -> Response:
        notice = None
        if self.state.locked_for_idle:
            notice = (
                f"The console locked itself after {self.state.idle_seconds // 60} minutes without use: "
                "your key is no longer in its memory. Unlock again to go on where you were."
            )
        return self.render(
            request, "unlock.html", next=_safe_next(request.query_params.get("next")), notice=notice
        )

    async def unlock(self, request: Request) -> Response:
        target = _safe_next(request.query_params.get("next"))
        try:
            form = await self.checked_form(request)
            await work(self.state.unlock, _fields(form).get("passphrase", ""))
        except Error as exc:
            return self.render(request, "unlock.html", status=403, error=explain(exc), next=target)
        return RedirectResponse(target, status_code=303)

    async def lock(self, request: Request) -> Response:
        try:
            await self.checked_form(request)
        except Error as exc:
            return self.failure(request, exc, None, 403)
        self.state.lock()
        return RedirectResponse("/unlock", status_code=303)

    # --- the queue ----------------------------------------------------------------------------

    async def home(self, request: Request, member: MemberSecrets) -> Response:
        def build() -> tuple[pages.Directory, dict[str, Any]]:
            d = pages.directory(self.state.client, member)
            return d, pages.queue(self.state.client, member, d)

        d, q = await work(build)
        return self.render(request, "queue.html", member=member, q=q, names_warning=d.warning, title="Queue")

    # --- withdrawals, proposals, ceremonies: one table -------------------------------------------

    def review_page(self, kind: Kind) -> Page:
        async def page(request: Request, member: MemberSecrets) -> Response:
            oid = request.path_params["id"]
            ctx = await work(kind.context, self.state, member, oid)
            notice = kind.notice(request.query_params.get("notice", ""))
            return self.render(
                request, kind.template, member=member, notice=notice, title=f"{kind.title} {oid}", **ctx
            )

        return page

    def review_action(self, kind: Kind) -> Page:
        async def page(request: Request, member: MemberSecrets) -> Response:
            oid, action = request.path_params["id"], request.path_params["action"]
            # A forged or stale form is refused before the request is even read.
            form = _fields(await self.checked_form(request))
            try:
                if action == "approve":
                    await work(kind.approve, self.state, member, oid, form)
                elif action == "reject":
                    if not form.get("reason"):
                        raise ConsoleError(
                            "invalid_input", "a rejection says why (it goes into the audit log)"
                        )
                    await work(kind.reject, self.state, member, oid, form["reason"])
                else:
                    raise ConsoleError("invalid_input", f"no such action: {action}")
            except FAILURES as exc:
                # Shown again as it is now, with the refusal on top.
                ctx = await work(kind.context, self.state, member, oid)
                return self.render(
                    request,
                    kind.template,
                    status=422,
                    member=member,
                    error=explain(exc, kind.recovery(oid)),
                    title=f"{kind.title} {oid}",
                    **ctx,
                )
            done = "approved" if action == "approve" else "rejected"
            return RedirectResponse(f"{kind.prefix}/{oid}?notice={done}", status_code=303)

        return page

    # --- batch approval --------------------------------------------------------------------------

    async def batch_page(self, request: Request, member: MemberSecrets) -> Response:
        listed = await work(reviews.batch_rows, self.state, member)
        return self.render(request, "batch.html", member=member, title="Batch review", **listed)

    async def batch_approve(self, request: Request, member: MemberSecrets) -> Response:
        error = None
        results: list[dict[str, Any]] = []
        try:
            form = await self.checked_form(request)
            selected = [v for v in form.getlist("withdrawal") if isinstance(v, str)]
            results = await work(reviews.approve_batch, self.state, member, selected, _fields(form))
        except FAILURES as exc:
            error = explain(exc)
        approved = sum(1 for r in results if r["outcome"] == "approved")
        notice = f"{approved} of {len(results)} approved with one TOTP code." if results else None
        listed = await work(reviews.batch_rows, self.state, member)
        return self.render(
            request,
            "batch.html",
            status=422 if error else 200,
            member=member,
            **listed,
            results=results,
            notice=notice,
            error=error,
            title="Batch review",
        )

    # --- audit log ------------------------------------------------------------------------------

    async def audit_page(self, request: Request, member: MemberSecrets) -> Response:
        ctx = await work(audit_view.rows, self.state.client, member, _audit_params(request))
        return self.render(request, "audit.html", member=member, title="Audit log", **ctx)

    async def audit_csv(self, request: Request, member: MemberSecrets) -> Response:
        ctx = await work(audit_view.rows, self.state.client, member, _audit_params(request))
        return Response(
            audit_view.csv_text(ctx["entries"]),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="tandem-audit.csv"'},
        )

    # --- the register: positions, reconciliations, statements -----------------------------------

    async def register_page(self, request: Request, member: MemberSecrets) -> Response:
        ctx = await work(books.positions, self.state.client, member)
        return self.render(request, "register.html", member=member, title="Register", **ctx)

    async def _books_page(
        self,
        request: Request,
        member: MemberSecrets,
        *,
        spec: tuple[str, str, Callable[[Any, MemberSecrets], list[dict[str, Any]]]],
        action: Callable[[FormData], Awaitable[Any]] | None = None,
        key: str = "checked",
    ) -> Response:
        """A register page, after an optional form action whose result is shown on it (a
        refusal is shown as such, with the page as it is)."""
        extra: dict[str, Any] = {}
        status = 200
        if action is not None:
            try:
                form = await self.checked_form(request)
                extra[key] = await action(form)
            except FAILURES as exc:
                extra["error"] = explain(exc)
                status = 422
        template, title, lister = spec
        listed = await work(lister, self.state.client, member)
        return self.render(
            request, template, status=status, member=member, title=title, listed=listed, **extra
        )

    async def reconciliation_page(self, request: Request, member: MemberSecrets) -> Response:
        return await self._books_page(request, member, spec=RECONCILIATION)

    async def reconciliation_run(self, request: Request, member: MemberSecrets) -> Response:
        async def run(form: FormData) -> Any:
            return await work(books.run_reconciliation, self.state.client, member)

        return await self._books_page(request, member, spec=RECONCILIATION, action=run)

    async def reconciliation_verify(self, request: Request, member: MemberSecrets) -> Response:
        async def check(form: FormData) -> Any:
            doc = await _upload(form, "report")
            return await work(books.verify_signed_report, self.state.client, member, loads_strict(doc))

        return await self._books_page(request, member, spec=RECONCILIATION, action=check)

    async def statements_page(self, request: Request, member: MemberSecrets) -> Response:
        return await self._books_page(request, member, spec=STATEMENTS)

    async def statements_issue(self, request: Request, member: MemberSecrets) -> Response:
        async def issue(form: FormData) -> Any:
            f = _fields(form)
            if not f.get("period"):
                raise ConsoleError("invalid_input", "give a period: 2026-Q3 (a quarter) or 2026-07 (a month)")
            done = await work(
                books.issue_statements,
                self.state.client,
                member,
                period=f["period"],
                client_id=f.get("client") or None,
                custodian=f.get("custodian") or "Custodian",
            )
            self._issued[done["pdf_sha256"]] = done
            while len(self._issued) > 20:
                self._issued.pop(next(iter(self._issued)))
            return done

        return await self._books_page(request, member, spec=STATEMENTS, action=issue, key="issued")

    async def statements_verify(self, request: Request, member: MemberSecrets) -> Response:
        async def check(form: FormData) -> Any:
            doc = await _upload(form, "document")
            return await work(books.check_statement, self.state.client, member, doc)

        return await self._books_page(request, member, spec=STATEMENTS, action=check, key="match")

    async def statement_file(self, request: Request, member: MemberSecrets) -> Response:
        done = self._issued.get(request.path_params["sha"])
        ext = request.path_params["ext"]
        if done is None or ext not in ("pdf", "json"):
            raise ConsoleError("not_found", "no statement issued in this console run has that hash")
        return Response(
            done[ext],
            media_type="application/pdf" if ext == "pdf" else "application/json",
            headers={"content-disposition": f'attachment; filename="{done["name"]}.{ext}"'},
        )

    # --- proofs ---------------------------------------------------------------------------------

    async def proofs_page(self, request: Request, member: MemberSecrets) -> Response:
        ctx = await work(proofs.listing, self.state.client, member)
        return self.render(request, "proofs.html", member=member, title="Proof challenges", **ctx)

    async def proof_page(self, request: Request, member: MemberSecrets) -> Response:
        pcid = request.path_params["pcid"]
        ctx = await work(proofs.detail, self.state.client, member, pcid)
        return self.render(request, "proof.html", member=member, title=f"Proof {pcid}", **ctx)

    # --- the routes -------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        u = self.unlocked
        routes: list[BaseRoute] = [
            Route("/", u(self.home)),
            Route("/unlock", self.unlock_page, methods=["GET"]),
            Route("/unlock", self.unlock, methods=["POST"]),
            Route("/lock", self.lock, methods=["POST"]),
            Route("/batch", u(self.batch_page), methods=["GET"]),
            Route("/batch/approve", u(self.batch_approve), methods=["POST"]),
            Route("/audit", u(self.audit_page), methods=["GET"]),
            Route("/audit.csv", u(self.audit_csv), methods=["GET"]),
            Route("/books", u(self.register_page), methods=["GET"]),
            Route("/books/reconciliations", u(self.reconciliation_page), methods=["GET"]),
            Route("/books/reconciliations/run", u(self.reconciliation_run), methods=["POST"]),
            Route("/books/reconciliations/verify", u(self.reconciliation_verify), methods=["POST"]),
            Route("/books/statements", u(self.statements_page), methods=["GET"]),
            Route("/books/statements/issue", u(self.statements_issue), methods=["POST"]),
            Route("/books/statements/verify", u(self.statements_verify), methods=["POST"]),
            Route("/books/statements/{sha}.{ext}", u(self.statement_file), methods=["GET"]),
            Route("/proofs", u(self.proofs_page), methods=["GET"]),
            Route("/proofs/{pcid}", u(self.proof_page), methods=["GET"]),
            Route("/favicon.ico", _favicon, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        for kind in reviews.KINDS:
            routes.append(Route(f"{kind.prefix}/{{id}}", u(self.review_page(kind)), methods=["GET"]))
            routes.append(
                Route(f"{kind.prefix}/{{id}}/{{action}}", u(self.review_action(kind)), methods=["POST"])
            )
        return routes


def create_console_app(state: ConsoleState) -> Starlette:
    console = Console(state)

    async def not_found(request: Request, exc: Exception) -> Response:
        # A mistyped or stale link: a page of the console saying so, not a bare "Not Found".
        missing = ConsoleError("no_such_page", f"this console has no page {request.url.path}")
        return console.failure(request, missing, state.member(), 404)

    app = Starlette(routes=console.routes(), exception_handlers={404: not_found})
    app.add_middleware(Guard, state=state)
    return app


async def _favicon(request: Request) -> Response:
    return RedirectResponse("/static/favicon.svg", status_code=301)


async def _upload(form: FormData, name: str) -> bytes:
    """The bytes of an uploaded file (a form's file field)."""
    value = form.get(name)
    if value is None or isinstance(value, str):
        raise ConsoleError("invalid_input", "choose a file to check")
    data = await value.read()
    if not data:
        raise ConsoleError("invalid_input", "the file chosen is empty")
    return data


def _audit_params(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "").strip() for k in audit_view.PARAMS}


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another origin (``//x``, ``http:``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


__all__ = [
    "FRIENDLY",
    "ConsoleError",
    "_csv_cell",
    "create_console_app",
    "explain",
    "normal_fingerprint",
    "normal_totp",
]
