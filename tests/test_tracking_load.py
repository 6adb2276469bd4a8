"""benchmarks/tracking_load.py at a tiny size: two writers, three epochs, against the SQLite store and a local
basic-auth `mlflow server` (the figures at full size are in docs/performance.md)."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_tracking_load_benchmark_smoke():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tracking_load.py"), "--writers", "2", "--epochs",
                        "3", "--interval", "0.2", "--metrics", "4", "--stores", "sqlite,server",
                        "--server-workers", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(r.stdout, r.stderr[-3000:])
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {m[0]: m[1:] for m in re.findall(r"^(sqlite|server)\s+2\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)"
                                             r"\s+(\d+)\s+(\d+)$", r.stdout, re.M)}
    assert set(rows) == {"sqlite", "server"}, r.stdout
    for sent, rate, p50, p99, errors, lost in rows.values():
        # 2 writers x 3 epochs x 4 metrics, all stored and read back
        assert (int(sent), int(errors), int(lost)) == (24, 0, 0) and float(rate) > 0 and float(p99) >= float(p50)
    assert not list(Path("/tmp").glob("tracking_load-*/server-2"))  # its temporary folder is gone


def test_tracking_load_benchmark_names_the_fix_for_bad_arguments():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tracking_load.py"), "--stores", "redis"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "choose from sqlite, server, server-open" in r.stderr
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tracking_load.py"), "--writers", "eight"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "give whole numbers separated by commas, e.g. 8,32" in r.stderr
