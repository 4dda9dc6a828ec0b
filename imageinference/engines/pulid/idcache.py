"""Identity embeddings by content hash (pure): the same image through the same encoder files is encoded once.

The key is a SHA-256 over the image's pixels (with shape and dtype) and the identity of every encoder file
(path, size, modification time), so replacing a file on disk gives new embeddings. The cache is a small LRU held
by the process; values are opaque to it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class FileStamp:
    path: str
    size: int
    mtime_ns: int


def content_key(pixels: bytes, shape: Iterable[int], dtype: str, files: Iterable[FileStamp],
                extra: str = "") -> str:
    h = hashlib.sha256()
    h.update(f"{tuple(shape)}|{dtype}|{extra}|".encode())
    for f in files:
        h.update(f"{f.path}|{f.size}|{f.mtime_ns}|".encode())
    h.update(pixels)
    return h.hexdigest()


class LRU(Generic[V]):
    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)
