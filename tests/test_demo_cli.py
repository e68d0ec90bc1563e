"""`flexmarket demo` refuses bad options before it starts anything, naming the option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flexmarket.cli import app


@pytest.mark.parametrize(
    ("args", "option", "says"),
    [
        (["--date", "24/01/2023"], "--date", "is not a date"),
        (["--date", "2031-01-24"], "--date", "the grid data covers"),
        (["--providers", "2"], "--providers", "between 3 and"),
        (["--providers", "99"], "--providers", "between 3 and"),
        (["--jobs-per-site", "0"], "--jobs-per-site", ""),
    ],
)
def test_a_bad_option_is_refused_naming_it(args: list[str], option: str, says: str) -> None:
    result = CliRunner().invoke(app, ["demo", *args])
    assert result.exit_code == 2, result.output
    assert option in result.output and says in " ".join(result.output.split())
