"""Render the Power BI project (`powerbi/`) and the Databricks SQL views from `star_schema.py`.

`callintel powerbi` rewrites the files; a test fails when the committed files differ from what this
renders, so the template cannot drift from the Delta tables. The semantic model is TMDL text
(Power BI Project, `.pbip`), in import mode, reading either the local Delta folders or the
Databricks SQL views, chosen by the `CallIntelSource` parameter.
"""

from __future__ import annotations

import json
from pathlib import Path

from callintel_dagster.star_schema import (
    DIMENSIONS,
    FACTS,
    Dimension,
    HIDDEN_COLUMNS,
    MEASURES,
    PAGES,
    databricks_views_sql,
    relationships,
)
from callintel_dagster.tables import Table

PROJECT = "CallIntel"
# Arrow type -> TMDL dataType.
_TMDL_TYPES = {"string": "string", "int64": "int64", "double": "double", "bool": "boolean", "date32[day]": "dateTime",
               "timestamp[us, tz=UTC]": "dateTime"}
PARAMETERS = {
    "CallIntelSource": ("Local", "Local: the Delta folders under LakehouseFolder; Databricks: the SQL views"),
    "LakehouseFolder": ("C:\\callintel\\data\\lakehouse", "Folder of the Delta tables (CALLINTEL_DATA_ROOT/lakehouse)"),
    "DatabricksHost": ("adb-0000000000000000.0.azuredatabricks.net", "Databricks workspace host name"),
    "DatabricksHttpPath": ("/sql/1.0/warehouses/0000000000000000", "HTTP path of the SQL warehouse"),
    "DatabricksCatalog": ("main", "Unity Catalog catalog of the views"),
    "DatabricksSchema": ("callintel_bi", "Schema of the views (powerbi/databricks_views.sql)"),
}


def _m_source(table: str, columns: list[str]) -> str:
    column_list = ", ".join(f'"{c}"' for c in columns)
    return "\n".join([
        "let",
        '    Source = if CallIntelSource = "Databricks"',
        "        then Databricks.Catalogs(DatabricksHost, DatabricksHttpPath, [Catalog = null, Database = null])"
        f'{{[Name = DatabricksCatalog, Kind = "Database"]}}[Data]{{[Name = DatabricksSchema, Kind = "Schema"]}}[Data]'
        f'{{[Name = "{table}", Kind = "View"]}}[Data]',
        f'        else DeltaLake.Table(Folder.Files(LakehouseFolder & "\\{table}")),',
        f"    Columns = Table.SelectColumns(Source, {{{column_list}}})",
        "in",
        "    Columns",
    ])


def _indent(text: str, tabs: int) -> str:
    return "\n".join("\t" * tabs + line for line in text.splitlines())


def _fact_tmdl(table: Table) -> str:
    schema = table.arrow_schema()
    columns = [c for c in table.columns if c not in HIDDEN_COLUMNS]
    lines = [f"table {table.name}", ""]
    for measure in (m for m in MEASURES if m.table == table.name):
        lines += [f"\tmeasure '{measure.name}' = {measure.dax}", f"\t\tformatString: {measure.format_string}", ""]
    for name in columns:
        data_type = _TMDL_TYPES[str(schema.field(name).type)]
        lines += [f"\tcolumn {name}", f"\t\tdataType: {data_type}", "\t\tsummarizeBy: none", f"\t\tsourceColumn: {name}", ""]
    lines += [f"\tpartition {table.name} = m", "\t\tmode: import", "\t\tsource =", _indent(_m_source(table.name, columns), 4), ""]
    return "\n".join(lines)


def _dimension_tmdl(dim: Dimension) -> str:
    select = ", ".join(f'"{name}", {dax}' for name, (dax, _) in dim.columns.items())
    source = f"SELECTCOLUMNS({dim.dax_rows()}, {select})"
    lines = [f"table {dim.name}", ""]
    for name in dim.columns:
        lines += [f"\tcolumn {name}", f"\t\tdataType: {dim.data_types[name]}", "\t\tsummarizeBy: none",
                  f"\t\tsourceColumn: [{name}]", ""]
    lines += [f"\tpartition {dim.name} = calculated", "\t\tmode: import", f"\t\tsource = {source}", ""]
    return "\n".join(lines)


