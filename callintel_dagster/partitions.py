"""One daily partition = the calls recorded that day (the blob store's `YYYY-MM-DD/` folder)."""

import dagster as dg

CALL_DATE_START = "2024-01-01"
CALL_TIMEZONE = "UTC"

call_date_partitions = dg.DailyPartitionsDefinition(
    start_date=CALL_DATE_START, timezone=CALL_TIMEZONE, end_offset=1
)
