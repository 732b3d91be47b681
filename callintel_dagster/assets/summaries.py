"""`call_summaries`: what each call was about, how it ended, and who owes what next."""

import dagster as dg

from callintel_dagster.assets.io import (
    TableReader,
    partition_date,
    table_asset_kwargs,
    write_table,
)
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.llm import ComplianceAssessor
from callintel_dagster.tables import CALL_SUMMARIES, TRANSCRIPTS


@dg.asset(
    **table_asset_kwargs(CALL_SUMMARIES, reads=[TRANSCRIPTS]),
    group_name="call_analytics",
    kinds={"delta", "openai"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def call_summaries(context: dg.AssetExecutionContext, lakehouse: Lakehouse, compliance_assessor: ComplianceAssessor) -> dg.MaterializeResult:
    """Issues, outcomes and action items per call, each a verbatim sentence citing its turn:
    extracted by cue phrases by default, by the configured LLM (validated, with the extractive
    summary as fallback) when an endpoint is set."""
    call_date = partition_date(context)
    read = TableReader(context, lakehouse)
    turns = read(TRANSCRIPTS, [call_date])
    calls = {call_id: group.sort_values("turn_index") for call_id, group in turns.groupby("call_id")}
    outcomes = compliance_assessor.summarize(calls)
    for call_id, outcome in outcomes.items():
        if outcome.error:
            context.log.warning(f"call {call_id}: LLM summary fell back to extractive: {outcome.error}")
    frame = CALL_SUMMARIES.rows([{"call_id": call_id, **outcome.row()} for call_id, outcome in outcomes.items()])
    check, written = write_table(context, lakehouse, CALL_SUMMARIES, frame, [call_date])
    return dg.MaterializeResult(
        metadata={**written, **read.metadata(), "llm_summaries": sum(o.source == "llm" for o in outcomes.values())},
        check_results=[check],
    )
