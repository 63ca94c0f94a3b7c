"""Google Gemini Live (BidiGenerateContent): `protocol` (sans-I/O state), `session` (the WebSocket adapter)."""
