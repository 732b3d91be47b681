"""`call_summaries`: what each call was about, how it ended, and who owes what next."""

import dagster as dg

from callintel_dagster.assets.tables import (
    partition_date,
    rows_frame,
    schema_check_spec,
    validate_and_merge,
    with_audit_columns,
)
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.llm import ComplianceAssessor
from callintel_dagster.schemas import CallSummaries


@dg.asset(
    partitions_def=call_date_partitions,
    deps=["transcripts"],
    group_name="call_analytics",
    kinds={"delta", "openai"},
    owners=["team:callintel"],
    code_version="1",
    check_specs=[schema_check_spec("call_summaries")],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def call_summaries(context: dg.AssetExecutionContext, lakehouse: Lakehouse, compliance_assessor: ComplianceAssessor) -> dg.MaterializeResult:
    """Issues, outcomes and action items per call, each a verbatim sentence citing its turn:
    extracted by cue phrases by default, by the configured LLM (validated, with the extractive
    summary as fallback) when an endpoint is set."""
    call_date = partition_date(context)
    turns = lakehouse.read("transcripts", [call_date])
    calls = {call_id: group.sort_values("turn_index") for call_id, group in turns.groupby("call_id")} if len(turns) else {}
    outcomes = compliance_assessor.summarize(calls)
    for call_id, outcome in outcomes.items():
        if outcome.error:
            context.log.warning(f"call {call_id}: LLM summary fell back to extractive: {outcome.error}")
    frame = rows_frame(CallSummaries, [{"call_id": call_id, **outcome.row()} for call_id, outcome in outcomes.items()])
    check, written = validate_and_merge(
        lakehouse, asset="call_summaries", model=CallSummaries,
        frame=with_audit_columns(frame, call_date, context.run_id), keys=["call_id"], call_date=call_date,
    )
    return dg.MaterializeResult(
        metadata={**written, "llm_summaries": sum(o.source == "llm" for o in outcomes.values())},
        check_results=[check],
    )
