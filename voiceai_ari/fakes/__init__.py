"""Protocol-faithful fake model servers (tests, the offline demo), with their shared VAD and audio helpers."""
