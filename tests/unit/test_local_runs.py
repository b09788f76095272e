"""Local runs: long operations answered at once and watched until they end (cems.local.runs)."""

from __future__ import annotations

import threading

from cems.local.runs import Run, Runs


def test_a_run_reports_its_progress_and_its_end() -> None:
    runs = Runs()
    release = threading.Event()
    stepped = threading.Event()

    def work(run: Run) -> None:
        with run.lock:
            run.state = "running"
        run.progress(steps_done=1, delivered=3)
        stepped.set()
        release.wait()
        run.progress(steps_done=2, delivered=4)

    run = runs.start("clock", {"advance_seconds": 7200}, work, steps=2)
    assert stepped.wait(60)  # a hang bound: the worker thread got that far
    halfway = run.view()
    assert (halfway["state"], halfway["steps_done"], halfway["delivered"]) == ("running", 1, 3)
    assert not run.ended.is_set()
    release.set()
    assert run.ended.wait(60)
    done = run.view()
    assert (done["state"], done["steps"], done["steps_done"], done["delivered"]) == ("done", 2, 2, 7)
    assert done["error"] is None
    assert done["watch"] == f"/_local/runs/{run.id}"
    assert runs.get(run.id) is run


def test_a_failed_run_names_the_error_type_only() -> None:
    def work(run: Run) -> None:
        raise ValueError("hanako@example.jp is not a customer")

    run = Runs().start("drain", {}, work)
    assert run.ended.wait(60)
    view = run.view()
    assert view["state"] == "failed"
    assert view["error"] == "ValueError"
    assert "hanako" not in str(view)


def test_only_the_latest_runs_are_kept() -> None:
    runs = Runs(keep=2)
    started = [runs.start("drain", {}, lambda run: None) for _ in range(3)]
    for run in started:
        assert run.ended.wait(60)
    assert [r.id for r in runs.all()] == [r.id for r in started[1:]]
    assert runs.get(started[0].id) is None


def test_only_finished_runs_make_room_and_a_run_still_going_is_kept() -> None:
    runs = Runs(keep=2)
    release = threading.Event()
    going = runs.start("clock", {}, lambda run: release.wait())
    finished = [runs.start("drain", {}, lambda run: None) for _ in range(3)]
    for run in finished:
        assert run.ended.wait(60)  # a hang bound
    runs.start("drain", {}, lambda run: None)
    assert runs.get(going.id) is going  # the oldest, but not over: whoever waits on it gets its end
    assert runs.get(finished[0].id) is None
    release.set()
    assert going.ended.wait(60)
