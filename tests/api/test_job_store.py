"""The job table on disk (issue 7, item 10): rows survive, unfinished jobs become interrupted,
old jobs and orphaned job folders are removed, other folders of the work folder are not."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ternaus_backend.api.job_store import STORE_FILE, JobStore
from ternaus_backend.api.jobs import JobManager, JobOutcome
from ternaus_backend.api.uploads import UploadStore
from ternaus_backend.errors import InputError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def row(job_id: str, status: str = "queued", **extra) -> dict:
    return {
        "id": job_id,
        "kind": "predict",
        "status": status,
        "request": {"rgb": "/data/a.tif", "bbox": [1.5, 2, 3, 4]},
        "work_dir": f"/work/{job_id}",
        "estimate": {"pixels": 12288},
        "created": T0,
        **extra,
    }


def wait(manager: JobManager, job_id: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = manager.get(job_id)
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


# ---------------------------------------------------------------------- the store on its own


def test_store_keeps_rows_in_submission_order_across_connections(tmp_path):
    store = JobStore(tmp_path / STORE_FILE)
    store.insert(row("b00000000001"))
    store.insert(row("a00000000002"))
    store.update(
        "b00000000001",
        status="succeeded",
        result={"buildings": 3, "out": "/work/b/buildings.gpkg"},
        result_file=Path("/work/b00000000001/buildings.gpkg"),
        started=T0 + timedelta(seconds=1),
        finished=T0 + timedelta(seconds=5),
        progress={"stage": "write", "done": 1, "total": 1, "fraction": 1.0, "info": {}},
    )
    store.update("a00000000002", error={"message": "bad", "details": None}, status="failed")
    store.close()

    again = JobStore(tmp_path / STORE_FILE)
    assert not again.recovered
    rows = again.all()
    assert [r["id"] for r in rows] == ["b00000000001", "a00000000002"]
    first = rows[0]
    assert first["status"] == "succeeded" and first["result"]["buildings"] == 3
    assert first["request"] == {"rgb": "/data/a.tif", "bbox": [1.5, 2, 3, 4]}
    assert first["result_file"] == "/work/b00000000001/buildings.gpkg"
    assert first["finished"] - first["created"] == timedelta(seconds=5)
    assert first["finished"].tzinfo is not None and first["cancel_requested"] is False
    assert rows[1]["error"] == {"message": "bad", "details": None} and rows[1]["started"] is None
    assert again.get("nope") is None
    again.delete(["b00000000001"])
    assert [r["id"] for r in again.all()] == ["a00000000002"]
    with pytest.raises(ValueError, match="not columns"):
        again.update("a00000000002", colour="red")


def test_store_is_in_wal_mode_and_takes_writes_from_many_threads(tmp_path):
    store = JobStore(tmp_path / STORE_FILE)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                job_id = f"{n:02d}{i:010d}"
                store.insert(row(job_id))
                store.update(job_id, status="running", started=T0)
                store.update(job_id, status="succeeded", result={"i": i}, finished=T0)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = store.all()
    assert len(rows) == 150 and {r["status"] for r in rows} == {"succeeded"}


def test_store_marks_unfinished_jobs_interrupted(tmp_path):
    store = JobStore(tmp_path / STORE_FILE)
    for job_id, status in [("q" * 12, "queued"), ("r" * 12, "running"), ("s" * 12, "succeeded")]:
        store.insert(row(job_id, status))
    ids = store.interrupt_unfinished(lambda was: {"message": f"was {was}", "details": None}, T0)
    assert ids == ["q" * 12, "r" * 12]
    by_id = {r["id"]: r for r in store.all()}
    assert by_id["q" * 12]["status"] == "interrupted"
    assert by_id["q" * 12]["error"]["message"] == "was queued"
    assert by_id["r" * 12]["error"]["message"] == "was running"
    assert by_id["r" * 12]["finished"] == T0
    assert by_id["s" * 12]["status"] == "succeeded" and by_id["s" * 12]["error"] is None


def test_an_unreadable_table_is_moved_aside(tmp_path):
    (tmp_path / STORE_FILE).write_bytes(b"not a database at all" * 100)
    store = JobStore(tmp_path / STORE_FILE)
    assert store.recovered and store.all() == []
    assert (tmp_path / f"{STORE_FILE}.unreadable-1").read_bytes().startswith(b"not a database")


# ---------------------------------------------------------------------- the manager over restarts


def test_finished_jobs_survive_a_restart(tmp_path):
    first = JobManager(tmp_path / "jobs")

    def writes_file(ctx):
        out = ctx.work_dir / "buildings.gpkg"
        out.write_bytes(b"gpkg")
        return JobOutcome({"out": out, "buildings": 2}, file=out)

    def fails(ctx):
        raise InputError("The raster is empty; choose another extent.", details="0 x 0 px")

    ok = wait(first, first.submit("predict", {"rgb": "a.tif"}, writes_file, {"pixels": 9})["id"])
    bad = wait(first, first.submit("train", {}, fails)["id"])
    first.shutdown()

    second = JobManager(tmp_path / "jobs")
    try:
        jobs = second.list_jobs()
        assert [j["id"] for j in jobs] == [ok["id"], bad["id"]]
        assert jobs[0] == ok  # every public field, timestamps included
        assert jobs[1] == bad and jobs[1]["error"]["details"] == "0 x 0 px"
        snapshot, path = second.result_file(ok["id"])
        assert snapshot["has_file"] and path.read_bytes() == b"gpkg"
        second.delete(bad["id"])
    finally:
        second.shutdown()
    third = JobManager(tmp_path / "jobs")
    assert [j["id"] for j in third.list_jobs()] == [ok["id"]]
    third.shutdown()


def test_jobs_of_a_dead_server_are_interrupted(tmp_path):
    gate = threading.Event()

    def blocks(ctx):
        gate.wait(10)
        return JobOutcome({})

    dying = JobManager(tmp_path, max_workers=1)
    running = dying.submit("predict", {}, blocks)["id"]
    queued = dying.submit("evaluate", {}, blocks)["id"]
    deadline = time.monotonic() + 10
    while dying.get(running)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # no shutdown: as if the process had been killed; a new server opens the same folder
    dying._release_work_folder()  # the operating system drops a killed process's lock
    restarted = JobManager(tmp_path, max_workers=1)
    try:
        jobs = {j["id"]: j for j in restarted.list_jobs(status="interrupted")}
        assert set(jobs) == {running, queued}
        assert "while this job was running" in jobs[running]["error"]["message"]
        assert "while this job was queued" in jobs[queued]["error"]["message"]
        assert "submit it again" in jobs[queued]["error"]["message"]
        assert jobs[running]["started"] is not None and jobs[queued]["started"] is None
        assert (tmp_path / running).is_dir()  # kept until the retention
        again = wait(restarted, restarted.submit("predict", {}, lambda ctx: JobOutcome({}))["id"])
        assert again["status"] == "succeeded"
    finally:
        gate.set()
        dying.shutdown()
        restarted.shutdown()


def test_shutdown_keeps_a_partial_result_and_a_cancel_asked_for_before(tmp_path):
    started = threading.Event()

    def trains(ctx):
        started.set()
        while not ctx.cancel.cancelled:
            time.sleep(0.01)
        return JobOutcome({"best": "kept"}, cancelled=True)

    manager = JobManager(tmp_path, max_workers=2)
    interrupted = manager.submit("train", {}, trains)["id"]
    assert started.wait(10)
    started.clear()
    cancelled = manager.submit("train", {}, trains)["id"]
    assert started.wait(10)
    manager.cancel(cancelled)
    manager.shutdown(wait=True)
    reopened = JobManager(tmp_path)
    try:
        for jobs in (manager, reopened):
            job = jobs.get(interrupted)
            assert job["status"] == "interrupted" and job["result"] == {"best": "kept"}
            assert "is kept in its result" in job["error"]["message"]
            assert jobs.get(cancelled)["status"] == "cancelled"
    finally:
        reopened.shutdown()


def test_old_jobs_are_removed_with_their_folders(tmp_path):
    manager = JobManager(tmp_path, retention_days=14)
    job_id = wait(manager, manager.submit("predict", {}, lambda ctx: JobOutcome({}))["id"])["id"]
    assert (tmp_path / job_id).is_dir()
    assert manager.clean(datetime.now(timezone.utc) + timedelta(days=13)) == []
    assert manager.clean(datetime.now(timezone.utc) + timedelta(days=15)) == [job_id]
    assert manager.list_jobs() == [] and not (tmp_path / job_id).exists()
    manager.shutdown()
    assert JobStore(tmp_path / STORE_FILE).all() == []


def test_old_jobs_are_removed_at_startup_and_at_submission(tmp_path):
    manager = JobManager(tmp_path, retention_days=1)
    ids = [
        wait(manager, manager.submit("predict", {}, lambda ctx: JobOutcome({}))["id"])["id"]
        for _ in range(3)
    ]
    manager.shutdown()
    store = JobStore(tmp_path / STORE_FILE)
    long_ago = datetime.now(timezone.utc) - timedelta(days=2)
    store.update(ids[0], finished=long_ago)
    store.close()

    forever = JobManager(tmp_path, retention_days=0)  # 0: nothing is ever removed
    assert forever.clean(datetime.now(timezone.utc) + timedelta(days=3650)) == []
    assert len(forever.list_jobs()) == 3
    forever.shutdown()

    restarted = JobManager(tmp_path, retention_days=1)
    assert [j["id"] for j in restarted.list_jobs()] == ids[1:]
    assert not (tmp_path / ids[0]).exists() and (tmp_path / ids[1]).is_dir()
    restarted._jobs[ids[1]].finished = long_ago  # as if a day had passed while it ran
    restarted.submit("predict", {}, lambda ctx: JobOutcome({}))
    assert ids[1] not in {j["id"] for j in restarted.list_jobs()}
    assert not (tmp_path / ids[1]).exists()
    restarted.shutdown()


def test_only_folders_of_deleted_jobs_go_at_startup_unknown_ones_stay(tmp_path, caplog):
    """Issue 18, item 1: a job folder goes only when the server knows it is garbage (its job was
    deleted: the folder carries job.deleted); a job-named folder it knows nothing about stays."""
    manager = JobManager(tmp_path)
    kept = wait(manager, manager.submit("predict", {}, lambda ctx: JobOutcome({}))["id"])["id"]
    manager.shutdown()
    unknown = tmp_path / "0123456789ab"  # neither a row nor a job.json: kept, logged
    (unknown / "tmp").mkdir(parents=True)
    (unknown / "tmp" / "part.bin").write_bytes(b"x")
    deleted = tmp_path / "abcdefabcdef"  # a crash while deleting: marked, row gone
    deleted.mkdir()
    (deleted / "job.deleted").touch()
    (deleted / "buildings.gpkg").write_bytes(b"old")
    uploads = tmp_path / "uploads" / ("f" * 32)
    uploads.mkdir(parents=True)
    (uploads / "upload.json").write_text("{}")
    others = [tmp_path / "models", tmp_path / "0123456789AB", tmp_path / "0123456789abc"]
    for folder in others:
        folder.mkdir()
    (tmp_path / "ba9876543210").write_text("a file, not a job folder")

    restarted = JobManager(tmp_path)
    restarted.shutdown()
    assert (unknown / "tmp" / "part.bin").is_file() and not deleted.exists()
    assert f"keeping the folder {unknown}" in caplog.text
    assert (tmp_path / kept).is_dir() and (uploads / "upload.json").is_file()
    assert all(folder.is_dir() for folder in others)
    assert (tmp_path / "ba9876543210").is_file()
    assert [j["id"] for j in JobManager(tmp_path).list_jobs()] == [kept]


def _job_with_model(ctx):
    out = ctx.work_dir / "model.safetensors"
    out.write_bytes(b"trained weights")
    return JobOutcome({"model": out, "val_f1": 0.5}, file=out)


def test_a_damaged_table_is_rebuilt_from_the_job_folders_and_stays_rebuilt(tmp_path):
    """Issue 18, item 1: the table is damaged; the restart rebuilds the jobs from their
    job.json, and the start after that (a sound, new table) deletes nothing."""
    manager = JobManager(tmp_path)
    trained = wait(manager, manager.submit("train", {"epochs": 2}, _job_with_model)["id"])
    failed = wait(
        manager, manager.submit("predict", {}, lambda ctx: 1 / 0)["id"]
    )  # a failed job too
    manager.shutdown()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)
    (tmp_path / STORE_FILE).write_bytes(b"garbage" * 1000)

    for _ in range(3):  # the first start rebuilds, the later ones keep
        restarted = JobManager(tmp_path)
        try:
            jobs = restarted.list_jobs()
            assert jobs == [trained, failed]
            snapshot, path = restarted.result_file(trained["id"])
            assert snapshot["has_file"] and path.read_bytes() == b"trained weights"
        finally:
            restarted.shutdown()
    assert (tmp_path / f"{STORE_FILE}.unreadable-1").is_file()


def test_a_table_deleted_under_a_running_server_is_recreated(tmp_path):
    """Issue 18, item 1: the table is deleted while jobs run; the next write notices, starts a
    new table and puts back every job the server holds, and a restart keeps them all."""
    gate = threading.Event()

    def blocks(ctx):
        gate.wait(10)
        return _job_with_model(ctx)

    manager = JobManager(tmp_path)
    try:
        done = wait(manager, manager.submit("train", {}, _job_with_model)["id"])
        running = manager.submit("train", {}, blocks)["id"]
        while manager.get(running)["status"] != "running":
            time.sleep(0.01)
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)
        gate.set()
        finished = wait(manager, running)
        assert finished["status"] == "succeeded"
        assert manager._store.recreated == 1
        rows = JobStore(tmp_path / STORE_FILE).all()  # a second connection sees the new file
        assert [(r["id"], r["status"]) for r in rows] == [
            (done["id"], "succeeded"),
            (running, "succeeded"),
        ]
    finally:
        gate.set()
        manager.shutdown()
    restarted = JobManager(tmp_path)
    try:
        assert restarted.list_jobs() == [done, finished]
    finally:
        restarted.shutdown()


def test_a_table_deleted_before_a_crash_is_rebuilt_from_the_folders(tmp_path):
    """The table goes while the server runs and the server dies before writing again: the
    next start rebuilds every job from the folders (the running one as interrupted)."""
    gate = threading.Event()
    dying = JobManager(tmp_path)
    try:
        done = wait(dying, dying.submit("train", {}, _job_with_model)["id"])
        running = dying.submit("train", {}, lambda ctx: gate.wait(10) and JobOutcome({}))["id"]
        while dying.get(running)["status"] != "running":
            time.sleep(0.01)
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)
        dying._release_work_folder()  # as if the process had been killed
        restarted = JobManager(tmp_path)
        try:
            jobs = {j["id"]: j for j in restarted.list_jobs()}
            assert jobs[done["id"]] == done
            assert jobs[running]["status"] == "interrupted"
            assert (tmp_path / done["id"] / "model.safetensors").is_file()
        finally:
            restarted.shutdown()
    finally:
        gate.set()
        dying.shutdown()


def test_old_uploads_go_unless_an_unfinished_job_names_them(tmp_path):
    root = tmp_path / "uploads"
    busy_text = {"text": ""}
    store = UploadStore(root, retention_days=1, in_use=lambda: busy_text["text"])
    old, busy, fresh = (store.create(f"{n}.tif", 4, None) for n in ("old", "busy", "fresh"))
    busy_text["text"] = json.dumps([{"rgb": str(root / busy.id / "busy.tif")}])
    two_days_ago = time.time() - 2 * 86400
    for upload in (old, busy):
        for path in [root / upload.id, *(root / upload.id).iterdir()]:
            os.utime(path, (two_days_ago, two_days_ago))
    (root / "notes").mkdir()  # not an upload: never touched
    os.utime(root / "notes", (two_days_ago, two_days_ago))

    assert UploadStore(root, retention_days=0).clean() == []  # 0: kept for ever
    assert store.clean() == [old.id]
    assert not (root / old.id).exists()
    assert (root / busy.id).is_dir() and (root / fresh.id).is_dir() and (root / "notes").is_dir()
    busy_text["text"] = ""
    store.create("next.tif", 4, None)  # a new upload cleans too
    assert not (root / busy.id).exists() and (root / fresh.id).is_dir()


def test_the_app_cleans_old_uploads_at_startup(tmp_path):
    from ternaus_backend.api.main import create_app
    from ternaus_backend.settings import Settings

    upload = UploadStore(tmp_path / "uploads").create("a.tif", 4, None)
    long_ago = time.time() - 30 * 86400
    for path in [tmp_path / "uploads" / upload.id, *(tmp_path / "uploads" / upload.id).iterdir()]:
        os.utime(path, (long_ago, long_ago))
    create_app(Settings(work_dir=tmp_path, job_retention_days=60)).state.jobs.shutdown()
    assert (tmp_path / "uploads" / upload.id).is_dir()
    create_app(Settings(work_dir=tmp_path)).state.jobs.shutdown()  # 14 days by default
    assert not (tmp_path / "uploads" / upload.id).exists()
