"""Ids of the Asterisk resources a call creates, and which of them belong to this bot instance.

Several bot processes can share one Asterisk, each under its own Stasis application (VOICEAI_ARI_APP).
Every externalMedia channel and bridge a call creates carries that name in its id:

    voiceai-em-<app>-<16 hex digits>    the externalMedia channel
    voiceai-br-<app>-<16 hex digits>    the mixing bridge (named voiceai-<caller channel id>)

so the resync after a (re)connect cleans up only its own instance's leftovers, never another's live calls.

The name is used whole rather than hashed: it is at most 64 characters of [A-Za-z0-9_.-] (config.py), so an id
is at most 11 + 64 + 1 + 16 = 92 characters, under the 149 Asterisk accepts for a channel id
(AST_MAX_PUBLIC_UNIQUEID; ARI answers a longer channelId with 400), and an operator reading `core show
channels` sees which instance owns what. A name may contain "-", but the fixed-length tail makes the split
unique: "voiceai-em-a-b-<hex>" belongs to app "a-b", never to app "a".
"""

from __future__ import annotations

import re
import uuid

EM_ID_PREFIX = "voiceai-em-"       # externalMedia channel ids
BRIDGE_ID_PREFIX = "voiceai-br-"   # bridge ids
BRIDGE_NAME_PREFIX = "voiceai-"    # bridge names: voiceai-<caller channel id> (for people and the soak report)
MAX_ID_LEN = 149                   # Asterisk's AST_MAX_PUBLIC_UNIQUEID

_TAIL_LEN = 17                                    # "-" + 16 hex digits
_TAIL = re.compile(r"-[0-9a-f]{16}")
_APP = re.compile(r"[A-Za-z0-9_.-]{1,64}")        # VOICEAI_ARI_APP's pattern


def new_id(prefix: str, app: str) -> str:
    """A fresh id for a resource of this app: ``<prefix><app>-<16 hex digits>``."""
    return f"{prefix}{app}-{uuid.uuid4().hex[:16]}"


def owner_app(resource_id: str, prefix: str) -> str | None:
    """The app a resource id made by `new_id` names, or None if the id is not one of ours at all."""
    if not resource_id.startswith(prefix) or len(resource_id) <= len(prefix) + _TAIL_LEN:
        return None
    app = resource_id[len(prefix):-_TAIL_LEN]
    if not _TAIL.fullmatch(resource_id[-_TAIL_LEN:]) or not _APP.fullmatch(app):
        return None
    return app


def belongs_to(resource_id: str, prefix: str, app: str) -> bool:
    return owner_app(resource_id, prefix) == app
