"""The study's console while it runs: a trial the study's stop (SIGTERM) ended is reported as stopped, never as
done, so that the line a user reads before the rerun says what a rerun has left to do."""
import io
from types import SimpleNamespace

from vaanet.tune.progress import StudyProgress


def _trial(name: str, row: str):
    return SimpleNamespace(trial_id=name, config={"point": {"name": name, "tags": {"row": row}}})


def test_a_stopped_trial_is_counted_as_stopped_not_done():
    out = io.StringIO()
    progress = StudyProgress(total=3, concurrent=2, stream=out)
    a, b = _trial("VS_split_00_seed0", "VS"), _trial("AT_split_00_seed0", "AT")
    progress.on_trial_start(0, [], a)
    progress.on_trial_start(0, [], b)
    progress.on_trial_result(0, [], a, {"test_acc": 0.5, "test_polarity_acc": 0.75})
    progress.on_trial_result(0, [], b, {"done": True, "stopped": True})
    progress.on_trial_complete(0, [], b)  # Tune completes it too: no second line
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("study: 1/3 trials done, 1 running, 1 pending, 0 failed |")
    assert lines[1].startswith("study: 1/3 trials done, 0 running, 1 pending, 0 failed, 1 stopped |")
    assert lines[1].split(" | ")[2] == "[AT_split_00_seed0] stopped" and len(lines) == 2
