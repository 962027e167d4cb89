#!/bin/sh
# Makes a development CA, the broker's certificate, one certificate per device (CN = device
# id), HQ's command-signing key, the ACL and mosquitto.conf, in one directory.
# Usage: make-dev-ca.sh OUT_DIR PORT DEVICE... where DEVICE is role:cn[:store]
#   e.g. make-dev-ca.sh var/broker 8883 hq:hq kiosk:K001:S001 lane:S001-L1:S001
# Never use these certificates outside development: the CA key sits beside them.
set -eu
here=$(dirname "$0")
python=${PYTHON:-python3}
if [ -x "$here/../../../.venv/bin/python" ]; then
    python="$here/../../../.venv/bin/python"
fi
exec "$python" -m edge.sync.broker "$@"
