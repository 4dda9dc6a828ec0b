"""Tiny models are built once even when parallel test workers need the same file at the same moment."""

import multiprocessing
import time

from imageinference.testing.tiny_models import build_once


def _build(dest, log):
    with open(log, "a") as f:
        f.write("built\n")
    time.sleep(0.5)  # long enough for the other worker to ask for the same file meanwhile
    dest.write_text("model")


def _worker(dest, log, start):
    start.wait()
    build_once(dest, lambda: _build(dest, log))


def test_two_workers_asking_for_the_same_file_build_it_once(tmp_path):
    dest, log = tmp_path / "models" / "tiny.safetensors", tmp_path / "builds.log"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_worker, args=(dest, log, start)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(30)
    assert [w.exitcode for w in workers] == [0, 0]
    assert dest.read_text() == "model"
    assert log.read_text() == "built\n"
    build_once(dest, lambda: _build(dest, log))  # cached: not built again
    assert log.read_text() == "built\n"
