"""Media: RTP, codecs, the resampler, playout pacing (sans-I/O cores) and the transports a call uses."""
