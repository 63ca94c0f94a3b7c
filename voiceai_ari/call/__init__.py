"""The call layer: `app` (the Stasis app), `call` (the life of one call), `tools`, `transcript`."""
