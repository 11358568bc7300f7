"""Runs every benchmark in turn (``make bench``) and prints each one's tables.

Each bench runs in its own process (a clean torch state and memory); arguments given here
(e.g. ``--quick``) are passed on to every bench. ``train_step`` also prints its profiler table;
``fid_sqrtm`` times the Fréchet distance's trace term and KID, ``disentanglement --compare`` DCI's
two gradient-boosting backends on synthetic codes (``--full RUN`` needs a run: not part of this).
The run starts by naming the machine: the CPU with its relevant flags, what ``precision: auto``
picks there and why, threads and load (every bench repeats that line above its tables).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [("train_step.py", ["--profile"]), ("thread_policy.py", []), ("epoch_from_jpegs.py", []), ("fid_features.py", []),
           ("fid_sqrtm.py", []), ("disentanglement.py", ["--compare"]), ("decode_latency.py", []),
           ("precision_check.py", [])]


def main() -> int:
    """Runs each bench; returns non-zero if any failed."""
    sys.path.insert(0, str(HERE))
    from common import machine, machine_line

    print(machine_line())
    print(f"precision: auto → {machine()['auto_precision']} ({machine()['auto_precision_reason']})", flush=True)
    failed = []
    for script, extra in BENCHES:
        print(f"\n## {script}\n", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *extra, *sys.argv[1:]], cwd=HERE).returncode:
            failed.append(script)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
