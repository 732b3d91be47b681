"""Where human-readable reports (the HTML dashboard) are written."""

from pathlib import Path

import dagster as dg
from pydantic import Field


class ReportSettings(dg.ConfigurableResource):
    """Output folder of the insights dashboard."""

    root: str = Field(default="data/dashboards", description="Folder the dashboard HTML files are written to.")

    def path_for(self, name: str) -> Path:
        folder = Path(self.root).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name
