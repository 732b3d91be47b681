"""Text sentiment: VADER compound scores and the one definition of their labels.

VADER is lexicon-based: it needs no model, handles the negation and intensifiers of conversational
English, and ships in a wheel. Its analyzer is built once per process, on first use.
"""

from __future__ import annotations

from callintel_dagster.engines.model_cache import cached_model

# VADER's recommended cut-off between neutral and positive/negative.
SENTIMENT_THRESHOLD = 0.05


def compound(text: str) -> float:
    """VADER compound score in −1..1."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = cached_model(("vader",), SentimentIntensityAnalyzer)
    return float(analyzer.polarity_scores(str(text))["compound"])


def sentiment_label(score: float) -> str:
    """"negative" at or below −threshold, "positive" at or above it, else "neutral"."""
    if score >= SENTIMENT_THRESHOLD:
        return "positive"
    return "negative" if score <= -SENTIMENT_THRESHOLD else "neutral"
