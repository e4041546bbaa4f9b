"""Benchmark: the calibration's memory copy with a never-written source (as before issue 14)
and with both arrays written (compress.hardware.microbench.copy_arrays), interleaved, on one
pinned thread, with the memory efficiency each would fit against the nominal per-core
bandwidth. A never-written source reads the kernel's shared zero page: no DRAM traffic for
the reads, so the copy looks faster than memory allows (it gave a memory efficiency of 1.92
on one machine).

    .venv/bin/python benchmarks/calibrate_copy.py [--repeats 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path


def main() -> int:
    import torch

    from compress.hardware import microbench as mb
    from compress.hardware.calibrate import fit_roofline
    from compress.hardware.catalog import load_catalog
    from compress.provenance import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="folder for calibrate_copy-<date>.txt")
    a = ap.parse_args()
    torch.set_num_threads(1)
    target = load_catalog()["local-cpu"]
    bw = target.bandwidth_gbps * 1e9 / max(1, target.cores or 1)
    size = mb.copy_sizes_mb()[0]
    lines = [f"calibrate_copy {datetime.now(UTC).isoformat(timespec='seconds')}",
             f"machine: {cpu_model()}, {target.cores} core(s), {platform.node()}; "
             f"load average {mb.loadavg()}",
             f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
             f"copy of {size} MiB, 1 thread, nominal {bw / 1e9:.1f} GB/s per core; GB/s counts "
             "read + write bytes (as the calibration does)", "",
             f"{'repeat':>6}  {'source':<14} {'GB/s':>6}  {'memory efficiency':>17}"]
    for rep in range(a.repeats):
        for label in ("never written", "written"):
            if label == "never written":
                src = torch.empty(size * 2**18)
                dst = torch.empty_like(src)
            else:
                src, dst = mb.copy_arrays(size)
            sec = mb._time(lambda d=dst, s=src: d.copy_(s))
            row = {"flops": 0.0, "bytes": 2.0 * src.numel() * 4, "seconds": sec}
            eff = fit_roofline([row], 0.0, bw)[1]
            lines.append(f"{rep + 1:>6}  {label:<14} {row['bytes'] / sec / 1e9:>6.2f}  "
                         f"{eff:>17.3f}")
            del src, dst
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        out = Path(a.out) / f"calibrate_copy-{datetime.now(UTC):%Y-%m-%d}.txt"
        out.write_text(text)
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
