"""The progress line of a job: its stage in words and a time left that follows the stage's pace."""

from __future__ import annotations

import time

import pytest

from ternaus_qgis.core.jobs import Progress, follow_job, format_seconds, report_job
from ternaus_qgis.core.training import STAGE_SPAN, STAGE_TEXT
from ternaus_qgis.exceptions import JobFailedError


def one_report(job: dict, stage_seconds: float) -> tuple[float, str]:
    seen: list[tuple[float, str]] = []
    progress = Progress(report=lambda pct, text: seen.append((pct, text)), cancelled=lambda: False)
    report_job(job, time.monotonic() - stage_seconds, progress, STAGE_TEXT, STAGE_SPAN)
    return seen[-1]


def test_time_left_follows_the_training_pace_not_the_slow_start():
    # Half of the training steps took 60 s (whatever reading the data took before): about 60 s
    # remain, not the minutes an estimate from the job's start would give.
    job = {"status": "running", "progress": {"stage": "train", "fraction": 0.5}}
    percent, text = one_report(job, 60.0)
    assert percent == pytest.approx(52.5)
    assert text.startswith("Training") and "about 60 s left" in text


def test_no_guess_before_the_stage_has_made_progress():
    job = {"status": "running", "progress": {"stage": "train", "fraction": 0.01}}
    assert "left" not in one_report(job, 30.0)[1]


def test_format_seconds():
    assert [format_seconds(s) for s in (0.2, 45, 600, 3900)] == [
        "1 s",
        "45 s",
        "10 min",
        "1 h 05 min",
    ]


def test_a_job_interrupted_by_a_backend_restart_fails_with_its_message():
    """Issue 7, item 10: a job the backend lost in a restart ends the wait with its error."""
    interrupted = {
        "id": "0123456789ab",
        "status": "interrupted",
        "error": {
            "message": "The backend stopped while this job was running, so it did not finish; "
            "submit it again.",
            "details": "marked interrupted when the backend started again",
        },
    }

    class Client:
        polls = 0

        def job(self, job_id):
            self.polls += 1
            assert self.polls < 4, "kept polling a job that will never finish"
            return interrupted

    progress = Progress(report=lambda percent, text: None, cancelled=lambda: False)
    with pytest.raises(JobFailedError, match="submit it again") as raised:
        follow_job(Client(), None, {"id": "0123456789ab"}, progress, {}, {})
    assert raised.value.details == "marked interrupted when the backend started again"
