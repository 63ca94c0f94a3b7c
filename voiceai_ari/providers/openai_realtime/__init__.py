"""OpenAI Realtime (GA): `protocol` (sans-I/O state), `session` (the WebSocket adapter), `credentials`."""
