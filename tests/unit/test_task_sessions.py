"""WebSocket sessions: frames for an absent client are kept for it, in order, for the keep time, within bounds in
bytes (per session, in total) and in sessions."""

import asyncio
import json

import pytest

from imageinference.server.sessions import SessionRegistry, TooManySessions


class Socket:
    """A connection end that records what it was sent and can be closed."""

    def __init__(self):
        self.frames = []
        self.open = True

    async def send(self, text):
        if not self.open:
            return False
        self.frames.append(json.loads(text))
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def auth_reply(sid):
    return {"data": [{"taskType": "authentication", "connectionSessionUUID": sid}]}


def test_frames_wait_for_the_client_and_follow_its_authentication_reply():
    async def scenario():
        clock = Clock()
        reg = SessionRegistry(keep_s=120, clock=clock)
        first = Socket()
        session = await reg.attach(first, None, auth_reply)
        assert first.frames == [auth_reply(session.id)]
        assert await reg.push(session.id, {"data": [1]})
        first.open = False  # the connection dropped without a close
        assert not await reg.push(session.id, {"data": [2]})
        reg.detach(session.id, first)
        clock.now += 60
        assert not await reg.push(session.id, {"data": [3]})
        assert reg.buffered(session.id) == 2
        second = Socket()
        again = await reg.attach(second, session.id, auth_reply)
        assert again.id == session.id
        assert second.frames == [auth_reply(session.id), {"data": [2]}, {"data": [3]}]
        assert await reg.push(session.id, {"data": [4]}) and second.frames[-1] == {"data": [4]}

    asyncio.run(scenario())


def test_sessions_and_frames_expire_after_the_keep_time():
    async def scenario():
        clock = Clock()
        reg = SessionRegistry(keep_s=120, clock=clock)
        sock = Socket()
        session = await reg.attach(sock, None, auth_reply)
        reg.detach(session.id, sock)
        await reg.push(session.id, {"data": ["old"]})
        clock.now += 100
        await reg.push(session.id, {"data": ["new"]})
        clock.now += 30  # "old" is 130 s old, "new" 30 s, the session has been away 130 s
        assert reg.get(session.id) is None
        assert reg.sweep() == 1 and len(reg) == 0
        other = Socket()
        fresh = await reg.attach(other, session.id, auth_reply)
        assert fresh.id != session.id and other.frames == [auth_reply(fresh.id)]

    asyncio.run(scenario())


def test_old_frames_are_dropped_on_resume_but_newer_ones_kept():
    async def scenario():
        clock = Clock()
        reg = SessionRegistry(keep_s=120, clock=clock)
        sock = Socket()
        session = await reg.attach(sock, None, None)
        reg.detach(session.id, sock)
        await reg.push(session.id, {"data": ["old"]})
        clock.now += 90
        await reg.push(session.id, {"data": ["new"]})
        clock.now += 40
        sock2 = Socket()
        await reg.attach(sock2, session.id, None)  # detached 130 s but buffered frames decide; session expired
        assert sock2.frames == []

        reg2 = SessionRegistry(keep_s=120, clock=clock)
        s3 = Socket()
        sess = await reg2.attach(s3, None, None)
        s3.open = False
        await reg2.push(sess.id, {"data": ["a"]})  # detaches on the failed send
        clock.now += 119
        s4 = Socket()
        await reg2.attach(s4, sess.id, None)
        assert s4.frames == [{"data": ["a"]}]

    asyncio.run(scenario())


def test_a_new_socket_takes_the_session_over_and_the_old_one_cannot_detach_it():
    async def scenario():
        reg = SessionRegistry()
        a, b = Socket(), Socket()
        session = await reg.attach(a, None, None)
        await reg.attach(b, session.id, None)
        reg.detach(session.id, a)  # the old socket closing later must not detach the new one
        assert await reg.push(session.id, {"data": [1]}) and b.frames == [{"data": [1]}] and a.frames == []

    asyncio.run(scenario())


def test_concurrent_pushes_keep_their_order_behind_a_resume():
    async def scenario():
        reg = SessionRegistry()
        sock = Socket()
        session = await reg.attach(sock, None, None)
        reg.detach(session.id, sock)
        for i in range(5):
            await reg.push(session.id, {"data": [i]})
        new = Socket()
        await asyncio.gather(reg.attach(new, session.id, auth_reply),
                             *(reg.push(session.id, {"data": [i]}) for i in range(5, 10)))
        assert new.frames[0] == auth_reply(session.id)
        assert [f["data"][0] for f in new.frames[1:]] == list(range(10))

    asyncio.run(scenario())


def big(n, size):
    return {"data": [{"n": n, "imageBase64Data": "A" * size}]}


def test_buffers_are_bounded_in_bytes_per_session_and_in_total():
    async def scenario():
        clock = Clock()
        reg = SessionRegistry(keep_s=120, clock=clock, max_session_bytes=10_000, max_total_bytes=25_000)
        away = []
        for _ in range(3):
            sock = Socket()
            session = await reg.attach(sock, None, None)
            reg.detach(session.id, sock)
            away.append(session)
        a, b, c = away
        for n in range(5):  # 4 KB frames: two fit in a session's 10 KB, the third does not
            await reg.push(a.id, big(n, 4000))
        assert reg.buffered(a.id) == 2 and a.dropped == 3
        assert 8000 < reg.total_bytes <= 10_000
        for n in range(3):
            await reg.push(b.id, big(n, 4000))
        for n in range(3):
            await reg.push(c.id, big(n, 4000))
        assert reg.total_bytes <= 25_000  # the total bound held while each session still had room
        assert reg.buffered(b.id) == 2 and reg.buffered(c.id) == 2 and b.dropped == 1 and c.dropped == 1
        assert [s.dropped for s in away] == [3, 1, 1]
        back = Socket()
        await reg.attach(back, a.id, None)  # a client that comes back gets what was kept, in order
        assert [f["data"][0]["n"] for f in back.frames] == [0, 1]
        assert reg.buffered(a.id) == 0 and reg.total_bytes <= 25_000 - 8000
        clock.now += 200
        reg.sweep()
        assert reg.total_bytes == 0 and len(reg) == 1  # the attached one stays

    asyncio.run(scenario())


def test_sessions_are_bounded_the_oldest_away_one_makes_room():
    async def scenario():
        clock = Clock()
        reg = SessionRegistry(keep_s=120, clock=clock, max_sessions=3)
        socks = [Socket() for _ in range(3)]
        sessions = [await reg.attach(s, None, None) for s in socks]
        with pytest.raises(TooManySessions):  # three live sockets: no room for a fourth session
            await reg.attach(Socket(), None, None)
        for i in (1, 0):
            reg.detach(sessions[i].id, socks[i])
            clock.now += 1
        await reg.push(sessions[1].id, big(1, 100))
        fresh = await reg.attach(Socket(), None, None)  # the one away longest (sessions[1]) is dropped
        assert len(reg) == 3 and reg.get(sessions[1].id) is None and reg.get(sessions[0].id) is not None
        assert reg.get(fresh.id) is not None and reg.total_bytes == 0

    asyncio.run(scenario())
