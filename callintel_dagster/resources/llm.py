"""Who fills the compliance schema: the deterministic rules engine (embedded default) or an
OpenAI-compatible LLM endpoint cross-checked by the rules (Databricks Model Serving, vLLM, Ollama …)."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping

import dagster as dg
from pydantic import Field, PrivateAttr

from callintel_dagster.engines.compliance import (
    RULES_MODEL_ID,
    RULES_VERSION,
    AssessmentOutcome,
    TurnsLike,
    assess_calls_with_llm,
    merge_with_rules,
)
from callintel_dagster.engines.llm_client import LLMClient, run_bounded
from callintel_dagster.engines.rules import assess_call_with_rules
from callintel_dagster.engines.summary import (
    SummaryOutcome,
    extractive_summary,
    summarize_with_llm,
)


class ComplianceAssessor(dg.ConfigurableResource, abc.ABC):
    """Assesses calls (`call_id -> transcript turns`) into one outcome per call."""

    @property
    @abc.abstractmethod
    def uses_llm(self) -> bool: ...

    @abc.abstractmethod
    def assess(self, calls: Mapping[str, TurnsLike]) -> dict[str, AssessmentOutcome]: ...

    @abc.abstractmethod
    def summarize(self, calls: Mapping[str, TurnsLike]) -> dict[str, SummaryOutcome]:
        """Issues, outcomes and action items per call."""


class RulesAssessor(ComplianceAssessor):
    """Embedded default: the rules engine alone (no endpoint, deterministic, offline)."""

    @property
    def uses_llm(self) -> bool:
        return False

    def assess(self, calls):
        outcomes = {}
        for call_id, turns in calls.items():
            rules = assess_call_with_rules(turns)
            outcomes[call_id] = AssessmentOutcome(
                status="ok", assessment=rules, model_id=RULES_MODEL_ID, prompt_version=RULES_VERSION,
                attempts=0, extracted_at=dt.datetime.now(dt.UTC), source="rules",
            )
        return outcomes

    def summarize(self, calls):
        return {call_id: SummaryOutcome(extractive_summary(turns), "extractive", "extractive") for call_id, turns in calls.items()}


class OpenAICompatibleAssessor(ComplianceAssessor):
    """LLM extraction with strict JSON, a bounded self-healing loop, and the rules engine alongside:
    a rule-detected safety flag can never be suppressed by the model, and disagreements are recorded."""

    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://<ws>/serving-endpoints. Use EnvVar('CALLINTEL_LLM_BASE_URL').")
    api_key: str = Field(description="API key / Databricks token. Use EnvVar('CALLINTEL_LLM_API_KEY'); never logged.")
    model: str = Field(description="Model / serving endpoint name, e.g. databricks-meta-llama-3-3-70b-instruct.")
    timeout_s: float = Field(default=60.0, description="Per-request timeout.")
    max_retries: int = Field(default=4, description="Retries of a request on 429/5xx/timeouts (exponential backoff).")
    backoff_s: float = Field(default=1.0, description="First backoff delay; doubles per retry, capped at 30 s.")
    max_attempts: int = Field(default=3, description="Answers asked for per call (re-asking with the validation error).")
    max_concurrency: int = Field(default=4, description="Requests in flight at once (protects the endpoint's rate limit).")
    redact_before_sending: bool = Field(
        default=True,
        description="Replace PHI with typed placeholders before the transcript leaves the cluster, in every prompt "
        "(compliance and summary).",
    )
    max_tokens: int = Field(default=2048, description="Most tokens one answer may take (`max_tokens` of each request).")
    max_transcript_tokens: int | None = Field(
        default=24_000,
        description="Estimated tokens (characters / 3) of transcript one prompt may carry; beyond it the middle "
        "turns are left out and marked, keeping the call's opening and ending. None = send everything. Keep "
        "it plus max_tokens and ~2,000 of instructions below the model's context length.",
    )
    _client: LLMClient | None = PrivateAttr(default=None)

    @property
    def uses_llm(self) -> bool:
        return True

    def _llm(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(
                self.base_url, self.api_key, self.model, timeout_s=self.timeout_s,
                max_retries=self.max_retries, backoff_s=self.backoff_s, max_tokens=self.max_tokens,
            )
        return self._client

    def assess(self, calls):
        llm = assess_calls_with_llm(
            calls, self._llm(), max_workers=self.max_concurrency, max_attempts=self.max_attempts,
            redact=self.redact_before_sending, max_transcript_tokens=self.max_transcript_tokens,
        )
        return {call_id: merge_with_rules(outcome, assess_call_with_rules(calls[call_id])) for call_id, outcome in llm.items()}

    def summarize(self, calls):
        call_ids = list(calls)

        def one(call_id: str) -> SummaryOutcome:
            summary, source, error = summarize_with_llm(
                calls[call_id], self._llm(), self.max_attempts,
                redact=self.redact_before_sending, max_transcript_tokens=self.max_transcript_tokens,
            )
            return SummaryOutcome(summary, source, self.model if source == "llm" else "extractive", error)

        return dict(zip(call_ids, run_bounded(one, call_ids, self.max_concurrency), strict=True))
