"""Where alerts go: the channels a team configures (Teams / Slack webhooks, e-mail), and how hard to try."""

from __future__ import annotations

import ssl

import dagster as dg
from pydantic import Field

from callintel_dagster.engines.alerts import AlertChannel, SmtpChannel, WebhookChannel


class AlertChannels(dg.ConfigurableResource):
    """Alert channels and delivery policy. With no channel configured, findings are recorded in
    `alerts_sent` as `skipped` and nothing is sent; the run stays green either way."""

    teams_webhook_url: str | None = Field(default=None, description="Microsoft Teams incoming webhook (Workflows) URL; a secret.")
    slack_webhook_url: str | None = Field(default=None, description="Slack incoming webhook URL; a secret.")
    smtp_host: str | None = Field(default=None, description="SMTP relay host; e-mail is off when unset.")
    smtp_port: int = Field(default=587, description="SMTP submission port.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS before login and sending.")
    smtp_ca_file: str | None = Field(default=None, description="CA bundle to verify the relay's certificate (default: system CAs).")
    smtp_username: str | None = Field(default=None, description="SMTP login (after STARTTLS).")
    smtp_password: str | None = Field(default=None, description="SMTP password; a secret.")
    email_from: str = Field(default="callintel@localhost", description="Sender address of alert e-mails.")
    email_to: list[str] = Field(default_factory=list, description="Recipients of alert e-mails.")
    qa_priority_threshold: int = Field(default=70, ge=0, le=100, description="A call at or above this QA priority is alerted on.")
    dashboard_url: str = Field(
        default="data/dashboards",
        description="Where the dashboards are published (URL or folder); alert links point at a call's evidence there.",
    )
    max_attempts: int = Field(default=4, ge=1, description="Tries per message; transient failures are retried.")
    backoff_s: float = Field(default=2.0, ge=0, description="Wait before the first retry; doubled at each retry.")
    max_per_minute: int = Field(default=20, ge=1, description="At most this many messages per channel per minute.")
    timeout_s: float = Field(default=10.0, gt=0, description="Network timeout of one send.")

    def channels(self) -> list[AlertChannel]:
        channels: list[AlertChannel] = []
        if self.teams_webhook_url:
            channels.append(WebhookChannel("teams", self.teams_webhook_url, "teams", self.timeout_s))
        if self.slack_webhook_url:
            channels.append(WebhookChannel("slack", self.slack_webhook_url, "slack", self.timeout_s))
        if self.smtp_host and self.email_to:
            context = ssl.create_default_context(cafile=self.smtp_ca_file) if self.smtp_starttls else None
            channels.append(SmtpChannel(
                "email", self.smtp_host, self.smtp_port, self.email_from, list(self.email_to),
                username=self.smtp_username, password=self.smtp_password, starttls=self.smtp_starttls,
                ssl_context=context, timeout_s=self.timeout_s,
            ))
        return channels
