"""The BI star schema, defined once: the fact tables are registry tables (`tables.py`, so their Delta
schemas are the Pandera contracts), and this module adds what a BI tool needs on top of them: the
dimensions derived from the facts, the relationships, the DAX measures and the report pages.

From this one definition come the Databricks SQL views (`databricks_views_sql`) and the Power BI
project under `powerbi/` (`callintel powerbi` renders it; a test checks the committed files are
what it renders and that every table and column they reference exists in the Delta schemas).

The dimensions are derived (DISTINCT over the facts) rather than stored: every Delta table of the
registry holds call rows, keyed by `call_id` and erased with the call, and an agent or a date is not
a call. No Dagster import.
"""

from __future__ import annotations

import dataclasses

from callintel_dagster.engines.fusion import ANGER_MIN
from callintel_dagster.tables import FACT_CALL, FACT_FLAG, FACT_TURN_TONE, Table

FACTS: tuple[Table, ...] = (FACT_CALL, FACT_FLAG, FACT_TURN_TONE)
# Audit column, not for reports.
HIDDEN_COLUMNS = ("run_id",)


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A dimension derived from the facts' `fact_column`: `columns` maps each column to (DAX, Spark
    SQL) expressions over it, `key` is the column the facts join on. A `calendar` dimension has every
    day between the first and the last call (DAX), so trends show days without calls."""

    name: str
    key: str
    fact_column: str
    columns: dict[str, tuple[str, str]]
    data_types: dict[str, str]
    calendar: bool = False

    def dax_rows(self) -> str:
        """The DAX table whose rows the dimension's columns are computed over."""
        if self.calendar:
            return f"CALENDAR(MIN(fact_call[{self.fact_column}]), MAX(fact_call[{self.fact_column}]))"
        return f"DISTINCT(UNION({', '.join(f'DISTINCT({fact.name}[{self.fact_column}])' for fact in FACTS)}))"


DIM_AGENT = Dimension(
    "dim_agent", key="agent_id", fact_column="agent_id",
    columns={"agent_id": ("[agent_id]", "agent_id")}, data_types={"agent_id": "string"},
)
DIM_DATE = Dimension(
    "dim_date", key="date", fact_column="call_date",
    columns={
        "date": ("[Date]", "call_date"),
        "year": ("YEAR([Date])", "year(call_date)"),
        "month": ('FORMAT([Date], "yyyy-MM")', "date_format(call_date, 'yyyy-MM')"),
        "weekday": ('FORMAT([Date], "ddd")', "date_format(call_date, 'E')"),
    },
    data_types={"date": "dateTime", "year": "int64", "month": "string", "weekday": "string"}, calendar=True,
)
DIMENSIONS = (DIM_AGENT, DIM_DATE)


@dataclasses.dataclass(frozen=True)
class Measure:
    table: str
    name: str
    dax: str
    format_string: str


MEASURES = (
    Measure("fact_call", "Calls", "COUNTROWS(fact_call)", "0"),
    Measure(
        "fact_call", "Resolution rate",
        "DIVIDE(CALCULATE(COUNTROWS(fact_call), fact_call[issue_resolved] = TRUE()), "
        "CALCULATE(COUNTROWS(fact_call), NOT ISBLANK(fact_call[issue_resolved])))", "0.0%",
    ),
    Measure("fact_call", "Escalation rate",
            "DIVIDE(CALCULATE(COUNTROWS(fact_call), fact_call[escalation_requested] = TRUE()), [Calls])", "0.0%"),
    Measure("fact_call", "Avg acoustic stress", "AVERAGE(fact_call[acoustic_stress])", "0.00"),
    Measure("fact_call", "Avg sentiment", "AVERAGE(fact_call[sentiment_score])", "0.00"),
    Measure("fact_call", "Anger spikes", f"CALCULATE(COUNTROWS(fact_call), fact_call[max_anger] >= {ANGER_MIN})", "0"),
    Measure("fact_call", "Anger spikes at billing",
            "CALCULATE(COUNTROWS(fact_call), fact_call[anger_at_billing] = TRUE())", "0"),
    Measure("fact_call", "Avg QA priority", "AVERAGE(fact_call[qa_priority])", "0.0"),
    Measure("fact_flag", "Flags", "COUNTROWS(SUMMARIZE(fact_flag, fact_flag[call_id], fact_flag[flag]))", "0"),
    Measure("fact_flag", "Flags per 100 calls", "DIVIDE([Flags] * 100, [Calls])", "0.0"),
    Measure("fact_turn_tone", "Avg turn sentiment", "AVERAGE(fact_turn_tone[sentiment])", "0.00"),
    Measure("fact_turn_tone", "Avg turn negative tone", "AVERAGE(fact_turn_tone[tone_negative])", "0.00"),
)


