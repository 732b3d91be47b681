"""Tooling around the product package: evaluation corpus and compliance evaluation."""
