#!/bin/sh
# Makes a development CA, the broker's certificate, one certificate per device (CN = device
# id), HQ's command-signing key, the ACL and mosquitto.conf, in one directory.
# Usage: make-dev-ca.sh OUT_DIR PORT DEVICE... [--hq-address HOST:PORT]
#   where DEVICE is role:cn[:store]; --hq-address makes it a store broker bridged to HQ
#   e.g. make-dev-ca.sh var/hq 8883 hq:hq kiosk:K001:S001 lane:S001-L1:S001 bridge:bridge-S001:S001
#        make-dev-ca.sh var/S001 8884 kiosk:K001:S001 lane:S001-L1:S001 bridge:bridge-S001:S001 \
#            --hq-address 127.0.0.1:8883   (after copying var/hq/ca.crt, ca.key into var/S001)
# Never use these certificates outside development: the CA key sits beside them.
set -eu
here=$(dirname "$0")
python=${PYTHON:-python3}
if [ -x "$here/../../../.venv/bin/python" ]; then
    python="$here/../../../.venv/bin/python"
fi
exec "$python" -m edge.sync.broker "$@"
