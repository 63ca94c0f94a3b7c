"""The fake Gemini Live server: `server` (WebSocket, sessions, replies), `setup` (what it accepts)."""
