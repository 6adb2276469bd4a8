"""The fault-injection points of vaanet/faults.py that the slow tests rely on: a meeting of n processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# vaanet/faults.py alone (not the package, which imports torch): a process that reaches the phase "epoch1"
REACH = ("import importlib.util as u, sys; s = u.spec_from_file_location('faults', sys.argv[1]); "
         "m = u.module_from_spec(s); s.loader.exec_module(m); m.hold('epoch2'); m.hold('epoch1')")


def _reach(env):
    return subprocess.Popen([sys.executable, "-c", REACH, str(REPO / "vaanet" / "faults.py")], env=env)


def test_processes_wait_at_the_meeting_phase_until_all_have_come(tmp_path):
    env = {**os.environ, "VAANET_MEET": f"epoch1:2:{tmp_path / 'meet'}"}
    first = _reach(env)
    deadline = time.time() + 60
    while not (tmp_path / "meet").is_dir() or not any((tmp_path / "meet").iterdir()):
        assert first.poll() is None and time.time() < deadline, "the first process never reached the meeting"
        time.sleep(0.05)
    time.sleep(0.5)
    assert first.poll() is None  # alone at the meeting (and past epoch2, which is not it): it waits
    second = _reach(env)
    assert second.wait(timeout=60) == 0 and first.wait(timeout=60) == 0  # both go on once the second has come
    assert sorted(p.name for p in (tmp_path / "meet").iterdir()) == sorted([str(first.pid), str(second.pid)])
