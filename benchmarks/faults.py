"""Run the fault and fuzz suite and record its figures for the README.

.venv/bin/python benchmarks/faults.py

Every test of the suite asserts a loud outcome (an error naming the field, file or flag, a
refused resume, a kept checkpoint, or a correct result); a failing test is a silent or wrong
outcome. Writes benchmarks/results/faults.json: cases per file, passed, failed, the
property-based examples drawn, the command and the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from qtransformer.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
SUITE = (
    "tests/test_faults.py",
    "tests/test_bad_data.py",
    "tests/test_resume_guard.py",
    "tests/test_kill.py",
    "tests/test_fuzz.py",
)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--hypothesis-show-statistics",
                f"--junitxml={report}",
                *SUITE,
            ],
            cwd=ROOT,
            check=False,
        )
        seconds = time.perf_counter() - t0
        cases = ET.parse(report).getroot().iter("testcase")
        per_file: dict[str, dict[str, int]] = {}
        for case in cases:
            name = case.get("classname", "").split(".")[-1] + ".py"
            row = per_file.setdefault(name, {"cases": 0, "passed": 0, "failed": 0, "skipped": 0})
            row["cases"] += 1
            if case.find("failure") is not None or case.find("error") is not None:
                row["failed"] += 1
            elif case.find("skipped") is not None:
                row["skipped"] += 1
            else:
                row["passed"] += 1
    total = {k: sum(r[k] for r in per_file.values()) for k in ("cases", "passed", "failed")}
    total["skipped"] = sum(r["skipped"] for r in per_file.values())
    out = {
        "command": ".venv/bin/python benchmarks/faults.py",
        "seconds": round(seconds, 1),
        "total": total,
        "files": per_file,
        "machine": machine_info(),
    }
    path = ROOT / "benchmarks" / "results" / "faults.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(total), "->", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
