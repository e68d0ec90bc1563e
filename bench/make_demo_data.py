"""Write the trimmed grid data the demo needs into data/grid/, so a clone without ../shared works.

Copies the rows of a few 2023 weeks, byte for byte and with the original headers, from the shared
files into files of the same names (so ``grid.signals`` loads either directory unchanged), and writes
``data/grid/README.md`` with the sources' attribution lines.

    .venv/bin/python bench/make_demo_data.py [--start 2023-01-01] [--weeks 4] [--src DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from grid.signals import ELECTRICITYMAPS_REGIONS, GB_CARBON_FILE, GB_PRICES_FILE, electricitymaps_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "grid"
DEFAULT_OUT = ROOT / "data" / "grid"
#: four early-winter weeks, Monday to Monday: no gaps in any file, GB carbon 38–309 gCO2/kWh
DEFAULT_START = "2023-01-01"  # 2023-01-24 (a DFS day, the demo's default) and the 23 days its forecasts learn from
DEFAULT_WEEKS = 4


def _first_field_time(line: str) -> datetime:
    """The period start in the first CSV column of every grid file we copy (all UTC)."""
    text = line.split(",", 1)[0]
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def copy_rows(src: Path, dst: Path, keep: Callable[[datetime], bool]) -> int:
    """Copy the header and the rows whose period start satisfies ``keep``; returns the row count."""
    # newline="" keeps the source's line endings exactly.
    with src.open(encoding="utf-8", newline="") as f:
        header, *lines = f.readlines()
    kept = [line for line in lines if line.strip() and keep(_first_field_time(line))]
    with dst.open("w", encoding="utf-8", newline="") as f:
        f.write(header)
        f.writelines(kept)
    return len(kept)


README = """# Trimmed grid data for the demo

A {weeks}-week excerpt ({start} to {end} UTC, period starts) of the real 2023 series in
`../shared/data/grid/`, written by `bench/make_demo_data.py` so that `flexmarket demo` and the tests of
this copy run in a clone without `../shared`. Rows are copied byte for byte with the original headers
and file names; only rows outside the window were dropped. Column meanings, gaps and caveats: see
the shared folder's README (`shared/data/grid/README.md`). `grid.signals` loads either directory.

| file | rows | size |
|---|---|---|
{table}

## Sources and attribution

- `{gb_carbon}`: GB national carbon intensity (forecast and actual, gCO2/kWh), half-hourly.
  Carbon Intensity API, NESO (carbonintensity.org.uk), CC BY 4.0. Via github.com/avagm/neso-carbon-intensity.
- `{gb_prices}`: Elexon BMRS detailed system prices (imbalance and market index, £/MWh), half-hourly.
  Contains BMRS data © Elexon Limited copyright and database right 2024.
  (Elexon BMRS open data licence; via github.com/mg298/UKPower30min.)
- `electricitymaps_*_2023_hourly.csv`: hourly carbon intensity for Spain, Norway and California ISO.
  Data: Electricity Maps (electricitymaps.com), Open Data Commons Open Database License (ODbL); this
  excerpt is an adapted database and is shared under the same licence.
  (Via github.com/umassos/decarbonization-potential.)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default=DEFAULT_START, help="first UTC day, YYYY-MM-DD (2023)")
    parser.add_argument("--weeks", type=int, default=DEFAULT_WEEKS)
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    end = start + timedelta(weeks=args.weeks)
    if not (args.src / GB_CARBON_FILE).is_file():
        print(f"source grid data not found in {args.src}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    def keep(t: datetime) -> bool:
        return start <= t < end

    table = []
    for name in (GB_CARBON_FILE, GB_PRICES_FILE, *(electricitymaps_file(r) for r in ELECTRICITYMAPS_REGIONS)):
        rows = copy_rows(args.src / name, args.out / name, keep)
        table.append(f"| `{name}` | {rows} | {(args.out / name).stat().st_size:,} bytes |")
    (args.out / "README.md").write_text(
        README.format(
            weeks=args.weeks,
            start=start.isoformat(),
            end=end.isoformat(),
            table="\n".join(table),
            gb_carbon=GB_CARBON_FILE,
            gb_prices=GB_PRICES_FILE,
        ),
        encoding="utf-8",
    )
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total:,} bytes)")
    for line in table:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
