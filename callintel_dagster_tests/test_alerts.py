"""Alerts on real sockets: a loopback webhook server (Teams + Slack payloads) and a loopback SMTP
server that requires STARTTLS. One message per finding and channel, none on a re-run, retries on a
500, no PHI in any payload, and a channel that is down leaves the run green with `failed` rows."""

from __future__ import annotations

import datetime as dt
import json
import re

import dagster as dg
import pandas as pd
import pytest

from callintel_dagster.assets.alerts import DELIVERED_CHECK, alerts_sent
from callintel_dagster.engines.alerts import (
    HEADLINES,
    AlertChannel,
    DeliveryError,
    RateLimiter,
    build_message,
    deliver,
    email_message,
    find_findings,
    slack_payload,
    teams_payload,
)
from callintel_dagster.engines.redaction import find_phi
from callintel_dagster.engines.vocabulary import ALERT_KINDS
from callintel_dagster.resources.alerts import AlertChannels
from callintel_dagster.tables import ALERTS_SENT, FUSED_INSIGHTS
from callintel_dagster_tests.fake_alert_servers import FakeSmtpServer, FakeWebhookServer, free_port

DAY = "2026-11-24"
# Text that must never leave the lakehouse: it sits in columns of `fused_insights` an alert must not copy.
PHI_CANARY = "Mary Johnson, SSN 123-45-6789, DOB March 3 1961"


def _fused_row(call_id: str, agent: str, priority: int, **flags) -> dict:
    return {
        "call_id": call_id, "agent_id": agent, "duration_s": 60.0, "speech_ratio": 0.8, "non_talk_s": 5.0,
        "longest_silence_s": 2.0, "qa_priority": priority, "qa_reasons": json.dumps([PHI_CANARY]),
        "billing_topics": json.dumps([PHI_CANARY]), "text_voice_mismatch": PHI_CANARY, **flags,
    }


FUSED = [
    _fused_row("call-phi-00000001", "agent-1", 40, phi_before_verification=True),
    _fused_row("call-esc-00000002", "agent-2", 85, escalation_requested=True, issue_resolved=False, anger_at_billing=True),
    _fused_row("call-res-00000003", "agent-1", 30, escalation_requested=True, issue_resolved=True),
    _fused_row("call-fine-0000004", "agent-3", 10, missing_recording_disclosure=False),
]
# (call, kind) pairs FUSED should alert on, with the default threshold of 70.
EXPECTED = {
    ("call-phi-00000001", "phi_before_verification"), ("call-esc-00000002", "escalation_unresolved"),
    ("call-esc-00000002", "anger_at_billing"), ("call-esc-00000002", "qa_priority"),
}


def _fused_frame() -> pd.DataFrame:
    frame = FUSED_INSIGHTS.rows(FUSED)
    for flag in ("phi_before_verification", "missing_recording_disclosure", "escalation_requested", "issue_resolved", "anger_at_billing"):
        frame[flag] = frame[flag].astype("boolean")
    return frame.assign(call_date=dt.date.fromisoformat(DAY), run_id="seed")


@pytest.fixture
def seeded(lakehouse):
    outcome = lakehouse.write_validated(FUSED_INSIGHTS, _fused_frame(), [dt.date.fromisoformat(DAY)])
    assert outcome.written, outcome.violation
    return lakehouse


@pytest.fixture
def webhook():
    with FakeWebhookServer() as server:
        yield server


@pytest.fixture
def smtp(tmp_path):
    with FakeSmtpServer(tmp_path) as server:
        yield server


def _channels(webhook, smtp, tmp_path, **overrides) -> AlertChannels:
    config = dict(
        teams_webhook_url=webhook.url("/teams"), slack_webhook_url=webhook.url("/slack"),
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_ca_file=str(smtp.cert_file),
        email_to=["qa-team@example.org"], dashboard_url="https://reports.example.org/callintel",
        backoff_s=0.01, timeout_s=5.0,
    )
    return AlertChannels(**{**config, **overrides})


