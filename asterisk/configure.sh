#!/bin/sh
# Adapt the committed configs (written for the loopback sandbox) to the container, in the folder $1
# (/etc/asterisk in the image); the entrypoint runs it on every start. Separate from the entrypoint so that
# tests/test_compose.py can run it on copies of the files.
#
# ASTERISK_BIND         address for HTTP/ARI (8088/tcp) and SIP (5060/udp); RTP of the SIP legs follows the
#                       SIP bind. 0.0.0.0 (default) on a bridge network with published ports; 127.0.0.1 with
#                       network_mode: host.
# ASTERISK_MEDIA_ADDRESS  the address put in SIP (Contact, Via) and SDP for callers, default 127.0.0.1 (the
#                       committed value); a cluster node gives its own (docker-compose.cluster.yml)
# ASTERISK_RTP_PORTS    rtpstart-rtpend for rtp.conf, e.g. 12000-12399; default: the committed range
# ASTERISK_BEHIND_PROXY yes: SIP comes through a proxy that recorded the route (Kamailio): keep the caller's
#                       Contact as sent (rewrite_contact = no), else in-dialog requests loop at the proxy
# VOICEAI_ARI_PASSWORD  required: the password of the ARI user, the same variable the bot reads. The image holds
#                       no password of its own; without this one the container does not start.
set -eu
conf=${1:?usage: configure.sh CONFIG_DIR}
bind="${ASTERISK_BIND:-0.0.0.0}"
sed -i "s/^bindaddr = .*/bindaddr = $bind/" "$conf/http.conf"
sed -i "s/^bind = .*:\([0-9][0-9]*\)$/bind = $bind:\1/" "$conf/pjsip.conf"
media="${ASTERISK_MEDIA_ADDRESS:-127.0.0.1}"
sed -i "s/^\(external_signaling_address\|external_media_address\|media_address\) = .*/\1 = $media/" "$conf/pjsip.conf"
if [ -n "${ASTERISK_RTP_PORTS:-}" ]; then
  case $ASTERISK_RTP_PORTS in
    *[!0-9-]*|*-*-*|-*|*-|[!0-9]*) echo "asterisk: ASTERISK_RTP_PORTS must be start-end, e.g. 12000-12399" >&2; exit 64 ;;
    *-*) ;;
    *) echo "asterisk: ASTERISK_RTP_PORTS must be start-end, e.g. 12000-12399" >&2; exit 64 ;;
  esac
  lo=${ASTERISK_RTP_PORTS%-*}; hi=${ASTERISK_RTP_PORTS#*-}
  sed -i "s/^rtpstart = .*/rtpstart = $lo/; s/^rtpend = .*/rtpend = $hi/" "$conf/rtp.conf"
fi
if [ "${ASTERISK_BEHIND_PROXY:-no}" = yes ]; then
  sed -i "s/^rewrite_contact = yes/rewrite_contact = no/" "$conf/pjsip.conf"
fi

if [ -z "${VOICEAI_ARI_PASSWORD:-}" ]; then
  echo "asterisk: VOICEAI_ARI_PASSWORD is not set: set it (in .env for docker compose) to the bot's ARI password" >&2
  exit 64
fi
# ari.conf values end at ';' (a comment) and at the line's end; a short password invites guessing
case $VOICEAI_ARI_PASSWORD in
  *[!A-Za-z0-9._~+=@%:,/-]*)
    echo "asterisk: VOICEAI_ARI_PASSWORD may only hold letters, digits and . _ ~ + = @ % : , / -" >&2; exit 64 ;;
esac
if [ ${#VOICEAI_ARI_PASSWORD} -lt 12 ]; then
  echo "asterisk: VOICEAI_ARI_PASSWORD must be at least 12 characters long" >&2; exit 64
fi
# every ARI user's password line becomes the variable's value (ENVIRON: no quoting or escaping of the value)
umask 077
awk '
  /^[ \t]*password[ \t]*=/ { print "password = " ENVIRON["VOICEAI_ARI_PASSWORD"]; next }
  { print }' "$conf/ari.conf" > "$conf/ari.conf.new"
cat "$conf/ari.conf.new" > "$conf/ari.conf"   # keeps the file's owner and mode (0640, asterisk)
rm -f "$conf/ari.conf.new"
