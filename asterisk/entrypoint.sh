#!/bin/sh
# Container entrypoint for Asterisk: adapt the configs to the container (binds, the ARI password from
# VOICEAI_ARI_PASSWORD: see configure.sh), then run Asterisk.
set -eu
/usr/local/bin/configure.sh /etc/asterisk
# /var/run may be a fresh tmpfs: Asterisk (after -U) must be able to create its control socket and PID file
install -d -o asterisk -g asterisk -m 0755 /var/run/asterisk
# Foreground as PID 1 (handles SIGTERM, logs to stdout), dropping root for the asterisk user.
exec /usr/sbin/asterisk -f -n -vvv -U asterisk -G asterisk "$@"