def _run(lakehouse, channels: AlertChannels) -> dg.ExecuteInProcessResult:
    return dg.materialize([alerts_sent], partition_key=DAY, resources={"lakehouse": lakehouse, "alert_channels": channels})


def _no_phi(text: str) -> None:
    """Only identifiers and scores: no canary, and nothing the PHI detector finds once what an alert
    may carry (call ids, alert ids, the call date, the evidence link, the card schema, the configured
    addresses) is removed."""
    assert "Mary" not in text and "123-45-6789" not in text and "1961" not in text
    allowed = r"[\w.-]+@example\.org|callintel@localhost|call-[a-z]+-\d+|[0-9a-f]{16}|2026-11-\d\d|https?://(?:adaptivecards\.io|x\.example|reports\.example\.org)[^\"\s<>|]*"
    stripped = re.sub(allowed, "", text)
    assert find_phi(stripped) == [], (find_phi(stripped), stripped)


def test_findings_are_the_high_priority_flags_and_messages_carry_no_phi():
    findings = find_findings(_fused_frame(), qa_priority_threshold=70, link_for=lambda c, d: f"https://x.example/{d}#call-{c}")
    assert {(f.call_id, f.kind) for f in findings} == EXPECTED
    assert findings[0].call_id == "call-esc-00000002"  # highest priority first
    assert tuple(HEADLINES) == ALERT_KINDS
    assert {(f.call_id, f.kind) for f in find_findings(_fused_frame(), qa_priority_threshold=30, link_for=lambda c, d: "")} >= {
        ("call-res-00000003", "qa_priority")
    }
    for finding in findings:
        message = build_message(finding)
        card = teams_payload(message)["attachments"][0]["content"]
        assert card["type"] == "AdaptiveCard" and card["actions"][0]["url"] == finding.link
        assert slack_payload(message)["text"] == message.title
        for payload in (json.dumps(teams_payload(message)), json.dumps(slack_payload(message)),
                        email_message(message, "a@example.org", ["b@example.org"]).as_string()):
            _no_phi(payload)


class _Flaky(AlertChannel):
    name = "flaky"

    def __init__(self, errors: list[DeliveryError]):
        self.errors, self.calls = errors, 0

    def send(self, message) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def test_deliver_backs_off_exponentially_and_does_not_retry_a_permanent_failure():
    message = build_message(find_findings(_fused_frame(), qa_priority_threshold=70, link_for=lambda c, d: "l")[0])
    waits: list[float] = []
    flaky = _Flaky([DeliveryError("HTTP 503", transient=True), DeliveryError("HTTP 429", transient=True)])
    assert deliver(flaky, message, max_attempts=4, backoff_s=1.0, sleep=waits.append).status == "sent"
    assert waits == [1.0, 2.0] and flaky.calls == 3
    refused = _Flaky([DeliveryError("HTTP 404", transient=False)])
    outcome = deliver(refused, message, max_attempts=4, backoff_s=1.0, sleep=waits.append)
    assert (outcome.status, outcome.attempts, outcome.error, refused.calls) == ("failed", 1, "HTTP 404", 1)


def test_rate_limiter_waits_once_a_channel_has_used_its_window():
    now, waits = [0.0], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2, 60.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
        now[0] += 1.0
    assert waits == [58.0, 58.0]  # the 3rd send waits for the 1st to leave the window, the 5th for the 3rd


