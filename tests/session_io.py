"""Driving a provider's ModelSession in tests: feed it caller audio, read its events."""

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
