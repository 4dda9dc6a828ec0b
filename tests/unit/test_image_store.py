"""The image store (imageio/store.py) that several threads and ComfyUI processes share: every ttl survives
concurrent writers and sweepers, lookups read only the image's own marker, and expiry deletes only the store's own
names."""

import json
import multiprocessing
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from imageinference.engines.imageio.store import EXPIRY_DIR, ImageStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # the store keeps bytes as given


def _save_many(root: str, count: int, threads: int) -> list[tuple[str, bool]]:
    """In one process: `threads` threads each saving `count` images (every other one with a ttl) while sweeping,
    as ComfyUI's worker, the image route, uploads and housekeeping do at once."""
    store = ImageStore(Path(root))
    saved: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def work() -> None:
        for i in range(count):
            with_ttl = i % 2 == 0
            path = store.save(str(uuid.uuid4()), "PNG", PNG, ttl=60 if with_ttl else None)
            store.expire()
            store.find(path.stem)
            with lock:
                saved.append((path.name, with_ttl))

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return saved


def test_concurrent_writers_in_several_processes_lose_no_ttl(tmp_path):
    root = tmp_path / "shared"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        batches = pool.starmap(_save_many, [(str(root), 40, 3)] * 4)
    saved = [item for batch in batches for item in batch]
    assert len(saved) == 4 * 3 * 40 and len({n for n, _ in saved}) == len(saved)
    store = ImageStore(root)
    assert all((root / name).is_file() for name, _ in saved)  # nothing expired early
    gone = store.expire(now=time.time() + 61)
    with_ttl = {n for n, ttl in saved if ttl}
    assert set(gone) == with_ttl  # every ttl was kept: each image's own marker, no shared index to lose it in
    assert {p.name for p in root.glob("*.png")} == {n for n, ttl in saved if not ttl}
    assert list((root / EXPIRY_DIR).iterdir()) == []


def test_a_lookup_reads_only_its_own_marker(tmp_path, monkeypatch):
    store = ImageStore(tmp_path)
    for _ in range(50):
        store.save(str(uuid.uuid4()), "PNG", PNG, ttl=60)
    wanted = store.save(str(uuid.uuid4()), "PNG", PNG, ttl=60)
    read = []

    def no_scan(*args, **kwargs):
        raise AssertionError("a lookup listed a folder")

    real_open = open

    def recording_open(file, *args, **kwargs):
        read.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", no_scan)
    monkeypatch.setattr(os, "listdir", no_scan)
    monkeypatch.setattr(Path, "iterdir", no_scan)
    monkeypatch.setattr(Path, "glob", no_scan)
    monkeypatch.setattr("builtins.open", recording_open)
    monkeypatch.setattr("io.open", recording_open)
    assert store.find(wanted.stem) == wanted
    assert set(read) <= {wanted.name}, read  # its own marker at most: no index of every image is read
    monkeypatch.undo()
    # past its ttl a lookup alone refuses (and deletes) it, before any sweep
    assert store.find(wanted.stem, now=time.time() + 61) is None and not wanted.exists()


def test_store_finds_by_uuid_only_and_expires(tmp_path):
    store = ImageStore(tmp_path)
    image_uuid = str(uuid.uuid4())
    path = store.save(image_uuid, "PNG", PNG, ttl=60)
    keep = store.save(str(uuid.uuid4()), "JPG", b"\xff\xd8\xff" + b"\0" * 10)
    assert store.find(image_uuid) == path and store.find(image_uuid.upper()) == path
    assert store.find("../" + image_uuid) is None and store.find("expiry") is None
    assert 55 <= store.deadline(path.name) - time.time() <= 60 and store.deadline(keep.name) is None
    assert store.expire(now=time.time() + 30) == []
    assert store.expire(now=time.time() + 61) == [path.name]
    assert not path.exists() and store.find(image_uuid) is None and store.find(keep.stem) == keep


def test_expiry_deletes_only_the_stores_own_files(tmp_path, caplog):
    """Markers can be planted by any client (ComfyUI's /upload/image writes to the output folder)."""
    root = tmp_path / "store"
    store = ImageStore(root)
    mine = store.save(str(uuid.uuid4()), "PNG", PNG, ttl=60)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    inside = root / "notes.txt"
    inside.write_text("keep me too")
    for planted in ("notes.txt", "victim.txt", "expiry.json"):
        (root / EXPIRY_DIR / planted).write_text("0")
    os.symlink(victim, root / EXPIRY_DIR / f"{uuid.uuid4()}.png")  # an own-form marker pointing elsewhere
    assert store.expire(now=time.time() + 61) == [mine.name]
    assert victim.read_text() == "keep me" and inside.read_text() == "keep me too"
    assert not mine.exists()
    assert "ignoring the expiry marker 'notes.txt'" in caplog.text


def test_an_index_of_an_earlier_version_becomes_markers(tmp_path):
    store = ImageStore(tmp_path)
    old = store.save(str(uuid.uuid4()), "PNG", PNG)
    (tmp_path / "expiry.json").write_text(json.dumps({old.name: time.time() + 60, "../x.png": 0}))
    assert store.expire() == [] and not (tmp_path / "expiry.json").exists()
    assert store.expire(now=time.time() + 61) == [old.name]


@pytest.mark.parametrize("where", [".", EXPIRY_DIR])
def test_temporary_files_of_a_killed_writer_are_swept_when_stale(tmp_path, where):
    store = ImageStore(tmp_path)
    store.save(str(uuid.uuid4()), "PNG", PNG, ttl=60)
    folder = tmp_path / where
    stale, fresh = folder / ".ii-abc.tmp", folder / ".ii-def.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    store.expire()
    assert not stale.exists() and fresh.exists()
