"""Slack approvals: a Bolt app whose handlers decide proposals, reached over HTTP or Socket Mode.

Both transports end in the same ``slack_bolt.App``. HTTP (``POST /slack/actions``) is a small Starlette
endpoint that verifies the raw body with :mod:`approval.signature` before anything parses it, refuses
malformed payloads and unknown actions with 400, and runs Bolt's (synchronous) dispatch on the event
loop when acknowledging does no I/O, else in the thread pool. Bolt's own request verification is off
because that endpoint already did it (each rule once). Socket Mode needs none (the websocket is opened
with the app-level token); its envelopes are screened the same way before Bolt sees them. Every
listener acknowledges first and decides after, on a small executor: the decision is the store's
compare-and-set, so a second click, a retry or a second replica decides nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr
from slack_bolt import Ack, App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from approval import blocks as bk
from approval import notify, payloads, signature
from approval.decisions import may_decide
from approval.errors import BadSignatureError, MalformedPayloadError, SlackNotConfiguredError
from store import proposals as props

log = logging.getLogger(__name__)

GROUP_CACHE_SECONDS = 60.0
"""How long user-group members are trusted before ``usergroups.users.list`` is asked again."""

SETTLED_SECONDS = 60.0
SETTLED_MAX = 10_000
"""A click on a proposal this process saw decided within a minute is answered without the database."""

NOT_ALLOWED = "You are not one of this proposal's approvers, so your click changed nothing."


class SlackSection(Protocol):
    """The ``slack`` settings section as this module reads it (``service.settings.SlackSettings``)."""

    @property
    def channel(self) -> str | None: ...
    @property
    def approvers(self) -> list[str]: ...
    @property
    def approver_groups(self) -> list[str]: ...
    @property
    def bot_token(self) -> SecretStr | None: ...
    @property
    def signing_secret(self) -> SecretStr | None: ...
    @property
    def app_token(self) -> SecretStr | None: ...
    @property
    def api_url(self) -> str: ...


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


@dataclass(frozen=True)
class SlackConfig:
    """Plain values for the Slack side; ``base_url`` points the Web API elsewhere (the tests' fake)."""

    channel: str | None = None
    approvers: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None
    base_url: str | None = None

    @classmethod
    def from_section(cls, section: SlackSection) -> SlackConfig:
        """The settings section's values (blank secrets are already unset there)."""
        return cls(
            channel=section.channel,
            approvers=tuple(section.approvers),
            approver_groups=tuple(section.approver_groups),
            bot_token=_secret(section.bot_token),
            signing_secret=_secret(section.signing_secret),
            app_token=_secret(section.app_token),
            base_url=section.api_url,
        )


def make_client(token: str, *, base_url: str | None = None, timeout: int = 10) -> WebClient:
    """A Web API client that waits out 429s (``Retry-After``) and retries a dropped connection once."""
    kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
    return WebClient(
        token=token,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1),
            RateLimitErrorRetryHandler(max_retry_count=2),
        ],
        **kwargs,
    )


def client_for(section: SlackSection) -> WebClient | None:
    """The Web API client of the settings, or None without a bot token (then the CLI decides alone).

    For the daemon's jobs and the CLI: ``notify.post_proposal`` once a proposal is stored,
    ``notify.show_decision`` after a decision taken elsewhere, ``notify.expire_and_show`` on a schedule.
    """
    config = SlackConfig.from_section(section)
    if not config.bot_token:
        return None
    return make_client(config.bot_token, base_url=config.base_url)


