"""The cost of fleet's container logger (fleet.node.logrotate.LOGGER_SH) against the append-only `cat` logger it
replaced: CPU (user + system, the logger and every process it starts) and wall time to take N MB of numbered
lines from a container's stdout, started as the containerd shim starts it (stdout on fd 3, stderr on fd 4, fd 5
closed when ready). Bulk: 64 KiB writes, as a chatty container gives them; lines: one write per line, and lines
1 ms apart (each read on its own), so a logger that spent a process per write (or per line) would show it.

    python bench/logger.py [--mb 50] [--lines 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from logger_shim import APPEND_ONLY_LOGGER, start_logger  # noqa: E402

from fleet.node.logrotate import LOGGER_SH  # noqa: E402


def one(script_text: str, chunks: list[bytes], size: int, files: int, pause: float = 0.0) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "logger"
        script.write_text(script_text)
        log = Path(d) / "c.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc, out, err = start_logger(script, ["file", str(log), "size", str(size), "files", str(files)])
        for chunk in chunks:
            os.write(out, chunk)
            if pause:
                time.sleep(pause)
        os.close(out)
        os.close(err)
        proc.wait()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        kept = sorted(p.name for p in Path(d).glob("c.log*"))
        return {"cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3),
                "wall_s": round(wall, 3), "files": len(kept),
                "bytes_kept": sum((Path(d) / k).stat().st_size for k in kept)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--paced", type=int, default=2000, help="lines written 1 ms apart (each read on its own)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    line = b"%08d " + b"x" * 90 + b"\n"
    data = b"".join(line % i for i in range(a.mb * 1024 * 1024 // len(line % 0)))
    bulk = [data[k:k + 65536] for k in range(0, len(data), 65536)]
    lines = [line % i for i in range(a.lines)]
    cases = [("cat (append only)", APPEND_ONLY_LOGGER, 10 << 20, 3), ("fleet logger 10 MiB x3", LOGGER_SH, 10 << 20, 3),
             ("fleet logger 64 KiB x2", LOGGER_SH, 64 << 10, 2)]
    results = []
    inputs = ((f"{round(len(data) / (1 << 20))} MiB in 64 KiB writes", bulk, 0.0),
              (f"{a.lines} one-line writes", lines, 0.0), (f"{a.paced} lines 1 ms apart", lines[:a.paced], 0.001))
    for what, chunks, pause in inputs:
        for name, text, size, files in cases:
            runs = [one(text, chunks, size, files, pause) for _ in range(a.repeat)]
            best = min(runs, key=lambda r: r["cpu_s"])
            results.append({"input": what, "logger": name, **best,
                            "cpu_s_all": [r["cpu_s"] for r in runs]})
            print(f"{what:28} {name:24} cpu {best['cpu_s']:6.3f} s  wall {best['wall_s']:6.3f} s  "
                  f"files {best['files']}  kept {best['bytes_kept']} B", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