def test_one_alert_per_finding_and_channel_none_on_a_rerun_and_no_phi(seeded, webhook, smtp, tmp_path):
    webhook.fail(500, 1, path="/teams")  # the first Teams post fails and is retried
    result = _run(seeded, _channels(webhook, smtp, tmp_path))
    assert result.success
    sent = seeded.read(ALERTS_SENT)
    assert len(sent) == 3 * len(EXPECTED) and set(sent["status"]) == {"sent"}
    assert set(zip(sent["call_id"], sent["kind"])) == EXPECTED
    assert sorted(sent.loc[sent["channel"] == "teams", "attempts"]) == [1, 1, 1, 2]
    assert len(webhook.bodies("/teams")) == len(webhook.bodies("/slack")) == len(smtp.messages) == len(EXPECTED)
    assert smtp.tls_sessions == len(EXPECTED)
    for payload in [json.dumps(body) for _, body in webhook.requests] + smtp.messages:
        _no_phi(payload)
    assert all("https://reports.example.org/callintel/callintel_2026-11-18_2026-11-24.html#call-" in p
               for p in [json.dumps(b) for _, b in webhook.requests])

    assert _run(seeded, _channels(webhook, smtp, tmp_path)).success  # a re-run of the date
    assert len(webhook.requests) == 2 * len(EXPECTED) and len(smtp.messages) == len(EXPECTED)
    again = seeded.read(ALERTS_SENT)
    assert len(again) == len(sent) and set(again["status"]) == {"sent"}


def test_a_channel_that_is_down_leaves_the_run_green_and_is_retried_on_the_next_run(seeded, webhook, smtp, tmp_path):
    webhook.fail(500, 100, path="/slack")
    smtp.fail("451 4.3.0 Try again later", 1)  # transient: the first e-mail is retried and goes through
    down = _channels(webhook, smtp, tmp_path, slack_webhook_url=None, smtp_host="127.0.0.1", smtp_port=free_port(),
                     teams_webhook_url=webhook.url("/slack"), max_attempts=2)
    result = _run(seeded, down)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks[DELIVERED_CHECK].passed and checks["schema_contract"].passed
    rows = seeded.read(ALERTS_SENT)
    assert set(rows["status"]) == {"failed"} and len(rows) == 2 * len(EXPECTED)
    assert set(rows.loc[rows["channel"] == "teams", "error"]) == {"HTTP 500"}
    assert set(rows.loc[rows["channel"] == "teams", "attempts"]) == {2}
    assert rows.loc[rows["channel"] == "email", "error"].str.startswith("SMTP unreachable").all()
    assert "127.0.0.1" not in " ".join(rows["error"])  # no endpoint (a webhook URL is a secret) in the table

    healed = _channels(webhook, smtp, tmp_path, slack_webhook_url=None)
    assert _run(seeded, healed).success
    rows = seeded.read(ALERTS_SENT)
    assert set(rows["status"]) == {"sent"} and len(rows) == 2 * len(EXPECTED)
    assert len(smtp.messages) == len(EXPECTED) and len(webhook.bodies("/teams")) == len(EXPECTED)


def test_without_channels_findings_are_recorded_as_skipped(seeded):
    result = _run(seeded, AlertChannels())
    assert result.success
    rows = seeded.read(ALERTS_SENT)
    assert set(rows["status"]) == {"skipped"} and set(rows["channel"]) == {"none"} and len(rows) == len(EXPECTED)


def test_demo_catcher_receives_what_the_env_configured_channels_send(tmp_path, monkeypatch):
    from callintel_dagster.definitions import build_resources
    from callintel_dagster.tools.alert_catcher import AlertCatcher

    finding = find_findings(_fused_frame(), qa_priority_threshold=70, link_for=lambda c, d: "file:///d.html#call-x")[0]
    with AlertCatcher(tmp_path / "alerts") as catcher:
        for name, value in catcher.env().items():
            monkeypatch.setenv(name, value)
        channels = build_resources("local")["alert_channels"].process_config_and_initialize().channels()
        assert [c.name for c in channels] == ["teams", "slack", "email"]
        for channel in channels:
            assert deliver(channel, build_message(finding), max_attempts=1, backoff_s=0).status == "sent"
    files = sorted(p.relative_to(tmp_path / "alerts").as_posix() for p in (tmp_path / "alerts").rglob("*.*"))
    assert files == ["email/0003.eml", "webhook/0001-teams.json", "webhook/0002-slack.json"]
    assert "X-CallIntel-Alert-Id: " + finding.alert_id in (tmp_path / "alerts" / "email" / "0003.eml").read_text()