class Approvers:
    """Who may decide: configured user ids, and members of configured user groups (cached a while).

    A group that cannot be resolved counts as empty until it can (fail closed), and the failure is logged.
    """

    def __init__(
        self,
        client: WebClient,
        users: Sequence[str],
        groups: Sequence[str],
        *,
        max_age: float = GROUP_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.users = frozenset(u for u in users if u.strip())
        self.groups = tuple(g for g in groups if g.strip())
        self._max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._members: frozenset[str] = frozenset()
        self._at = -float("inf")

    def group_members(self) -> frozenset[str]:
        """The members of the configured groups, asked of Slack at most once per ``max_age``."""
        if not self.groups:
            return frozenset()
        with self._lock:
            if self._monotonic() - self._at < self._max_age:
                return self._members
            members: set[str] = set()
            for group in self.groups:
                try:
                    answer = self._client.usergroups_users_list(usergroup=group)
                except SlackClientError as exc:
                    log.warning(
                        "resolving a Slack user group failed", extra={"group": group, "error": str(exc)}
                    )
                    continue
                members.update(str(u) for u in answer.get("users") or [])
            self._members = frozenset(members)
            self._at = self._monotonic()
            return self._members

    def allows(self, user_id: str) -> bool:
        """Whether ``user_id`` may decide (nobody when none is configured)."""
        members = frozenset() if user_id in self.users else self.group_members()
        return may_decide(user_id, approvers=self.users, group_members=members)


class Names:
    """Slack users' display names for the audit trail (``users.info``, remembered per process)."""

    def __init__(self, client: WebClient) -> None:
        self._client = client
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def actor(self, user_id: str) -> str:
        """``"Real Name (U123)"``, or the bare id when Slack does not say."""
        with self._lock:
            if user_id in self._names:
                return self._names[user_id]
        name = None
        try:
            user = self._client.users_info(user=user_id).get("user") or {}
            name = user.get("real_name") or user.get("name")
        except SlackClientError as exc:
            log.warning(
                "users.info failed; the id stands for the name", extra={"user": user_id, "error": str(exc)}
            )
        actor = f"{name} ({user_id})" if name else user_id
        with self._lock:
            self._names[user_id] = actor
        return actor


def _sentence(line: str) -> str:
    """A store error's one line as a sentence for Slack (the names in it keep their case)."""
    return line[:1].upper() + line[1:] + ("" if line.endswith(".") else ".")


def _opens_a_modal(interaction: payloads.ButtonClick | payloads.ModalSubmission) -> bool:
    """Whether acknowledging does I/O: the Reject and Approve-without buttons open their modal first."""
    return isinstance(interaction, payloads.ButtonClick) and interaction.action_id != bk.ACTION_APPROVE


def _first_headers(request: BoltRequest) -> dict[str, str]:
    return {k: v[0] for k, v in request.headers.items() if v}


def _screen_envelope(req: SocketModeRequest) -> None:
    """Raise unless the envelope is an ``interactive`` one carrying one of our interactions."""
    if req.type != "interactive" or not isinstance(req.payload, dict):
        raise MalformedPayloadError(f"unexpected Socket Mode envelope type {req.type!r}")
    payloads.parse_interaction(req.payload)


class _ScreenedSocketMode(SocketModeHandler):
    """Bolt's Socket Mode handler, screening envelopes as the HTTP endpoint screens bodies.

    Only ``interactive`` envelopes carrying one of our interactions reach Bolt (whose built-in
    middleware fails on some malformed payloads); anything else is acknowledged, so Slack does not
    redeliver it, logged, and ignored.
    """

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        """Screen one envelope, then hand it to Bolt."""
        try:
            _screen_envelope(req)
        except MalformedPayloadError as exc:
            log.warning("Socket Mode envelope ignored", extra={"reason": str(exc)})
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        super().handle(client, req)


class SlackApproval:
    """The Bolt app, its handlers, and the two ways clicks reach it."""

    def __init__(
        self,
        config: SlackConfig,
        engine: Engine,
        *,
        clock: Callable[[], dt.datetime],
        client: WebClient | None = None,
        workers: int = 4,
    ) -> None:
        if not config.bot_token:
            raise SlackNotConfiguredError("Slack needs a bot token (TERRITORY_SLACK__BOT_TOKEN)")
        self.config = config
        self.engine = engine
        self.clock = clock
        self.client = client or make_client(config.bot_token, base_url=config.base_url)
        self.approvers = Approvers(self.client, config.approvers, config.approver_groups)
        self.names = Names(self.client)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slack-listener")
        self._socket: SocketModeHandler | None = None
        self._settled: dict[int, tuple[props.ProposalSummary, float]] = {}
        self._warm = False
        self.bolt = App(
            client=self.client,
            # The HTTP endpoint verifies the signature before Bolt sees the body; Socket Mode is unsigned.
            request_verification_enabled=False,
            token_verification_enabled=False,
            ssl_check_enabled=False,
            url_verification_enabled=False,
            process_before_response=True,  # the listeners only acknowledge; the work is queued
            listener_executor=self._executor,
        )
        self.bolt.use(self._screen)
        self.bolt.action(bk.ACTION_APPROVE)(self._later(self._approve_clicked))
        self.bolt.action(bk.ACTION_REJECT)(self._later(self._modal_clicked, first=self._open_reject_modal))
        self.bolt.action(bk.ACTION_APPROVE_WITHOUT)(
            self._later(self._modal_clicked, first=self._open_approve_without_modal)
        )
        self.bolt.view(bk.VIEW_REJECT)(self._later(self._reject_submitted))
        self.bolt.view(bk.VIEW_APPROVE_WITHOUT)(self._later(self._approve_without_submitted))

    # -- transports ----------------------------------------------------------------------------------

    async def http_endpoint(self, request: Request) -> Response:
        """``POST /slack/actions``: verify, screen, then Bolt's dispatch (it answers once acked)."""
        body = await request.body()
        try:
            signature.verify(self.config.signing_secret, request.headers, body, now=self.clock().timestamp())
        except SlackNotConfiguredError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        except BadSignatureError as exc:
            log.warning("Slack request refused", extra={"reason": str(exc)})
            return JSONResponse({"error": "invalid signature", "reason": str(exc)}, status_code=401)
        try:
            interaction = payloads.parse_interaction(payloads.form_payload(body))
        except MalformedPayloadError as exc:
            log.warning("malformed Slack payload", extra={"reason": str(exc)})
            return JSONResponse({"error": str(exc)}, status_code=400)
        bolt_request = BoltRequest(
            body=body.decode("utf-8"),
            headers={k: v for k, v in request.headers.items()},
            context={"interaction": interaction},
        )
        if self._warm and not _opens_a_modal(interaction):
            # Acknowledging an approval or a modal's submission does no I/O (the work is queued):
            # dispatching on the event loop saves a thread hop that, under a burst, was the tail.
            answer: BoltResponse = self.bolt.dispatch(bolt_request)
        else:
            answer = await run_in_threadpool(self.bolt.dispatch, bolt_request)
            self._warm = self._warm or answer.status == 200  # Bolt's one-time auth.test is behind us
        headers = {k: v for k, v in answer.first_headers_without_set_cookie().items()}
        return Response(content=answer.body, status_code=answer.status, headers=headers)

    def start_socket_mode(self) -> bool:
        """Open the Socket Mode connection when an app-level token is configured; True if opened."""
        if not self.config.app_token:
            return False
        handler = _ScreenedSocketMode(self.bolt, app_token=self.config.app_token, web_client=self.client)
        try:
            handler.connect()  # type: ignore[no-untyped-call]
        except SlackApiError as exc:
            error = exc.response.get("error")
            raise SlackNotConfiguredError(
                f"Socket Mode: Slack refused apps.connections.open ({error}); check the app-level token"
            ) from None
        self._socket = handler
        log.info("Slack Socket Mode connected")
        return True

    def close(self) -> None:
        """Close Socket Mode (if open) and let running listeners finish."""
        if self._socket is not None:
            self._socket.close()  # type: ignore[no-untyped-call]
            self._socket = None
        self._executor.shutdown(wait=True)

    # -- the middleware both transports share --------------------------------------------------------

    def _screen(
        self, req: BoltRequest, context: BoltContext, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        """Slack's redeliveries are acknowledged and dropped; anything but our interactions is refused."""
        try:
            retry = signature.retry_number(_first_headers(req))
        except BadSignatureError as exc:
            return BoltResponse(status=400, body=str(exc))
        if retry > 0:
            log.info("Slack redelivery acknowledged without acting", extra={"retry": retry})
            return BoltResponse(status=200, body="")
        if "interaction" not in context:
            try:
                context["interaction"] = payloads.parse_interaction(req.body)
            except MalformedPayloadError as exc:
                log.warning("malformed Slack payload", extra={"reason": str(exc)})
                return BoltResponse(status=400, body=str(exc))
        return next()

    # -- listeners ----------------------------------------------------------------------------------

    def _tell(self, user_id: str, channel: str | None, text: str, proposal_id: int) -> None:
        """An ephemeral message to one user in the proposal's channel (logged when it cannot be sent)."""
        channel = channel or self._stored_channel(proposal_id) or self.config.channel
        if channel is None:
            log.warning("no channel to answer in", extra={"proposal_id": proposal_id, "user": user_id})
            return
        try:
            self.client.chat_postEphemeral(channel=channel, user=user_id, text=text)
        except SlackClientError:
            log.exception("chat.postEphemeral failed", extra={"proposal_id": proposal_id, "user": user_id})

    def _stored_channel(self, proposal_id: int) -> str | None:
        try:
            with self.engine.connect() as conn:
                return props.get_proposal(conn, proposal_id).slack_channel
        except props.ProposalError:
            return None

    def _allowed(self, user_id: str, channel: str | None, proposal_id: int) -> bool:
        if self.approvers.allows(user_id):
            return True
        log.warning(
            "Slack decision refused: not an approver", extra={"proposal_id": proposal_id, "user": user_id}
        )
        self._tell(user_id, channel, NOT_ALLOWED, proposal_id)
        return False

    def _decide(
        self,
        decide: Callable[[Any, str, dt.datetime], object],
        click: payloads.ButtonClick | payloads.ModalSubmission,
        channel: str | None,
        wanted: str,
    ) -> None:
        """Run one compare-and-set decision, then show it on the message or tell the user why not."""
        pid, user_id = click.proposal_id, click.user_id
        known = self._settled.get(pid)
        if known is not None and time.monotonic() - known[1] < SETTLED_SECONDS:
            # Already decided (a proposal never returns to proposed): no database round trip.
            self._tell(user_id, channel, _sentence(str(props.WrongStateError(known[0], wanted))), pid)
            return
        actor = self.names.actor(user_id)
        try:
            with self.engine.begin() as conn:
                decide(conn, actor, self.clock())
        except props.ProposalError as exc:
            if isinstance(exc, props.WrongStateError):
                if len(self._settled) > SETTLED_MAX:
                    self._settled.clear()
                self._settled[pid] = (exc.proposal, time.monotonic())
            log.info(
                "Slack decision not taken", extra={"proposal_id": pid, "user": user_id, "reason": str(exc)}
            )
            self._tell(user_id, channel, _sentence(str(exc)), pid)
            return
        log.info("proposal decided in Slack", extra={"proposal_id": pid, "user": user_id})
        try:
            notify.show_decision(self.engine, self.client, pid)
        except SlackClientError:
            log.exception("chat.update after a decision failed", extra={"proposal_id": pid})

    # Each listener acknowledges (and, for the modal buttons, opens the modal while its trigger_id is
    # fresh) before Bolt answers, then hands the rest to the listener executor: a burst of clicks
    # queues decisions, never acknowledgements. (Bolt's lazy listeners would do the same but deep-copy
    # the whole request per click, which is most of an acknowledgement's cost.)

    def _later(
        self, work: Callable[[Any], None], *, first: Callable[[Any], None] | None = None
    ) -> Callable[[Ack, BoltContext], None]:
        def listener(ack: Ack, context: BoltContext) -> None:
            ack()
            interaction = context["interaction"]
            if first is not None:
                first(interaction)
            self._executor.submit(self._run, work, interaction)

        return listener

    def _run(self, work: Callable[[Any], None], interaction: Any) -> None:
        try:
            work(interaction)
        except Exception:
            log.exception(
                "a Slack interaction's handler failed",
                extra={"proposal_id": getattr(interaction, "proposal_id", None)},
            )

    def _approve_clicked(self, click: payloads.ButtonClick) -> None:
        if not self._allowed(click.user_id, click.channel_id, click.proposal_id):
            return
        self._decide(
            lambda conn, actor, now: props.approve(conn, click.proposal_id, actor=actor, now=now),
            click,
            click.channel_id,
            "approved",
        )

    def _open(self, click: payloads.ButtonClick, view: dict[str, Any]) -> None:
        try:
            self.client.views_open(trigger_id=click.trigger_id, view=view)
        except SlackClientError as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            log.warning("views.open failed", extra={"proposal_id": click.proposal_id, "error": error})
            text = f"The dialog could not be opened ({error}); click the button again."
            self._executor.submit(self._tell, click.user_id, click.channel_id, text, click.proposal_id)

    def _proposed(self, proposal_id: int) -> bool:
        """Whether the proposal can still be decided (one indexed read, before a modal opens)."""
        try:
            with self.engine.connect() as conn:
                return props.get_proposal(conn, proposal_id).state == "proposed"
        except props.ProposalError:
            return False

    def _open_reject_modal(self, click: payloads.ButtonClick) -> None:
        # The trigger_id expires 3 s after the click: the modal opens before anything slow happens.
        if self.approvers.allows(click.user_id) and self._proposed(click.proposal_id):
            self._open(click, bk.reject_modal(click.proposal_id))

    def _open_approve_without_modal(self, click: payloads.ButtonClick) -> None:
        if not self.approvers.allows(click.user_id):
            return
        try:
            summary, view = notify.load_view(self.engine, click.proposal_id)
        except props.ProposalError:
            return  # the queued half tells the user
        if summary.state == "proposed":
            self._open(click, bk.approve_without_modal(click.proposal_id, view.moves))

    def _modal_clicked(self, click: payloads.ButtonClick) -> None:
        """After a modal button: an outsider is told no, a decided or unknown proposal says so."""
        if not self._allowed(click.user_id, click.channel_id, click.proposal_id):
            return
        wanted = "rejected" if click.action_id == bk.ACTION_REJECT else "approved"
        try:
            with self.engine.connect() as conn:
                summary = props.get_proposal(conn, click.proposal_id)
        except props.ProposalError as exc:
            self._tell(click.user_id, click.channel_id, _sentence(str(exc)), click.proposal_id)
            return
        if summary.state != "proposed":
            refusal = str(props.WrongStateError(summary, wanted))
            self._tell(click.user_id, click.channel_id, _sentence(refusal), click.proposal_id)

    def _reject_submitted(self, sub: payloads.ModalSubmission) -> None:
        if not self._allowed(sub.user_id, None, sub.proposal_id):
            return
        self._decide(
            lambda conn, actor, now: props.reject(
                conn, sub.proposal_id, actor=actor, now=now, reason=sub.reason
            ),
            sub,
            None,
            "rejected",
        )

    def _approve_without_submitted(self, sub: payloads.ModalSubmission) -> None:
        if not self._allowed(sub.user_id, None, sub.proposal_id):
            return
        self._decide(
            lambda conn, actor, now: props.approve(
                conn,
                sub.proposal_id,
                actor=actor,
                now=now,
                except_accounts=sub.excluded_accounts,
                reason=sub.reason,
            ),
            sub,
            None,
            "approved",
        )


class NotConfigured:
    """The Slack surface without settings: ``POST /slack/actions`` answers 503; the CLI decides."""

    async def http_endpoint(self, request: Request) -> Response:
        """503 "not configured"."""
        return JSONResponse({"error": "Slack is not configured"}, status_code=503)

    def start_socket_mode(self) -> bool:
        """Nothing to open."""
        return False

    def close(self) -> None:
        """Nothing to close."""


def surface(
    section: SlackSection, engine: Engine, *, clock: Callable[[], dt.datetime]
) -> SlackApproval | NotConfigured:
    """The Bolt app when a bot token and a way in (signing secret or app token) are set, else 503s."""
    config = SlackConfig.from_section(section)
    if not config.bot_token or not (config.signing_secret or config.app_token):
        return NotConfigured()
    return SlackApproval(config, engine, clock=clock)
