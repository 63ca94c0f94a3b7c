"""Which media path serves the calls (`VOICEAI_TRANSPORT`): one factory, chosen once at start."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .ports import PortPool
from .transport import MediaTransport, RtpMedia

if TYPE_CHECKING:
    from ..config import Settings


def media_factory(settings: Settings) -> Callable[[PortPool], MediaTransport]:
    """A function that makes one call's media path (the port pool is RTP's; chan_websocket needs no port)."""
    if settings.transport == "websocket":
        from .websocket_channel import WebSocketMedia

        def websocket(pool: PortPool) -> MediaTransport:
            return WebSocketMedia(ari_url=settings.ari_url, fmt=settings.caller_format)
        return websocket

    def rtp(pool: PortPool) -> MediaTransport:
        return RtpMedia(bind_host=settings.rtp_bind, advertise_host=settings.rtp_host, pool=pool,
                        return_codec=settings.return_codec, dtx=settings.dtx, caller_format=settings.caller_format,
                        read_per_tick=settings.append_ms > 20)
    return rtp
