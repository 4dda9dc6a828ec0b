"""WebSocket sessions (`connectionSessionUUID`): frames for a client that is away wait for it to come back. Pure.

A session outlives its socket by `keep_s` seconds (120 s, as the hosted API). Frames pushed while no socket is
attached are buffered, each for `keep_s` seconds; a client that authenticates again with the session's UUID gets
the authentication reply first and then every buffered frame, in order.

Memory is bounded in bytes, not frames (a frame can hold several MB of base64): at most `max_session_bytes`
buffered per session and `max_total_bytes` over all sessions, and at most `max_sessions` sessions (the oldest
session that is away makes room for a new one; when every session has a live socket a new one is refused). A frame
that does not fit is not buffered, and is logged: nothing is lost, since results live in the task store and
`getResponse` answers them (docs/endpoint.md, "WebSocket").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Frame = dict[str, Any]
log = logging.getLogger("imageinference.server")


class Sink(Protocol):
    async def send(self, text: str) -> bool:
        """Send one frame (JSON text); False when the connection is gone."""
        ...


class TooManySessions(Exception):
    pass


def frame_text(frame: Frame) -> str:
    return json.dumps(frame, ensure_ascii=False)


@dataclass
class Buffered:
    at: float
    text: str
    size: int  # bytes on the wire


@dataclass
class Session:
    id: str
    sink: Sink | None = None
    buffer: list[Buffered] = field(default_factory=list)
    detached_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dropped: int = 0  # frames not buffered for lack of room (their results are in getResponse)

    @property
    def buffered_bytes(self) -> int:
        return sum(b.size for b in self.buffer)


class SessionRegistry:
    def __init__(self, keep_s: float = 120.0, clock: Callable[[], float] = time.monotonic,
                 max_session_bytes: int = 64 * 1024 * 1024, max_total_bytes: int = 512 * 1024 * 1024,
                 max_sessions: int = 1000):
        self.keep_s = keep_s
        self.clock = clock
        self.max_session_bytes, self.max_total_bytes = max_session_bytes, max_total_bytes
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def total_bytes(self) -> int:
        return self._total

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

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._total -= session.buffered_bytes
            session.buffer = []

    def _new_session(self) -> Session:
        if len(self._sessions) >= self.max_sessions:
            self.sweep()
        if len(self._sessions) >= self.max_sessions:
            away = [s for s in self._sessions.values() if s.sink is None]
            if not away:
                raise TooManySessions(f"{self.max_sessions} WebSocket sessions are open "
                                      "(IMAGEINFERENCE_WS_MAX_SESSIONS)")
            oldest = min(away, key=lambda s: s.detached_at or 0.0)
            log.warning("imageInference endpoint: session %s dropped to make room for a new one (%d sessions, "
                        "IMAGEINFERENCE_WS_MAX_SESSIONS); its results stay in getResponse", oldest.id,
                        len(self._sessions))
            self._forget(oldest.id)
        session = Session(str(uuid.uuid4()))
        self._sessions[session.id] = session
        return session

    async def attach(self, sink: Sink, session_id: str | None = None,
                     first: Callable[[str], Frame] | None = None) -> Session:
        """Attach `sink` to the named session when it is alive, else to a new one; send `first(id)`, then flush.
        TooManySessions when a new session is needed and there is no room for it."""
        session = self.get(session_id) or self._new_session()
        async with session.lock:
            session.sink, session.detached_at = sink, None
            if first is not None and not await sink.send(frame_text(first(session.id))):
                self._detach_locked(session)
                return session
            now = self.clock()
            pending, session.buffer = session.buffer, []
            self._total -= sum(b.size for b in pending)
            for i, item in enumerate(pending):
                if now - item.at > self.keep_s:
                    continue
                if not await sink.send(item.text):
                    session.buffer = pending[i:]
                    self._total += session.buffered_bytes
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
        """Send to the session's socket, or buffer the frame if it fits; True when it was sent now."""
        session = self.get(session_id)
        if session is None:
            return False
        text = frame_text(frame)
        async with session.lock:
            if session.sink is not None:
                if await session.sink.send(text):
                    return True
                self._detach_locked(session)
            size = len(text.encode())
            if session.buffered_bytes + size > self.max_session_bytes or self._total + size > self.max_total_bytes:
                session.dropped += 1
                log.warning("imageInference endpoint: a %d-byte frame for away session %s is not buffered (%d bytes "
                            "held for it, %d in all; IMAGEINFERENCE_WS_BUFFER_BYTES, _TOTAL_BYTES): its result is "
                            "in getResponse", size, session.id, session.buffered_bytes, self._total)
                return False
            session.buffer.append(Buffered(self.clock(), text, size))
            self._total += size
            return False

    def buffered(self, session_id: str) -> int:
        session = self._sessions.get(session_id)
        return len(session.buffer) if session else 0

    def sweep(self) -> int:
        """Forget expired sessions and frames buffered too long; how many sessions went."""
        now = self.clock()
        gone = [sid for sid, s in self._sessions.items() if self._expired(s)]
        for sid in gone:
            self._forget(sid)
        for session in self._sessions.values():
            if session.buffer and not session.lock.locked():
                kept = [b for b in session.buffer if now - b.at <= self.keep_s]
                self._total -= session.buffered_bytes - sum(b.size for b in kept)
                session.buffer = kept
        return len(gone)
