"""The SQLite task store: tasks, results and deliveries survive reopening the file (a restart)."""

import threading

from imageinference.server.sqlite_store import SqliteTaskStore
from imageinference.server.store import ResultRecord, TaskRecord

A = "6c5e0e3c-3d1e-4e6b-9f7a-1b2c3d4e5f60"
B = "7d6f1f4d-4e2f-4f7c-8a8b-2c3d4e5f6071"


def test_a_reused_task_uuid_is_refused(tmp_path):
    store = SqliteTaskStore(tmp_path / "t.sqlite")
    assert store.create_task(TaskRecord(A, "imageInference", created=1, updated=1))
    assert not store.create_task(TaskRecord(A, "imageUpload", created=2, updated=2))
    assert store.get_task(A).task_type == "imageInference"


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "t.sqlite"
    store = SqliteTaskStore(path)
    store.create_task(TaskRecord(A, "imageInference", "processing", "async", 2, "https://h.example/w", None, None,
                                 {"taskUUID": A, "numberResults": 2}, 10.0, 10.0))
    store.create_task(TaskRecord(B, "imageInference", created=11, updated=11))
    store.add_result(ResultRecord(A, 1, "data", {"imageUUID": "x", "taskUUID": A}, 12.0))
    store.add_result(ResultRecord(A, 0, "error", {"code": "inferenceError", "message": "m"}, 13.0))
    assert not store.add_result(ResultRecord(A, 0, "data", {"imageUUID": "y"}, 14.0))  # recorded: the first stays
    store.finish_task(B, "success", 15.0)
    store.add_delivery(A, "https://h.example/w", {"data": [{"imageUUID": "x"}]}, 20.0)
    store.close()

    again = SqliteTaskStore(path)
    task = again.get_task(A)
    assert (task.delivery, task.expected, task.webhook_url, task.request["numberResults"]) == \
        ("async", 2, "https://h.example/w", 2)
    assert [(r.index, r.kind, r.body) for r in again.results(A)] == [(0, "error", {"code": "inferenceError",
                                                                                   "message": "m"}),
                                                                    (1, "data", {"imageUUID": "x", "taskUUID": A})]
    assert [t.task_uuid for t in again.unfinished()] == [A] and again.count_unfinished() == 1
    assert again.due_deliveries(19.0) == []
    (due,) = again.due_deliveries(20.0)
    assert due.body == {"data": [{"imageUUID": "x"}]} and due.attempts == 0
    due.attempts, due.next_at, due.last_error = 1, 30.0, "HTTP 500"
    again.update_delivery(due)
    assert again.due_deliveries(25.0) == [] and again.due_deliveries(30.0)[0].last_error == "HTTP 500"
    due.status = "done"
    again.update_delivery(due)
    assert again.due_deliveries(1e12) == []


def test_purge_forgets_old_finished_tasks_but_not_running_ones_or_pending_webhooks(tmp_path):
    store = SqliteTaskStore(tmp_path / "t.sqlite")
    store.create_task(TaskRecord(A, "imageInference", created=1, updated=1))
    store.create_task(TaskRecord(B, "imageInference", created=1, updated=1))
    store.add_result(ResultRecord(A, 0, "data", {}, 2.0))
    store.finish_task(A, "success", 3.0)
    store.finish_task(B, "success", 3.0)
    store.add_delivery(B, "https://h.example", {}, 3.0)
    assert store.purge(finished_before=100.0) == 1
    assert store.get_task(A) is None and store.results(A) == []
    assert store.get_task(B) is not None  # its webhook is still pending
    assert store.purge(finished_before=2.0) == 0


def test_concurrent_writers_lose_nothing(tmp_path):
    store = SqliteTaskStore(tmp_path / "t.sqlite")
    store.create_task(TaskRecord(A, "imageInference", created=1, updated=1))

    def write(offset):
        for i in range(50):
            store.add_result(ResultRecord(A, offset + i, "data", {"i": offset + i}, 1.0))

    threads = [threading.Thread(target=write, args=(k * 50,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.index for r in store.results(A)] == list(range(200))
