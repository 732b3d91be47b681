"""Which QA category rules `call_categories` evaluates."""

import dagster as dg
from pydantic import Field

from callintel_dagster.engines.categories import (
    HEALTHCARE_CATEGORIES,
    HEALTHCARE_CATEGORIES_ES,
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

    language_files: dict[str, str] = Field(
        default_factory=lambda: {"es": str(HEALTHCARE_CATEGORIES_ES)},
        description="Categories file per detected call language (Whisper code); a call in a language not "
        "listed uses `categories_file`. Default: the shipped Spanish set for 'es' (categories/healthcare_es.yaml).",
    )

    def load(self, language: str = "en") -> list[Category]:
        """The rules for calls in `language`."""
        return load_categories(self.language_files.get(language) or self.categories_file or HEALTHCARE_CATEGORIES)
