"""The README's provider catalog example runs as written and makes a catalog the BPP loads, with an offer
window still ahead (its dates are computed, never fixed)."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bpp.catalog import load_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_catalog_example_loads(tmp_path: Path) -> None:
    section = README.read_text().split("## Provider catalog file", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the README's provider catalog section has no bash example"
    subprocess.run(["bash", "-euo", "pipefail", "-c", block.group(1)], cwd=tmp_path, check=True)
    [platform] = load_config(tmp_path / "providers.json")
    offers = [o for p in platform.providers for o in p.offers]
    assert offers and all(o.window_start > datetime.now(UTC) for o in offers)


def test_a_platform_may_not_take_a_slug_the_bpp_serves_itself() -> None:
    import pytest

    from bpp.catalog import CatalogConfigError, example_config, parse_config

    config = example_config(1)
    config["platforms"][0]["slug"] = "admin"
    with pytest.raises(CatalogConfigError, match=r"platforms\[0\]\.slug: 'admin' is reserved"):
        parse_config(config)
