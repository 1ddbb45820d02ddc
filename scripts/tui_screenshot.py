"""Draw docs/tui-main.svg, the README's screenshot of `fleet ui`, from the tests' fixed data (tests/tui_source.py):
`.venv/bin/python scripts/tui_screenshot.py [OUT.svg]`."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tui_source import RecordingSource, event, snapshot  # noqa: E402

from fleet.tui import FleetApp  # noqa: E402
from fleet.tui.widgets import ServicesTable  # noqa: E402


async def main(out: Path) -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    source = RecordingSource(*(snapshot(2 * i) for i in range(12)))
    source.events(event("done", "web", "web: 3/3 replicas at revision 3", None, 60.0))
    app = FleetApp(source, interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(12):
            await pilot.press("r")
            await pilot.pause(0.05)
        app.main.query_one(ServicesTable).focus()
        await pilot.press("down")
        await pilot.pause(0.3)
        app.save_screenshot(str(out.name), path=str(out.parent))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "tui-main.svg")
    target.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
    print(target)
