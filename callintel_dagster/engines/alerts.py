"""Alerts on high-priority findings: what to send, PHI-free messages, and delivery with retries and a
per-channel rate limit (pure Python; no Dagster).

A message is built from identifiers and scores only (call id, agent, call date, finding, QA priority,
a link to the evidence in the dashboard): never a quote, a summary or a transcript, so a chat channel
or a mailbox never holds PHI. Whoever follows the link reads the evidence where access is controlled.

An alert is identified by `alert_id(call_id, kind)`, the same on every run, so the caller can skip
what a channel already received: a re-run of a date, or a restarted daemon, does not alert twice.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import hashlib
import json
import pathlib
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from typing import Literal

import pandas as pd

from .fusion import is_true
from .vocabulary import ALERT_KINDS

# Finding kind -> the headline a reviewer sees. The first four come from flags of `fused_insights`;
# `qa_priority` fires when the priority reaches the configured threshold.
HEADLINES = {
    "phi_before_verification": "PHI disclosed before identity verification",
    "missing_recording_disclosure": "Recording disclosure missing",
    "escalation_unresolved": "Escalation requested and the issue was not resolved",
    "anger_at_billing": "Anger spike at the billing turn",
    "qa_priority": "QA priority at or above the alert threshold",
}
WebhookFlavor = Literal["teams", "slack"]
# Worth another try: the server or the network is momentarily unable (RFC 9110; SMTP 4xx).
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def alert_id(call_id: str, kind: str) -> str:
    """Stable across runs, so a channel that already received it is not sent it again."""
    return hashlib.sha1(f"{call_id}|{kind}".encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One high-priority finding about one call: identifiers and scores only."""

    call_id: str
    call_date: dt.date
    agent_id: str | None
    kind: str
    qa_priority: int
    link: str

    @property
    def alert_id(self) -> str:
        return alert_id(self.call_id, self.kind)


def _kinds(row: dict, qa_priority_threshold: int) -> list[str]:
    kinds = [k for k in ("phi_before_verification", "missing_recording_disclosure", "anger_at_billing") if is_true(row.get(k))]
    if is_true(row.get("escalation_requested")) and not is_true(row.get("issue_resolved")):
        kinds.append("escalation_unresolved")
    if int(row["qa_priority"]) >= qa_priority_threshold:
        kinds.append("qa_priority")
    return sorted(kinds, key=ALERT_KINDS.index)


def find_findings(fused: pd.DataFrame, *, qa_priority_threshold: int, link_for: Callable[[str, dt.date], str]) -> list[Finding]:
    """Every high-priority finding in `fused` (rows of `fused_insights`), highest QA priority first."""
    findings = []
    for row in fused.sort_values(["qa_priority", "call_id"], ascending=[False, True]).to_dict("records"):
        call_date = pd.Timestamp(row["call_date"]).date()
        agent = row.get("agent_id")
        for kind in _kinds(row, qa_priority_threshold):
            findings.append(Finding(
                call_id=row["call_id"], call_date=call_date, agent_id=agent if isinstance(agent, str) else None,
                kind=kind, qa_priority=int(row["qa_priority"]), link=link_for(row["call_id"], call_date),
            ))
    return findings


@dataclasses.dataclass(frozen=True)
class AlertMessage:
    """What every channel renders: a headline, labelled facts and the evidence link."""

    alert_id: str
    title: str
    facts: tuple[tuple[str, str], ...]
    link: str

    def text(self) -> str:
        lines = [self.title, *(f"{name}: {value}" for name, value in self.facts), f"Evidence: {self.link}"]
        return "\n".join(lines)


def build_message(finding: Finding) -> AlertMessage:
    return AlertMessage(
        alert_id=finding.alert_id,
        title=f"CallIntel: {HEADLINES[finding.kind]}",
        facts=(
            ("Call", finding.call_id), ("Agent", finding.agent_id or "unknown"),
            ("Call date", finding.call_date.isoformat()), ("Finding", finding.kind),
            ("QA priority", str(finding.qa_priority)), ("Alert id", finding.alert_id),
        ),
        link=finding.link,
    )


def teams_payload(message: AlertMessage) -> dict:
    """An Adaptive Card in the envelope Teams incoming webhooks (Workflows) accept."""
    card = {
        "type": "AdaptiveCard", "version": "1.4", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "body": [
            {"type": "TextBlock", "text": message.title, "weight": "Bolder", "wrap": True},
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in message.facts]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "Open the evidence", "url": message.link}],
    }
    return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}


def slack_payload(message: AlertMessage) -> dict:
    """A Slack incoming-webhook message: `text` for notifications, blocks for the layout."""
    facts = "\n".join(f"*{name}:* {value}" for name, value in message.facts)
    return {
        "text": message.title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": message.title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{message.link}|Open the evidence>"}},
        ],
    }


