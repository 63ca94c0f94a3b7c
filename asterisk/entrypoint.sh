#!/bin/sh
# Container entrypoint for Asterisk.
# ASTERISK_BIND: address for HTTP/ARI (8088/tcp) and SIP (5060/udp); RTP of the SIP legs follows the SIP bind.
#   0.0.0.0 (default) on a bridge network with published ports; 127.0.0.1 with network_mode: host.
# The committed configs say 127.0.0.1 (loopback sandbox); rewrite them here, on every start.
set -eu
bind="${ASTERISK_BIND:-0.0.0.0}"
sed -i "s/^bindaddr = .*/bindaddr = $bind/" /etc/asterisk/http.conf
sed -i "s/^bind = .*:\([0-9][0-9]*\)$/bind = $bind:\1/" /etc/asterisk/pjsip.conf
# /var/run may be a fresh tmpfs: Asterisk (after -U) must be able to create its control socket and PID file
install -d -o asterisk -g asterisk -m 0755 /var/run/asterisk
# Foreground as PID 1 (handles SIGTERM, logs to stdout), dropping root for the asterisk user.
exec /usr/sbin/asterisk -f -n -vvv -U asterisk -G asterisk "$@"
