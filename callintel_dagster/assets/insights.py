"""`fused_insights` (per call) and `insights_dashboard` (self-contained HTML per date range)."""

import datetime as dt
import shutil

import dagster as dg

from callintel_dagster.assets.tables import (
    partition_date,
    read_table,
    schema_check_spec,
    validate_and_merge,
    with_audit_columns,
)
from callintel_dagster.engines.dashboard import dashboard_markdown, render_dashboard
from callintel_dagster.engines.fusion import fuse_calls
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.schemas import (
    CallTone,
    ComplianceFlags,
    ConversationMetrics,
    FusedInsights,
    RawCallAudio,
    SpeechActivity,
    ToneScores,
    Transcripts,
)

FUSION_INPUTS = {
    "raw_call_audio": RawCallAudio, "speech_activity": SpeechActivity, "conversation_metrics": ConversationMetrics,
    "call_tone": CallTone, "tone_scores": ToneScores, "transcripts": Transcripts, "compliance_flags": ComplianceFlags,
}


def _read_inputs(lakehouse: Lakehouse, dates: list[dt.date]) -> dict:
    return {table: read_table(lakehouse, model, table, dates) for table, model in FUSION_INPUTS.items()}


@dg.asset(
    partitions_def=call_date_partitions,
    deps=["call_tone", "tone_scores", "conversation_metrics", "transcripts", "compliance_flags", "speech_activity"],
    group_name="insights",
    kinds={"delta", "python"},
    owners=["team:callintel"],
    code_version="1",
    check_specs=[schema_check_spec("fused_insights")],
)
def fused_insights(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per call: tone + conversation metrics + compliance flags, the mismatches between what
    was said and how it sounded, whether the anger peak falls at the billing turn, and a QA priority
    (0-100) with its reasons. A call missing a stage keeps its row with nulls for that stage."""
    call_date = partition_date(context)
    inputs = _read_inputs(lakehouse, [call_date])
    fused = fuse_calls(
        inputs["raw_call_audio"], inputs["speech_activity"], inputs["conversation_metrics"], inputs["call_tone"],
        inputs["tone_scores"], inputs["transcripts"], inputs["compliance_flags"],
    )
    check, written = validate_and_merge(
        lakehouse, asset="fused_insights", model=FusedInsights,
        frame=with_audit_columns(fused, call_date, context.run_id), keys=["call_id"], call_date=call_date,
    )
    top = fused.head(3)[["call_id", "agent_id", "qa_priority"]].to_dict("records") if len(fused) else []
    return dg.MaterializeResult(metadata={**written, "review_first": dg.MetadataValue.json(top)}, check_results=[check])


@dg.asset(
    partitions_def=call_date_partitions,
    deps=["fused_insights"],
    group_name="insights",
    kinds={"html", "plotly"},
    owners=["team:callintel"],
    code_version="1",
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def insights_dashboard(context: dg.AssetExecutionContext, lakehouse: Lakehouse, reports: ReportSettings) -> dg.MaterializeResult:
    """Self-contained HTML dashboard (plotly inlined, no server) for the run's date range plus
    `lookback_days` before it: tone trend by day, anger spikes vs billing / care-delay topics, agent
    heatmap, compliance flags with evidence, and the calls to review first. A backfill over a range
    runs once and renders that whole range."""
    window = context.partition_time_window
    first, last = window.start.date(), window.end.date() - dt.timedelta(days=1)
    start = first - dt.timedelta(days=reports.lookback_days)
    dates = [start + dt.timedelta(days=n) for n in range((last - start).days + 1)]
    fused = read_table(lakehouse, FusedInsights, "fused_insights", dates)
    tone = read_table(lakehouse, ToneScores, "tone_scores", dates)
    flags = read_table(lakehouse, ComplianceFlags, "compliance_flags", dates)
    path = reports.path_for(f"callintel_{start}_{last}.html")
    summary = render_dashboard(fused, tone, flags, path, title=f"CallIntel — calls {start} to {last}")
    shutil.copyfile(path, reports.path_for("latest.html"))
    context.log.info(f"dashboard for {summary['n_calls']} calls written to {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "summary": dg.MetadataValue.md(dashboard_markdown(summary)),
            "calls": summary["n_calls"],
            "days": summary["n_days"],
        }
    )