def email_message(message: AlertMessage, sender: str, recipients: Iterable[str]) -> EmailMessage:
    email = EmailMessage()
    email["Subject"] = message.title
    email["From"] = sender
    email["To"] = ", ".join(recipients)
    email["X-CallIntel-Alert-Id"] = message.alert_id
    email.set_content(message.text())
    return email


class DeliveryError(Exception):
    """A failed send; `transient` says whether another try may succeed."""

    def __init__(self, reason: str, *, transient: bool):
        super().__init__(reason)
        self.transient = transient


class AlertChannel(abc.ABC):
    """Somewhere a team reads alerts. `send` raises `DeliveryError`, whose text never holds a secret."""

    name: str

    @abc.abstractmethod
    def send(self, message: AlertMessage) -> None: ...


class WebhookChannel(AlertChannel):
    """A Microsoft Teams or Slack incoming webhook (the URL is the secret: it never appears in errors)."""

    def __init__(self, name: str, url: str, flavor: WebhookFlavor, timeout_s: float = 10.0):
        self.name, self._url, self._flavor, self._timeout_s = name, url, flavor, timeout_s

    def send(self, message: AlertMessage) -> None:
        payload = teams_payload(message) if self._flavor == "teams" else slack_payload(message)
        request = urllib.request.Request(
            self._url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"HTTP {exc.code}", transient=exc.code in _TRANSIENT_HTTP) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"unreachable: {type(reason).__name__}", transient=True) from None


class SmtpChannel(AlertChannel):
    """E-mail through an SMTP relay, upgraded with STARTTLS before any credential or message is sent."""

    def __init__(
        self, name: str, host: str, port: int, sender: str, recipients: list[str], *, username: str | None = None,
        password: str | None = None, starttls: bool = True, ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
    ):
        self.name, self._host, self._port, self._sender, self._recipients = name, host, port, sender, recipients
        self._username, self._password, self._starttls = username, password, starttls
        self._ssl_context, self._timeout_s = ssl_context, timeout_s

    def send(self, message: AlertMessage) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as smtp:
                if self._starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                smtp.send_message(email_message(message, self._sender, self._recipients))
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}", transient=400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError("the server does not offer STARTTLS", transient=False) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise DeliveryError(f"SMTP unreachable: {type(exc).__name__}", transient=True) from None


@dataclasses.dataclass(frozen=True)
class Delivery:
    status: Literal["sent", "failed"]
    attempts: int
    error: str | None = None


def deliver(
    channel: AlertChannel, message: AlertMessage, *, max_attempts: int, backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Send with exponential backoff (backoff_s, 2x, 4x …) on transient failures; a permanent failure
    (HTTP 4xx, SMTP 5xx) is not retried. Never raises: the outcome is the result."""
    for attempt in range(1, max_attempts + 1):
        try:
            channel.send(message)
            return Delivery("sent", attempt)
        except DeliveryError as exc:
            if not exc.transient or attempt == max_attempts:
                return Delivery("failed", attempt, str(exc))
            sleep(backoff_s * 2 ** (attempt - 1))
    raise ValueError("max_attempts must be at least 1")


class RateLimiter:
    """At most `max_per_window` sends in any `window_s` seconds on one channel; `acquire` waits."""

    def __init__(
        self, max_per_window: int, window_s: float, *, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._max, self._window_s, self._clock, self._sleep = max_per_window, window_s, clock, sleep
        self._sent: list[float] = []

    def acquire(self) -> None:
        now = self._clock()
        self._sent = [t for t in self._sent if now - t < self._window_s]
        if len(self._sent) >= self._max:
            self._sleep(self._sent[0] + self._window_s - now)
            now = self._clock()
            self._sent = self._sent[1:]
        self._sent.append(now)


def evidence_link(dashboard_url: str, call_id: str, dashboard: str) -> str:
    """The call's row in the dashboard file `dashboard`, under a URL or a local folder."""
    base = dashboard_url if "://" in dashboard_url else pathlib.Path(dashboard_url).resolve().as_uri()
    return f"{base.rstrip('/')}/{dashboard}#call-{call_id}"


def already_sent(previous: pd.DataFrame) -> set[tuple[str, str]]:
    """(alert id, channel) pairs a channel received in an earlier run: they are not sent again."""
    sent = previous[previous["status"] == "sent"]
    return set(zip(sent["alert_id"], sent["channel"]))


def delivery_row(finding: Finding, channel: str, status: str, attempts: int, error: str | None, at: pd.Timestamp) -> dict:
    """One `alerts_sent` row (its payload columns)."""
    return {
        "call_id": finding.call_id, "alert_id": finding.alert_id, "kind": finding.kind, "channel": channel,
        "agent_id": finding.agent_id, "qa_priority": finding.qa_priority, "status": status, "attempts": attempts,
        "error": error, "link": finding.link, "attempted_at": at,
    }
