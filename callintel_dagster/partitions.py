"""One daily partition = the calls recorded that day (the blob store's `YYYY-MM-DD/` folder).

The first partition is `CALLINTEL_FIRST_CALL_DATE` (the first date with recordings), so the Dagster
UI's fill bar counts days that can hold calls, not hundreds of empty days before the archive began.
The default is a recent date; set the variable before loading the code location to cover older calls.
"""

import datetime as dt
import os

import dagster as dg

DEFAULT_FIRST_CALL_DATE = "2026-11-01"
CALL_TIMEZONE = "UTC"


def first_call_date(environ: dict[str, str] | None = None) -> str:
    """`CALLINTEL_FIRST_CALL_DATE` (YYYY-MM-DD), else `DEFAULT_FIRST_CALL_DATE`."""
    value = (os.environ if environ is None else environ).get("CALLINTEL_FIRST_CALL_DATE") or DEFAULT_FIRST_CALL_DATE
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"CALLINTEL_FIRST_CALL_DATE must be a date (YYYY-MM-DD), not {value!r}") from None


CALL_DATE_START = first_call_date()

call_date_partitions = dg.DailyPartitionsDefinition(
    start_date=CALL_DATE_START, timezone=CALL_TIMEZONE, end_offset=1
)