@dataclasses.dataclass(frozen=True)
class Visual:
    """One report visual: its Power BI type and its fields (`table[column]` or `table[Measure]`)."""

    visual_type: str
    title: str
    fields: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Page:
    name: str
    display_name: str
    visuals: tuple[Visual, ...]
    drillthrough: tuple[str, ...] = ()


PAGES = (
    Page("sentiment", "Sentiment and anger by topic", (
        Visual("lineChart", "Sentiment and negative tone by day",
               ("dim_date[date]", "fact_call[Avg sentiment]", "fact_turn_tone[Avg turn negative tone]")),
        Visual("clusteredColumnChart", "Anger spikes by topic", ("fact_call[anger_peak_topic]", "fact_call[Anger spikes]")),
        Visual("card", "Anger spikes at the billing turn", ("fact_call[Anger spikes at billing]",)),
    )),
    Page("agents", "Agent performance", (
        Visual("scatterChart", "Resolution rate vs acoustic stress",
               ("dim_agent[agent_id]", "fact_call[Avg acoustic stress]", "fact_call[Resolution rate]", "fact_call[Calls]")),
        Visual("tableEx", "Agents", ("dim_agent[agent_id]", "fact_call[Calls]", "fact_call[Resolution rate]",
                                     "fact_call[Escalation rate]", "fact_call[Avg QA priority]")),
    )),
    Page("compliance", "Compliance monitoring", (
        Visual("clusteredBarChart", "Flags by kind", ("fact_flag[flag]", "fact_flag[Flags]")),
        Visual("card", "Flags per 100 calls", ("fact_flag[Flags per 100 calls]",)),
        Visual("tableEx", "Calls to review", ("fact_call[call_id]", "dim_agent[agent_id]", "fact_call[qa_priority]",
                                              "fact_call[hipaa_flag_count]")),
    )),
    Page("evidence", "Evidence", (
        Visual("tableEx", "Evidence (drill through from a call or a flag)",
               ("fact_flag[call_id]", "fact_flag[flag]", "fact_flag[turn_index]", "fact_flag[quote]")),
    ), drillthrough=("fact_flag[call_id]", "fact_flag[flag]")),
)


def relationships() -> list[tuple[str, str, str, str]]:
    """(fact, column, dimension, key): every fact joins every dimension."""
    return [(fact.name, dim.fact_column, dim.name, dim.key) for fact in FACTS for dim in DIMENSIONS]


def databricks_views_sql(catalog: str = "main", schema: str = "callintel", bi_schema: str = "callintel_bi") -> str:
    """`CREATE VIEW`s of the star schema on Databricks SQL, over the Unity Catalog tables that
    `SparkDeltaLakehouse` writes (`catalog.schema.<table>`); Power BI connects to `bi_schema`."""
    source = f"{catalog}.{schema}"
    target = f"{catalog}.{bi_schema}"
    statements = [f"CREATE SCHEMA IF NOT EXISTS {target};"]
    for fact in FACTS:
        columns = ", ".join(c for c in fact.columns if c not in HIDDEN_COLUMNS)
        statements.append(f"CREATE OR REPLACE VIEW {target}.{fact.name} AS\nSELECT {columns}\nFROM {source}.{fact.name};")
    for dim in DIMENSIONS:
        union = "\nUNION\n".join(f"SELECT {dim.fact_column} FROM {source}.{fact.name}" for fact in FACTS)
        select = ", ".join(f"{sql} AS {name}" for name, (_, sql) in dim.columns.items())
        statements.append(f"CREATE OR REPLACE VIEW {target}.{dim.name} AS\nSELECT DISTINCT {select}\nFROM (\n{union}\n);")
    return "\n\n".join(statements) + "\n"
