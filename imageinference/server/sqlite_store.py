"""The task store on one machine: one SQLite file (WAL), so results outlive a ComfyUI restart. Pure.

One connection guarded by a lock; every write is its own transaction. The service calls it from a single worker
thread, so the lock only matters for tests and tools that share an instance.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

from .store import DeliveryRecord, QueueFull, ResultKind, ResultRecord, Status, TaskRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_uuid TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    status TEXT NOT NULL,
    delivery TEXT NOT NULL,
    expected INTEGER NOT NULL,
    webhook_url TEXT,
    upload_endpoint TEXT,
    session_id TEXT,
    request TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(status, task_type);
CREATE TABLE IF NOT EXISTS results (
    task_uuid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (task_uuid, idx)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_uuid TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_at);
"""

_TASK_COLUMNS = ("task_uuid, task_type, status, delivery, expected, webhook_url, upload_endpoint, session_id, "
                 "request, created, updated, warnings")
_RESULT_COLUMNS = "task_uuid, idx, kind, body, created, warnings"
_ADDED_COLUMNS = {"tasks": "warnings", "results": "warnings"}  # added after the first release: old files get them
_OPEN = "status = 'processing' AND task_type = 'imageInference'"


class SqliteTaskStore:
    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            for table, column in _ADDED_COLUMNS.items():
                if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT '[]'")

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ tasks
    def create_task(self, task: TaskRecord, max_unfinished: int | None = None) -> bool:
        values: tuple[Any, ...] = (
            task.task_uuid, task.task_type, task.status, task.delivery, task.expected, task.webhook_url,
            task.upload_endpoint, task.session_id, json.dumps(task.request) if task.request is not None else None,
            task.created, task.updated, json.dumps(task.warnings))
        limited = max_unfinished is not None and task.task_type == "imageInference"
        # One statement: the count and the insertion are one atomic step, whoever else writes the file.
        sql = f"INSERT INTO tasks ({_TASK_COLUMNS}) SELECT ?,?,?,?,?,?,?,?,?,?,?,?"
        if limited:
            sql += f" WHERE (SELECT COUNT(*) FROM tasks WHERE {_OPEN}) < ?"
            values += (max_unfinished,)
        try:
            with self._lock:
                inserted = self._db.execute(sql, values).rowcount
                if not inserted:
                    count = int(self._db.execute(f"SELECT COUNT(*) FROM tasks WHERE {_OPEN}").fetchone()[0])
                    raise QueueFull(count, int(max_unfinished or 0))
        except sqlite3.IntegrityError:
            return False
        return True

    @staticmethod
    def _task(row: tuple[Any, ...]) -> TaskRecord:
        return TaskRecord(row[0], row[1], cast(Status, row[2]), row[3], int(row[4]), row[5], row[6], row[7],
                          json.loads(row[8]) if row[8] else None, float(row[9]), float(row[10]),
                          json.loads(row[11] or "[]"))

    @staticmethod
    def _result(row: tuple[Any, ...]) -> ResultRecord:
        return ResultRecord(row[0], int(row[1]), cast(ResultKind, row[2]), json.loads(row[3]), float(row[4]),
                            json.loads(row[5] or "[]"))

    def get_task(self, task_uuid: str) -> TaskRecord | None:
        rows = self._all(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_uuid = ?", (task_uuid,))
        return self._task(rows[0]) if rows else None

    def snapshot(self, task_uuid: str) -> tuple[TaskRecord | None, list[ResultRecord]]:
        with self._lock:  # one connection, one lock: no write lands between the two reads
            task = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_uuid = ?", (task_uuid,)).fetchall()
            results = self._db.execute(f"SELECT {_RESULT_COLUMNS} FROM results WHERE task_uuid = ? ORDER BY idx",
                                       (task_uuid,)).fetchall()
        return (self._task(task[0]) if task else None), [self._result(r) for r in results]

    def finish_task(self, task_uuid: str, status: Status, now: float) -> None:
        self._run("UPDATE tasks SET status = ?, updated = ? WHERE task_uuid = ?", (status, now, task_uuid))

    def unfinished(self) -> list[TaskRecord]:
        rows = self._all(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status = 'processing' ORDER BY created")
        return [self._task(r) for r in rows]

    def count_unfinished(self) -> int:
        """Unfinished imageInference tasks (what the pending-task limit counts)."""
        return int(self._all(f"SELECT COUNT(*) FROM tasks WHERE {_OPEN}")[0][0])

    # ------------------------------------------------------------------ results
    def snapshots(self, task_uuids: list[str]) -> dict[str, tuple[TaskRecord | None, list[ResultRecord]]]:
        return {u: self.snapshot(u) for u in task_uuids}

    def add_result(self, result: ResultRecord) -> bool:
        with self._lock:
            added = self._db.execute(f"INSERT OR IGNORE INTO results ({_RESULT_COLUMNS}) VALUES (?,?,?,?,?,?)", (
                result.task_uuid, result.index, result.kind, json.dumps(result.body), result.created,
                json.dumps(result.warnings))).rowcount
            if added:
                self._db.execute("UPDATE tasks SET updated = ? WHERE task_uuid = ?", (result.created, result.task_uuid))
        return bool(added)

    def results(self, task_uuid: str) -> list[ResultRecord]:
        rows = self._all(f"SELECT {_RESULT_COLUMNS} FROM results WHERE task_uuid = ? ORDER BY idx", (task_uuid,))
        return [self._result(r) for r in rows]

    # ------------------------------------------------------------------ deliveries
    def add_delivery(self, task_uuid: str, url: str, body: dict[str, Any], next_at: float) -> int:
        cur = self._run("INSERT INTO deliveries (task_uuid, url, body, next_at) VALUES (?,?,?,?)",
                        (task_uuid, url, json.dumps(body), next_at))
        return int(cur.lastrowid or 0)

    def due_deliveries(self, now: float, limit: int = 50) -> list[DeliveryRecord]:
        rows = self._all("SELECT id, task_uuid, url, body, attempts, next_at, status, last_error FROM deliveries "
                         "WHERE status = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?", (now, limit))
        return [DeliveryRecord(int(r[0]), r[1], r[2], json.loads(r[3]), int(r[4]), float(r[5]), r[6], r[7])
                for r in rows]

    def update_delivery(self, delivery: DeliveryRecord) -> None:
        self._run("UPDATE deliveries SET attempts = ?, next_at = ?, status = ?, last_error = ? WHERE id = ?",
                  (delivery.attempts, delivery.next_at, delivery.status, delivery.last_error[:2000], delivery.id))

    def deliveries(self, task_uuid: str) -> list[DeliveryRecord]:
        rows = self._all("SELECT id, task_uuid, url, body, attempts, next_at, status, last_error FROM deliveries "
                         "WHERE task_uuid = ? ORDER BY id", (task_uuid,))
        return [DeliveryRecord(int(r[0]), r[1], r[2], json.loads(r[3]), int(r[4]), float(r[5]), r[6], r[7])
                for r in rows]

    # ------------------------------------------------------------------ housekeeping
    def purge(self, finished_before: float) -> int:
        with self._lock:
            old = [r[0] for r in self._db.execute(
                "SELECT task_uuid FROM tasks WHERE status != 'processing' AND updated < ?", (finished_before,))]
            removed = 0
            for uuid in old:
                pending = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE task_uuid = ? AND "
                                           "status = 'pending'", (uuid,)).fetchone()[0]
                if pending:
                    continue
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM results WHERE task_uuid = ?", (uuid,))
                self._db.execute("DELETE FROM deliveries WHERE task_uuid = ?", (uuid,))
                self._db.execute("DELETE FROM tasks WHERE task_uuid = ?", (uuid,))
                self._db.execute("COMMIT")
                removed += 1
            return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
