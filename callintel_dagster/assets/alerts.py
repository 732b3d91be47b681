"""`alerts_sent`: one message per new high-priority finding, to the channels a team configured."""

import datetime as dt

import dagster as dg
import pandas as pd

from callintel_dagster.assets.insights import DASHBOARD_LOOKBACK_DAYS
from callintel_dagster.assets.io import (
    TableReader,
    partition_date,
    table_asset_kwargs,
    write_table,
)
from callintel_dagster.engines.alerts import (
    RateLimiter,
    already_sent,
    build_message,
    deliver,
    delivery_row,
    evidence_link,
    find_findings,
)
from callintel_dagster.engines.dashboard import dashboard_name
from callintel_dagster.resources.alerts import AlertChannels
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import ALERTS_SENT, FUSED_INSIGHTS

DELIVERED_CHECK = "alerts_delivered"
_kwargs = table_asset_kwargs(ALERTS_SENT, reads=[FUSED_INSIGHTS])
_kwargs["check_specs"] = [
    *_kwargs["check_specs"],
    dg.AssetCheckSpec(DELIVERED_CHECK, asset=ALERTS_SENT.name, description="Every alert of the date reached its channel."),
]


@dg.asset(**_kwargs, group_name="insights", kinds={"delta", "python"})
def alerts_sent(context: dg.AssetExecutionContext, lakehouse: Lakehouse, alert_channels: AlertChannels) -> dg.MaterializeResult:
    """After `fused_insights`, one message per new high-priority finding (PHI before verification,
    missing disclosure, unresolved escalation, anger at the billing turn, QA priority over the
    threshold) to each configured channel: call id, agent, date, finding, QA priority and a link to
    the evidence, never a quote. A finding a channel already received is not sent again, so a re-run
    does not alert twice. Delivery is retried with backoff and rate-limited per channel; a channel
    that is down leaves the run green, with `failed` rows here and a failed `alerts_delivered` check."""
    call_date = partition_date(context)
    read = TableReader(context, lakehouse)
    fused = read(FUSED_INSIGHTS, [call_date])
    previous = read(ALERTS_SENT, [call_date])
    dashboard = dashboard_name(call_date - dt.timedelta(days=DASHBOARD_LOOKBACK_DAYS), call_date)
    findings = find_findings(
        fused, qa_priority_threshold=alert_channels.qa_priority_threshold,
        link_for=lambda call_id, _: evidence_link(alert_channels.dashboard_url, call_id, dashboard),
    )
    sent = already_sent(previous)
    kept = previous[previous["status"] == "sent"].drop(columns=["call_date", "run_id"]).to_dict("records")
    rows, now = [], pd.Timestamp.now(tz="UTC")
    channels = alert_channels.channels()
    for channel in channels:
        limiter = RateLimiter(alert_channels.max_per_minute, 60.0)
        for finding in findings:
            if (finding.alert_id, channel.name) in sent:
                continue
            limiter.acquire()
            outcome = deliver(channel, build_message(finding), max_attempts=alert_channels.max_attempts, backoff_s=alert_channels.backoff_s)
            rows.append(delivery_row(finding, channel.name, outcome.status, outcome.attempts, outcome.error, now))
            if outcome.status == "failed":
                context.log.warning(f"alert {finding.alert_id} ({finding.kind}) not delivered to {channel.name}: {outcome.error}")
    if not channels:
        rows = [delivery_row(f, "none", "skipped", 0, "no alert channel configured", now) for f in findings]
    frame = ALERTS_SENT.rows(kept + rows)
    check, written = write_table(context, lakehouse, ALERTS_SENT, frame, [call_date])
    failed = [row for row in rows if row["status"] == "failed"]
    delivered = dg.AssetCheckResult(
        check_name=DELIVERED_CHECK, asset_key=ALERTS_SENT.name, passed=not failed, severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed": len(failed), "failed_channels": dg.MetadataValue.json(sorted({r["channel"] for r in failed}))},
        description=f"{len(failed)} alert(s) not delivered; see the `failed` rows of `alerts_sent`." if failed else None,
    )
    counts = {status: sum(row["status"] == status for row in rows) for status in ("sent", "failed", "skipped")}
    return dg.MaterializeResult(
        metadata={**written, **read.metadata(), "findings": len(findings), "already_sent": len(kept),
                  "channels": dg.MetadataValue.json([c.name for c in channels]), **counts},
        check_results=[check, delivered],
    )
