"""Text sentiment: VADER compound scores and the one definition of their labels.

VADER is lexicon-based: it needs no model, handles the negation and intensifiers of conversational
English, and ships in a wheel. Its analyzer is built once per process, on first use.

Spanish text is scored by the same algorithm over the small hand-made valence list of
`lexicon_es.VALENCE` (VADER's negation list has "no"; its intensifiers stay English), so Spanish
scores are coarser than English ones: they move on the common words of praise and complaint only.
"""

from __future__ import annotations

import re

from callintel_dagster.engines.model_cache import cached_model

# VADER's recommended cut-off between neutral and positive/negative.
SENTIMENT_THRESHOLD = 0.05


def compound(text: str, language: str = "en") -> float:
    """VADER compound score in −1..1 (Spanish: VADER over the Spanish valence list)."""
    if language == "es":
        analyzer = cached_model(("vader", "es"), _spanish_analyzer)
        # VADER strips ASCII punctuation only: the opening marks would glue to the words.
        return float(analyzer.polarity_scores(re.sub(r"[¡¿]", " ", str(text)))["compound"])
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = cached_model(("vader",), SentimentIntensityAnalyzer)
    return float(analyzer.polarity_scores(str(text))["compound"])


def _spanish_analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from callintel_dagster.engines.lexicon_es import VALENCE

    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon = dict(VALENCE)
    return analyzer


def sentiment_label(score: float) -> str:
    """"negative" at or below −threshold, "positive" at or above it, else "neutral"."""
    if score >= SENTIMENT_THRESHOLD:
        return "positive"
    return "negative" if score <= -SENTIMENT_THRESHOLD else "neutral"
