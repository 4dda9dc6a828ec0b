"""WebSocket sessions (`connectionSessionUUID`): frames for a client that is away wait for it to come back. Pure.

A session outlives its socket by `keep_s` seconds (120 s, as the hosted API). Frames pushed while no socket is
attached are buffered, each for `keep_s` seconds; a client that authenticates again with the session's UUID gets
the authentication reply first and then every buffered frame, in order. What a session loses (it expired) is
still retrievable with `getResponse`: results live in the task store, not here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Frame = dict[str, Any]


class Sink(Protocol):
    async def send(self, frame: Frame) -> bool:
        """Send one frame; False when the connection is gone."""
        ...


@dataclass
class Session:
    id: str
    sink: Sink | None = None
    buffer: list[tuple[float, Frame]] = field(default_factory=list)
    detached_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SessionRegistry:
    def __init__(self, keep_s: float = 120.0, clock: Callable[[], float] = time.monotonic,
                 max_buffer: int = 10_000):
        self.keep_s = keep_s
        self.clock = clock
        self.max_buffer = max_buffer
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or self._expired(session):
            return None
        return session

    def _expired(self, session: Session) -> bool:
        return session.sink is None and session.detached_at is not None and \
            self.clock() - session.detached_at > self.keep_s

    async def attach(self, sink: Sink, session_id: str | None = None,
                     first: Callable[[str], Frame] | None = None) -> Session:
        """Attach `sink` to the named session when it is alive, else to a new one; send `first(id)`, then flush."""
        session = self.get(session_id)
        if session is None:
            session = Session(str(uuid.uuid4()))
            self._sessions[session.id] = session
        async with session.lock:
            session.sink, session.detached_at = sink, None
            if first is not None and not await sink.send(first(session.id)):
                self._detach_locked(session)
                return session
            now = self.clock()
            pending, session.buffer = session.buffer, []
            for i, (at, frame) in enumerate(pending):
                if now - at > self.keep_s:
                    continue
                if not await sink.send(frame):
                    session.buffer = pending[i:]
                    self._detach_locked(session)
                    break
        return session

    def _detach_locked(self, session: Session) -> None:
        session.sink = None
        session.detached_at = self.clock()

    def detach(self, session_id: str, sink: Sink) -> None:
        """The socket `sink` closed; the session waits `keep_s` seconds for its client."""
        session = self._sessions.get(session_id)
        if session is not None and session.sink is sink:
            self._detach_locked(session)

    async def push(self, session_id: str, frame: Frame) -> bool:
        """Send to the session's socket, or buffer the frame; True when it was sent now."""
        session = self.get(session_id)
        if session is None:
            return False
        async with session.lock:
            if session.sink is not None:
                if await session.sink.send(frame):
                    return True
                self._detach_locked(session)
            session.buffer.append((self.clock(), frame))
            del session.buffer[:-self.max_buffer]
            return False

    def buffered(self, session_id: str) -> int:
        session = self._sessions.get(session_id)
        return len(session.buffer) if session else 0

    def sweep(self) -> int:
        """Forget expired sessions and frames buffered too long; how many sessions went."""
        now = self.clock()
        gone = [sid for sid, s in self._sessions.items() if self._expired(s)]
        for sid in gone:
            del self._sessions[sid]
        for session in self._sessions.values():
            if session.buffer and not session.lock.locked():
                session.buffer = [(at, f) for at, f in session.buffer if now - at <= self.keep_s]
        return len(gone)
