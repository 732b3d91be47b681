"""`compliance_flags`: sentiment, resolution, billing, HIPAA risk and escalation per call, with
evidence; LLM strict JSON cross-checked by the rules engine, or the rules engine alone."""

import dagster as dg
import pandas as pd

from callintel_dagster.assets.io import (
    TableReader,
    partition_date,
    schema_check_spec,
    table_spec,
    write_table,
)
from callintel_dagster.engines.compliance import SAFETY_FIELDS, assessment_to_row
from callintel_dagster.engines.llm_client import LLMUnavailableError
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.llm import ComplianceAssessor
from callintel_dagster.tables import (
    COMPLIANCE_FLAGS,
    MALFORMED_LLM_OUTPUTS,
    TRANSCRIPTS,
)


class ComplianceConfig(dg.Config):
    only_pending: bool = False
    """Re-assess only the calls whose flags are pending (malformed/unavailable LLM answers) and MERGE
    the fixed rows back; the other calls of the day are left as they are."""


@dg.multi_asset(
    specs=[
        table_spec(COMPLIANCE_FLAGS, reads=[TRANSCRIPTS], group_name="compliance", kinds={"delta", "openai"}, owners=["team:compliance"]),
        table_spec(MALFORMED_LLM_OUTPUTS, reads=[TRANSCRIPTS], group_name="compliance", kinds={"delta"}, owners=["team:compliance"]),
    ],
    check_specs=[schema_check_spec(COMPLIANCE_FLAGS), schema_check_spec(MALFORMED_LLM_OUTPUTS)],
    partitions_def=call_date_partitions,
    # Endpoint outages (every call unavailable) raise and are retried with backoff; deterministic
    # problems are per-call rows in malformed_llm_outputs, never a failed step.
    retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def compliance_flags(
    context: dg.AssetExecutionContext,
    config: ComplianceConfig,
    lakehouse: Lakehouse,
    compliance_assessor: ComplianceAssessor,
):
    """Assess every transcribed call of the day. A rule-detected safety flag (billing, HIPAA,
    escalation) can never be switched off by the LLM, so an instruction hidden in a transcript cannot
    suppress it; the schema is ours (pydantic), whatever the model answers."""
    call_date = partition_date(context)
    read = TableReader(context, lakehouse)
    turns = read(TRANSCRIPTS, [call_date])
    calls = {call_id: group.sort_values("turn_index") for call_id, group in turns.groupby("call_id")}
    scope = None
    if config.only_pending:
        flags = read(COMPLIANCE_FLAGS, [call_date])
        pending = set(flags.loc[flags["status"] == "pending", "call_id"])
        calls = {call_id: rows for call_id, rows in calls.items() if call_id in pending}
        scope = sorted(calls)
        context.log.info(f"re-assessing {len(calls)} pending calls")
    if not calls:
        context.log.info("no transcribed calls to assess")

    outcomes = compliance_assessor.assess(calls)
    if compliance_assessor.uses_llm and outcomes and all(o.status == "unavailable" for o in outcomes.values()):
        raise LLMUnavailableError(
            f"LLM endpoint unavailable for all {len(outcomes)} calls ({next(iter(outcomes.values())).error}); retrying the step"
        )
    flag_rows = [{"call_id": call_id, **assessment_to_row(outcome)} for call_id, outcome in outcomes.items()]
    bad_rows = [
        {
            "call_id": call_id, "outcome": outcome.status, "raw_response": outcome.raw_response,
            "error": outcome.error, "attempts": outcome.attempts, "model_id": outcome.model_id,
            "prompt_version": outcome.prompt_version, "extracted_at": outcome.extracted_at,
        }
        for call_id, outcome in outcomes.items()
        if outcome.status != "ok"
    ]
    for row in bad_rows:
        context.log.warning(f"call {row['call_id']}: LLM answer {row['outcome']} after {row['attempts']} attempts: {row['error']}")
    flags_frame = COMPLIANCE_FLAGS.rows(flag_rows)
    flags_check, flags_written = write_table(context, lakehouse, COMPLIANCE_FLAGS, flags_frame, [call_date], call_ids=scope)
    bad_check, bad_written = write_table(
        context, lakehouse, MALFORMED_LLM_OUTPUTS, MALFORMED_LLM_OUTPUTS.rows(bad_rows), [call_date], call_ids=scope
    )
    counts = pd.Series([r["status"] for r in flag_rows], dtype="object").value_counts().to_dict()
    yield dg.MaterializeResult(
        asset_key=COMPLIANCE_FLAGS.name,
        metadata={
            **flags_written,
            **read.metadata(),
            "calls_ok": int(counts.get("ok", 0)),
            "calls_pending": int(counts.get("pending", 0)),
            "engine": "llm+rules" if compliance_assessor.uses_llm else "rules",
            "flags_true": dg.MetadataValue.json({f: int(flags_frame[f].fillna(False).astype(bool).sum()) for f in SAFETY_FIELDS}),
        },
    )
    yield dg.MaterializeResult(asset_key=MALFORMED_LLM_OUTPUTS.name, metadata={**bad_written, **read.metadata()})
    yield flags_check
    yield bad_check
