"""Which QA category rules `call_categories` evaluates."""

import dagster as dg
from pydantic import Field

from callintel_dagster.engines.categories import (
    HEALTHCARE_CATEGORIES,
    Category,
    load_categories,
)


class CategorySettings(dg.ConfigurableResource):
    """User-defined QA categories (YAML; format in engines/categories.py and the README)."""

    categories_file: str | None = Field(
        default=None,
        description="Path of a categories YAML file. Default: the shipped healthcare rule set "
        "(callintel_dagster/categories/healthcare.yaml).",
    )

    def load(self) -> list[Category]:
        return load_categories(self.categories_file or HEALTHCARE_CATEGORIES)
