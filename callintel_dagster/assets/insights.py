"""`fused_insights` (per call) and `insights_dashboard` (self-contained HTML per date range)."""

import datetime as dt
import shutil

import dagster as dg

from callintel_dagster.assets.io import (
    TableReader,
    partition_dates,
    table_asset_kwargs,
    write_table,
)
from callintel_dagster.engines.dashboard import (
    dashboard_markdown,
    dashboard_name,
    newest_dashboard,
    render_dashboard,
)
from callintel_dagster.engines.fusion import fuse_calls
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.tables import (
    AGENT_VOICE_SAMPLES,
    CALL_TONE,
    COMPLIANCE_FLAGS,
    CONVERSATION_METRICS,
    FUSED_INSIGHTS,
    RAW_CALL_AUDIO,
    SPEECH_ACTIVITY,
    TONE_SCORES,
    TRANSCRIPTS,
)

# In the order `fuse_calls` takes them.
FUSION_INPUTS = (
    RAW_CALL_AUDIO, SPEECH_ACTIVITY, CONVERSATION_METRICS, CALL_TONE, TONE_SCORES, TRANSCRIPTS, COMPLIANCE_FLAGS,
    AGENT_VOICE_SAMPLES,
)
# Days before the run's first date that a dashboard also shows (trend context). A constant, because
# it is lineage: the dashboard's partition mapping onto its inputs is declared from it.
DASHBOARD_LOOKBACK_DAYS = 6
DASHBOARD_INPUTS = (FUSED_INSIGHTS, TONE_SCORES, COMPLIANCE_FLAGS)


@dg.asset(**table_asset_kwargs(FUSED_INSIGHTS, reads=FUSION_INPUTS), group_name="insights", kinds={"delta", "python"})
def fused_insights(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per call: tone + conversation metrics + compliance flags, the mismatches between what
    was said and how it sounded, whether the anger peak falls at the billing turn, and a QA priority
    (0-100) with its reasons. A call missing a stage keeps its row with nulls for that stage."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    fused = fuse_calls(*(read(table, call_dates) for table in FUSION_INPUTS))
    check, written = write_table(context, lakehouse, FUSED_INSIGHTS, fused, call_dates)
    top = fused.head(3)[["call_id", "agent_id", "qa_priority"]].to_dict("records")
    return dg.MaterializeResult(
        metadata={**written, **read.metadata(), "review_first": dg.MetadataValue.json(top)}, check_results=[check]
    )


@dg.asset(
    partitions_def=call_date_partitions,
    deps=[
        dg.AssetDep(table.name, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-DASHBOARD_LOOKBACK_DAYS))
        for table in DASHBOARD_INPUTS
    ],
    group_name="insights",
    kinds={"html", "plotly"},
    owners=["team:callintel"],
    code_version="1",
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def insights_dashboard(context: dg.AssetExecutionContext, lakehouse: Lakehouse, reports: ReportSettings) -> dg.MaterializeResult:
    """Self-contained HTML dashboard (plotly inlined, no server) for the run's date range plus the
    6 days before it: tone trend by day, anger spikes vs billing / care-delay topics, agent heatmap,
    compliance flags with evidence, and the calls to review first. A backfill over a range runs once
    and renders that whole range. `latest.html` is the range reaching the newest date, not the last
    one written, so a backfill of older dates does not hide the newest days."""
    run_dates = partition_dates(context)
    first, last = run_dates[0], run_dates[-1]
    start = first - dt.timedelta(days=DASHBOARD_LOOKBACK_DAYS)
    dates = [start + dt.timedelta(days=n) for n in range((last - start).days + 1)]
    read = TableReader(context, lakehouse)
    fused, tone, flags = (read(table, dates) for table in DASHBOARD_INPUTS)
    path = reports.path_for(dashboard_name(start, last))
    summary = render_dashboard(fused, tone, flags, path, title=f"CallIntel — calls {start} to {last}")
    newest = newest_dashboard([p.name for p in path.parent.glob("callintel_*.html")])
    shutil.copyfile(path.parent / newest, reports.path_for("latest.html"))
    context.log.info(f"dashboard for {summary['n_calls']} calls written to {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "summary": dg.MetadataValue.md(dashboard_markdown(summary)),
            "calls": summary["n_calls"],
            "days": summary["n_days"],
            **read.metadata(),
        }
    )
