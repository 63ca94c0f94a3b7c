"""The fake OpenAI Realtime GA server: `server` (WebSocket + sessions), `schema`, `input`, `conversation`."""
