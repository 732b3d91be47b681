"""`callintel` command: prepare the demo, run it, and print where everything landed.

`make demo` calls `callintel demo`; `make dev` calls `callintel prepare-home` before `dagster dev`;
`make bench` calls `callintel bench`; `make install` calls `callintel warm-cache`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
from pathlib import Path

from callintel_dagster.tools.demo_calls import DEMO_DATES

# Progress lines (stage, calls, quarantine warnings) on the console; every DEBUG event stays in the
# run's event log, visible in `make dev`.
PROGRESS_LOGGING = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def prepare_home(data_dir: Path) -> Path:
    """DAGSTER_HOME under data/ with the project's dagster.yaml, so runs show up in `make dev`."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance_config = importlib.resources.files("callintel_dagster").joinpath("dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(instance_config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def prepare_demo_blobs(blob_root: Path) -> list[Path]:
    """Scripted two-speaker calls (with ground-truth sidecars) over the demo dates, the real sample
    call on every demo day, and the bad-input zoo on the last one. Idempotent."""
    from callintel_dagster.tools.demo_calls import write_demo_calls
    from callintel_dagster.tools.demo_data import (
        write_bad_recordings,
        write_sample_call,
    )

    written = write_demo_calls(blob_root, DEMO_DATES)
    for agent, call_date in zip(("agent-ana", "agent-bo", "agent-cy"), DEMO_DATES, strict=True):
        written.append(write_sample_call(blob_root / call_date, f"{agent}__sample-call.wav"))
    write_bad_recordings(blob_root / DEMO_DATES[-1])
    return written


def run_demo(data_dir: Path) -> int:
    home = prepare_home(data_dir)
    blob_root = data_dir / "blobs"
    lakehouse_root = data_dir / "lakehouse"
    os.environ["CALLINTEL_DATA_ROOT"] = str(data_dir)
    prepare_demo_blobs(blob_root)

    import dagster as dg

    from callintel_dagster.definitions import build_definitions
    from callintel_dagster.tools.alert_catcher import AlertCatcher

    with AlertCatcher(data_dir / "alerts") as catcher:
        os.environ.update(catcher.env())
        job = build_definitions().resolve_job_def("call_pipeline_job")
        with dg.DagsterInstance.get() as instance:
            for call_date in DEMO_DATES:
                print(f"== materializing every asset for call_date={call_date}", flush=True)
                result = job.execute_in_process(
                    partition_key=call_date, instance=instance, raise_on_error=False, run_config=PROGRESS_LOGGING
                )
                if not result.success:
                    print(f"run for {call_date} failed; see `make dev` → Runs", file=sys.stderr)
                    return 1
    print_summary(lakehouse_root, blob_root, home, data_dir / "dashboards" / "latest.html")
    print_alerts(lakehouse_root, catcher.folder)
    return 0


def print_summary(lakehouse_root: Path, blob_root: Path, home: Path, dashboard: Path) -> None:
    from callintel_dagster.resources.lakehouse import DeltaLakehouse

    lakehouse = DeltaLakehouse(root=str(lakehouse_root))
    print("\nCallIntel demo finished.\n")
    print(f"recordings : {blob_root}")
    print(f"lakehouse  : {lakehouse_root}  (Delta tables, partitioned by call_date)")
    print(f"dashboard  : {dashboard}  (self-contained HTML: open it in a browser)")
    print(f"dagster    : DAGSTER_HOME={home}  →  `make dev`, then http://127.0.0.1:3000\n")
    print(f"{'table':<24}{'rows':>8}  {'dates':>5}")
    for table in lakehouse.tables():
        frame = lakehouse.read(table)
        print(f"{table:<24}{len(frame):>8}  {frame['call_date'].nunique() if len(frame) else 0:>5}")
    quarantine = lakehouse.read("quarantined_calls")
    if len(quarantine):
        print("\nquarantined calls (kept, with the reason; fix the file and re-run its date):")
        for row in quarantine.sort_values(["call_date", "blob_key"]).itertuples():
            print(f"  {row.call_date}  {row.stage:<16} {row.reason}")


def print_alerts(lakehouse_root: Path, folder: Path) -> None:
    from callintel_dagster.resources.lakehouse import DeltaLakehouse

    alerts = DeltaLakehouse(root=str(lakehouse_root)).read("alerts_sent")
    print(f"\nalerts     : {folder}  (the demo's local catcher: webhook/*.json = Teams/Slack payloads, "
          "email/*.eml = e-mails)")
    print("             every delivery, with its outcome, is in the `alerts_sent` table; a re-run sends nothing twice")
    for (channel, status), count in alerts.groupby(["channel", "status"]).size().items():
        print(f"  {channel:<8} {status:<8} {count:>4}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callintel", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where blobs, tables and DAGSTER_HOME live")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="prepare demo recordings, materialize every asset, print a summary")
    sub.add_parser("prepare-home", help="create DAGSTER_HOME under the data dir with the project's dagster.yaml")
    sub.add_parser("warm-cache", help="build the persistent numba cache the model workers read (once per user and library versions)")
    sub.add_parser("powerbi", help="render powerbi/ (Power BI project, Databricks SQL views) from star_schema.py")
    bench = sub.add_parser("bench", help="measure quality and throughput in one run; writes bench/results.{json,md}")
    bench.add_argument("--minutes", type=float, default=None, help="demo audio to process for throughput (default 8; 30 with --throughput)")
    bench.add_argument("--quick", action="store_true", help="tiny setting (about 1 min of audio, 1 warm run) for tests")
    bench.add_argument("--output-dir", type=Path, default=None, help="where results.json/.md go (default bench/)")
    bench.add_argument("--gpu", action="store_true", help="only the GPU section (random-weight models): gpu_results.{json,md}")
    bench.add_argument("--throughput", action="store_true",
                       help="only the throughput sections (4, 4b with the project's executor) at scale: --minutes, default 30; "
                       "writes scale_results.{json,md}")
    bench.add_argument("--long-call", type=float, default=None, metavar="MINUTES",
                       help="only (or with --throughput also) one recording of MINUTES through the pipeline: wall, RSS, chunks")
    bench.add_argument("--gpu-device", default="cuda", help="with --gpu: cuda (default), or cpu for tiny shapes on the same code path")
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    if args.command == "demo":
        return run_demo(data_dir)
    if args.command == "powerbi":
        from callintel_dagster.tools.powerbi import write_project

        for path in write_project(Path("powerbi")):
            print(path)
        return 0
    if args.command == "warm-cache":
        from callintel_dagster.engines.jit_cache import ensure_published_cache

        print(ensure_published_cache())
        return 0
    if args.command == "bench":
        from callintel_dagster.tools.bench import main as run_bench

        return run_bench(args)
    print(prepare_home(data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
