"""Many concurrent trials logging to MLflow: the default SQLite store against one `mlflow server`.

N writer processes (each a trial: its own MlflowClient, its own run) log one epoch's metrics per
``--interval`` seconds (one ``log_batch`` of ``--metrics`` values, as vaanet's Tracker sends an epoch), for
``--epochs`` epochs, all at once. Stores:

- ``sqlite``: ``sqlite:///<tmp>/mlflow.db``, every writer opens the file itself (vaanet's default store, and
  what a SLURM job used before it started its own server);
- ``server``: a local ``mlflow server`` on 127.0.0.1 and a free port, with basic auth as the SLURM job and
  ray_cluster.yaml start it (``--app-name basic-auth``, the admin password only in the environment), its
  store in the same kind of SQLite file, written by the server alone; writers log over HTTP. Started for
  the measurement and stopped by its process group id;
- ``server-open``: the same server without authentication (what basic auth costs: MLflow checks the
  password hash, werkzeug's scrypt, on every request).

Printed per store and N: metrics sent/s (successfully logged values over the logging phase's wall time),
the target rate (N x metrics / interval), p50/p99 latency of one epoch's ``log_batch``, errors (calls that
raised, after MLflow's own retries) and lost values (sent but not read back; read back with
``get_metric_history``; must be 0).

    python benchmarks/tracking_load.py                       # N = 8, 32; 10 epochs at 1 s each
    python benchmarks/tracking_load.py --writers 2 --epochs 3 --interval 0.2   # the smoke size
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _writer(uri: str, experiment_id: str, index: int, epochs: int, interval: float, n_metrics: int, barrier,
            results) -> None:
    """One trial: a run, then one log_batch per epoch at the given pace; reports its latencies."""
    import logging

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # no "View run ... at" line per writer
    client = MlflowClient(uri)
    run_id, errors, latencies, sent = None, 0, [], 0
    try:
        run_id = client.create_run(experiment_id, run_name=f"writer-{index}").info.run_id
    except Exception as e:  # noqa: BLE001 - counted: a trial that cannot start its run
        results.put({"index": index, "run_id": None, "errors": epochs + 1, "latencies": [], "sent": 0,
                     "first_error": f"{type(e).__name__}: {str(e)[:200]}"})
        barrier.wait()
        return
    first_error = ""
    barrier.wait()  # every writer starts logging at once
    start = time.perf_counter()
    for epoch in range(epochs):
        delay = start + epoch * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = int(time.time() * 1000)
        batch = [Metric(f"metric_{k:02d}", index + epoch / 1000 + k / 1e6, now, epoch + 1) for k in range(n_metrics)]
        t0 = time.perf_counter()
        try:
            client.log_batch(run_id, metrics=batch)
            sent += len(batch)
        except Exception as e:  # noqa: BLE001 - counted, and the first one reported
            errors += 1
            first_error = first_error or f"{type(e).__name__}: {str(e)[:200]}"
        latencies.append(time.perf_counter() - t0)
    try:
        client.set_terminated(run_id, "FINISHED")
    except Exception as e:  # noqa: BLE001
        errors += 1
        first_error = first_error or f"{type(e).__name__}: {str(e)[:200]}"
    results.put({"index": index, "run_id": run_id, "errors": errors, "latencies": latencies, "sent": sent,
                 "first_error": first_error, "start": start, "end": time.perf_counter()})


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Server:
    """A local `mlflow server` with basic auth on 127.0.0.1 and a free port; stopped by its process group."""

    def __init__(self, folder: Path, workers: int, auth: bool = True):
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(24)
        (folder / "auth.ini").write_text(
            "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        command = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
                   *(["--app-name", "basic-auth"] if auth else []), "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
                   "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                   "--artifacts-destination", str(folder / "mlartifacts")]
        self.log = open(folder / "server.log", "wb")
        self.proc = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while not self._answers():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"the MLflow server did not start; its log: {folder / 'server.log'}\n"
                                   + (folder / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.5)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()


def measure(uri: str, writers: int, epochs: int, interval: float, n_metrics: int) -> dict:
    """Run the writers against one store; returns the row of the table."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"load-{writers}-{time.time_ns()}")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, experiment_id, i, epochs, interval, n_metrics, barrier, results))
             for i in range(writers)]
    for p in procs:
        p.start()
    out = [results.get(timeout=600 + epochs * interval * 10) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    latencies = [x for r in out for x in r["latencies"]]
    errors = sum(r["errors"] for r in out)
    sent = sum(r["sent"] for r in out)
    wall = max(r.get("end", 0) for r in out) - min(r.get("start", float("inf")) for r in out) if sent else float("nan")
    # read back: every value sent must be stored, with its step and value
    lost = 0
    for r in out:
        if r["run_id"] is None:
            lost += epochs * n_metrics
            continue
        for k in range(n_metrics):
            stored = {(m.step, m.value) for m in client.get_metric_history(r["run_id"], f"metric_{k:02d}")}
            wanted = {(e + 1, r["index"] + e / 1000 + k / 1e6) for e in range(epochs)}
            lost += len(wanted - stored)
    first = next((r["first_error"] for r in out if r["first_error"]), "")
    return {"writers": writers, "sent": sent, "rate": sent / wall if wall == wall and wall > 0 else 0.0,
            "target": writers * n_metrics / interval, "p50": _percentile(latencies, 50) * 1000,
            "p99": _percentile(latencies, 99) * 1000, "errors": errors, "lost": lost, "first_error": first}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", default="8,32", help="comma-separated numbers of concurrent writers (trials)")
    p.add_argument("--epochs", type=int, default=10, help="epochs each writer logs")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds per epoch (1.0: a fast GPU trial on a small set; a VE-8 epoch takes longer)")
    p.add_argument("--metrics", type=int, default=8, help="metrics per epoch (vaanet's Tracker logs 8)")
    p.add_argument("--stores", default="sqlite,server,server-open", help="which stores: sqlite, server, server-open")
    p.add_argument("--server-workers", type=int, default=4, help="worker processes of the mlflow server")
    args = p.parse_args(argv)
    try:
        counts = [int(x) for x in args.writers.split(",") if x]
    except ValueError:
        p.error(f"--writers {args.writers!r}: give whole numbers separated by commas, e.g. 8,32")
    stores = [s for s in args.stores.split(",") if s]
    if not counts or min(counts) < 1:
        p.error("--writers: give at least one positive number, e.g. 8,32")
    if not stores or set(stores) - {"sqlite", "server", "server-open"}:
        p.error(f"--stores {args.stores!r}: choose from sqlite, server, server-open (e.g. sqlite,server)")
    if args.epochs < 1 or args.interval <= 0 or args.metrics < 1 or args.server_workers < 1:
        p.error("--epochs, --metrics and --server-workers must be positive, --interval above 0")
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    print(f"{os.cpu_count()} CPUs; {args.epochs} epochs of {args.metrics} metrics per writer, one log_batch every "
          f"{args.interval:g} s; server: mlflow server --app-name basic-auth --workers {args.server_workers}",
          flush=True)
    print(f"{'store':<11} {'writers':>7} {'sent':>7} {'metrics/s':>10} {'target/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'lost':>5}", flush=True)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="tracking_load-") as tmp:
        for store in stores:
            for n in counts:
                folder = Path(tmp) / f"{store}-{n}"
                folder.mkdir()
                server = None
                if store.startswith("server"):
                    server = Server(folder, args.server_workers, auth=store == "server")
                    if store == "server":
                        os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"  # the writers inherit it (spawn)
                        os.environ["MLFLOW_TRACKING_PASSWORD"] = server.password
                    uri = server.url
                else:
                    uri = f"sqlite:///{folder / 'mlflow.db'}"
                try:
                    row = measure(uri, n, args.epochs, args.interval, args.metrics)
                finally:
                    if server is not None:
                        server.stop()
                        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
                        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
                print(f"{store:<11} {n:>7} {row['sent']:>7} {row['rate']:>10.1f} {row['target']:>9.1f} "
                      f"{row['p50']:>8.1f} {row['p99']:>8.1f} {row['errors']:>6} {row['lost']:>5}", flush=True)
                if row["first_error"]:
                    print(f"  first error: {row['first_error']}", flush=True)
                bad += row["errors"] + row["lost"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