def _relationships_tmdl() -> str:
    lines = []
    for fact, column, dim, key in relationships():
        lines += [f"relationship {fact}_{dim}", f"\tfromColumn: {fact}.{column}", f"\ttoColumn: {dim}.{key}", ""]
    return "\n".join(lines)


def _expressions_tmdl() -> str:
    lines = []
    for name, (value, description) in PARAMETERS.items():
        lines += [f"/// {description}",
                  f'expression {name} = "{value}" meta [IsParameterQuery = true, Type = "Text", IsParameterQueryRequired = true]',
                  ""]
    return "\n".join(lines)


def _model_tmdl() -> str:
    tables = [t.name for t in FACTS] + [d.name for d in DIMENSIONS]
    lines = ["model Model", "\tculture: en-US", "\tdefaultPowerBIDataSourceVersion: powerBI_V3",
             "\tsourceQueryCulture: en-US", ""]
    lines += [f"ref table {name}" for name in tables]
    return "\n".join(lines) + "\n"


def _visual(visual, index: int) -> dict:
    config = {
        "name": f"v{index}",
        "singleVisual": {
            "visualType": visual.visual_type,
            "projections": {"Values": [{"queryRef": field} for field in visual.fields]},
            "vcObjects": {"title": [{"properties": {"text": {"expr": {"Literal": {"Value": f"'{visual.title}'"}}}}}]},
        },
    }
    column, row = index % 2, index // 2
    return {"x": 20 + column * 620, "y": 20 + row * 340, "z": index, "width": 600, "height": 320,
            "config": json.dumps(config, sort_keys=True)}


def _report_json() -> str:
    sections = []
    for ordinal, page in enumerate(PAGES):
        section = {"name": page.name, "displayName": page.display_name, "ordinal": ordinal, "width": 1280, "height": 720,
                   "displayOption": 1, "visualContainers": [_visual(v, i) for i, v in enumerate(page.visuals)]}
        if page.drillthrough:
            section["config"] = json.dumps({"type": 1, "drillthroughFields": list(page.drillthrough)})
        sections.append(section)
    return json.dumps({"config": json.dumps({"version": "5.55"}), "layoutOptimization": 0, "sections": sections}, indent=2) + "\n"


def render_project() -> dict[str, str]:
    """Every file of `powerbi/`, by path relative to it."""
    model = f"{PROJECT}.SemanticModel/definition"
    files = {
        f"{PROJECT}.pbip": json.dumps({"version": "1.0", "artifacts": [{"report": {"path": f"{PROJECT}.Report"}}],
                                       "settings": {"enableAutoRecovery": True}}, indent=2) + "\n",
        f"{PROJECT}.SemanticModel/definition.pbism": json.dumps({"version": "4.0", "settings": {}}, indent=2) + "\n",
        f"{PROJECT}.Report/definition.pbir": json.dumps(
            {"version": "4.0", "datasetReference": {"byPath": {"path": f"../{PROJECT}.SemanticModel"}}}, indent=2) + "\n",
        f"{PROJECT}.Report/report.json": _report_json(),
        f"{model}/database.tmdl": "database CallIntel\n\tcompatibilityLevel: 1567\n",
        f"{model}/model.tmdl": _model_tmdl(),
        f"{model}/expressions.tmdl": _expressions_tmdl(),
        f"{model}/relationships.tmdl": _relationships_tmdl(),
        "databricks_views.sql": "-- Rendered by `callintel powerbi` from callintel_dagster/star_schema.py; do not edit.\n"
                                + databricks_views_sql(),
    }
    for table in FACTS:
        files[f"{model}/tables/{table.name}.tmdl"] = _fact_tmdl(table)
    for dim in DIMENSIONS:
        files[f"{model}/tables/{dim.name}.tmdl"] = _dimension_tmdl(dim)
    return files


def write_project(folder: Path) -> list[Path]:
    written = []
    for relative, text in render_project().items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
