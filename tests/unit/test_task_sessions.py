"""WebSocket sessions: frames for an absent client are kept for it, in order, for the keep time."""

import asyncio

from imageinference.server.sessions import SessionRegistry


class Socket:
    """A connection end that records what it was sent and can be closed."""

    def __init__(self):
        self.frames = []
        self.open = True

    async def send(self, frame):
        if not self.open:
            return False
        self.frames.append(frame)
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
