"""The first daily partition is configurable, so the UI's fill bar counts days that can hold calls."""

import pytest

from callintel_dagster.partitions import DEFAULT_FIRST_CALL_DATE, call_date_partitions, first_call_date


def test_first_call_date_is_configured_by_env_var():
    assert first_call_date({}) == DEFAULT_FIRST_CALL_DATE
    assert first_call_date({"CALLINTEL_FIRST_CALL_DATE": "2025-06-01"}) == "2025-06-01"
    with pytest.raises(ValueError, match="CALLINTEL_FIRST_CALL_DATE"):
        first_call_date({"CALLINTEL_FIRST_CALL_DATE": "June"})


def test_default_start_is_recent_and_covers_the_test_and_demo_dates():
    keys = call_date_partitions.get_partition_keys()
    assert keys[0] == DEFAULT_FIRST_CALL_DATE
    assert {"2026-11-20", "2026-11-25"} <= set(keys)
