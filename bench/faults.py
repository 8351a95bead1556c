"""Benchmark: every trial exactly once, whatever fails (the fault suite's table).

Runs every scenario of tests/fault_scenarios.py on one real control plane (KWOK's fake
GPU nodes; the trial pods are ended by tests/workload.py's stand-in) and writes the
table of docs/reliability.md: trials finished, Job creations (from the API server's
audit log), pods that did a trial's work, lost and duplicated trials, operator
restarts, its peak memory, the tuning's wall time and, for a scenario with a single
fault moment, the time to recover. tests/test_faults.py runs the
scenarios that fit CI's time, with assertions.

    ../.venv/bin/python faults.py [--only SUBSTRING]     # about 20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from common import ROOT, machine, write_table

sys.path.insert(0, str(ROOT / "tests"))

from cluster import Cluster
from fault_scenarios import SCENARIOS
from faults import POOL

CRDS = ROOT / "charts" / "diartune" / "crds"


def main() -> None:
    """Run the scenarios; write bench-output/faults.{csv,md,json}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench-output")
    parser.add_argument("--only", default="", help="run the scenarios whose name has this")
    args = parser.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rows, details = [], {}
    with Cluster() as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        cluster.add_gpu_nodes(3, gpus_per_node=2, prefix="faults-gpu-", labels=POOL)
        for name, scenario in SCENARIOS.items():
            if args.only not in name:
                continue
            folder = output / "faults" / name.split(":")[0].replace(" ", "-")
            folder.mkdir(parents=True, exist_ok=True)
            try:
                row = scenario(cluster, folder)
            except Exception:  # a scenario that did not finish is a row too
                rows.append({"scenario": name, "phase": "did not finish"})
                details[name] = traceback.format_exc()
                print(f"{name}: did not finish", flush=True)
                continue
            details[name] = row.pop("facts")
            if row.get("time_to_recover_s") is None:  # no single fault moment: left empty
                row["time_to_recover_s"] = ""
            rows.append({"scenario": name, **row, "recovered": _recovered(row)})
            print(json.dumps(rows[-1]), flush=True)
    write_table(output, "faults", rows)
    (output / "faults.json").write_text(json.dumps(details, indent=1, default=str))
    lost = sum(row.get("lost", 0) for row in rows)
    duplicated = sum(row.get("duplicated", 0) for row in rows)
    recovered = sum(row.get("recovered") == "yes" for row in rows)
    print(
        f"faults ({machine()}): {len(rows)} scenarios, {lost} lost, {duplicated} duplicated, "
        f"{recovered} recovered without a human; peak operator RSS "
        f"{max(row.get('operator_peak_rss_mib', 0) for row in rows)} MiB"
    )


def _recovered(row: dict[str, object]) -> str:
    clean = row.get("lost") == 0 and row.get("duplicated") == 0
    return "yes" if row.get("phase") == "Succeeded" and clean else "no"


if __name__ == "__main__":
    main()
