"""Test-wide settings."""

from hypothesis import HealthCheck, settings

# Property tests check behaviour, not speed: on a 2-core machine running Asterisk, sipp and the bot at the
# same time, hypothesis' default 200 ms deadline per example fails for reasons that are not defects.
settings.register_profile("voiceai", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("voiceai")
