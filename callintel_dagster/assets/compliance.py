"""`compliance_flags`: sentiment, resolution, billing, HIPAA risk and escalation per call, with
evidence; LLM strict JSON cross-checked by the rules engine, or the rules engine alone."""

import dagster as dg
import pandas as pd

from callintel_dagster.assets.tables import (
    partition_date,
    rows_frame,
    schema_check_spec,
    table_spec,
    validate_and_merge,
    with_audit_columns,
)
from callintel_dagster.engines.compliance import assessment_to_row
from callintel_dagster.engines.llm_client import LLMUnavailableError
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.llm import ComplianceAssessor
from callintel_dagster.schemas import ComplianceFlags, MalformedLlmOutputs


class ComplianceConfig(dg.Config):
    only_pending: bool = False
    """Re-assess only the calls whose flags are pending (malformed/unavailable LLM answers) and MERGE
    the fixed rows back; the other calls of the day are left as they are."""


@dg.multi_asset(
    specs=[
        table_spec(
            "compliance_flags", deps=["transcripts"], group_name="compliance", kinds={"delta", "openai"},
            owners=["team:compliance"],
            description="One row per call: sentiment, issue resolved, billing (+topics), HIPAA risk flags, "
            "escalation, summary, evidence (turn + quote) for every true flag, LLM-vs-rules disagreements, audit columns.",
        ),
        table_spec(
            "malformed_llm_outputs", deps=["transcripts"], group_name="compliance", kinds={"delta"},
            owners=["team:compliance"],
            description="Calls whose LLM answer never validated: raw response, error, attempts. "
            "`reprocess_malformed_job` re-runs just these.",
        ),
    ],
    check_specs=[schema_check_spec("compliance_flags"), schema_check_spec("malformed_llm_outputs")],
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
    turns = lakehouse.read("transcripts", [call_date])
    calls = {call_id: group.sort_values("turn_index") for call_id, group in turns.groupby("call_id")} if len(turns) else {}
    scope = None
    if config.only_pending:
        flags = lakehouse.read("compliance_flags", [call_date])
        pending = set(flags.loc[flags["status"] == "pending", "call_id"]) if len(flags) else set()
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
    flags_frame = rows_frame(ComplianceFlags, flag_rows)
    bad_frame = rows_frame(MalformedLlmOutputs, bad_rows)
    flags_check, flags_written = validate_and_merge(
        lakehouse, asset="compliance_flags", model=ComplianceFlags,
        frame=with_audit_columns(flags_frame, call_date, context.run_id),
        keys=["call_id"], call_date=call_date, call_ids=scope,
    )
    bad_check, bad_written = validate_and_merge(
        lakehouse, asset="malformed_llm_outputs", model=MalformedLlmOutputs,
        frame=with_audit_columns(bad_frame, call_date, context.run_id),
        keys=["call_id"], call_date=call_date, call_ids=scope,
    )
    counts = pd.Series([r["status"] for r in flag_rows], dtype="object").value_counts().to_dict()
    yield dg.MaterializeResult(
        asset_key="compliance_flags",
        metadata={
            **flags_written,
            "calls_ok": int(counts.get("ok", 0)),
            "calls_pending": int(counts.get("pending", 0)),
            "engine": "llm+rules" if compliance_assessor.uses_llm else "rules",
            "flags_true": dg.MetadataValue.json(
                {f: int(flags_frame[f].fillna(False).astype(bool).sum()) for f in (
                    "billing_detected", "phi_before_verification", "phi_requested_unnecessarily",
                    "missing_recording_disclosure", "escalation_requested")}
            ),
        },
    )
    yield dg.MaterializeResult(asset_key="malformed_llm_outputs", metadata=bad_written)
    yield flags_check
    yield bad_check
