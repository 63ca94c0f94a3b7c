"""OpenAI GPT-Live (/v1/live/sessions)."""
