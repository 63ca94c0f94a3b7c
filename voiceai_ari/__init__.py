"""voiceai-ari: an AI voice agent on Asterisk through ARI externalMedia and the OpenAI Realtime API."""
__version__ = "0.1.0"
