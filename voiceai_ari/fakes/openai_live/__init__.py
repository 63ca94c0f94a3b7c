"""A fake of OpenAI's GPT-Live WebSocket, for tests and the offline demo."""
