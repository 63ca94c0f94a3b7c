"""Driving a provider's ModelSession in tests: its fake server, caller audio in, events out."""

import asyncio


def feed(session, pcm, chunk=960):
    """Caller audio (24 kHz PCM16) in 20 ms frames, as a call sends it."""
    for i in range(0, len(pcm), chunk):
        session.send_audio(pcm[i:i + chunk])


async def collect(session, until, timeout=10):
    """The session's events up to and including the first for which `until(event)` is true."""
    out = []

    async def run():
        async for ev in session.events():
            out.append(ev)
            if until(ev):
                return
    await asyncio.wait_for(run(), timeout)
    return out


async def fake_servers(cls, **defaults):
    """For a fixture: yields `make(**kw)`, which starts a fake of `cls` (kw over `defaults`); all are stopped
    when the fixture ends."""
    servers = []

    async def make(**kw):
        server = cls(**{**defaults, **kw})
        await server.start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        await s.stop()
