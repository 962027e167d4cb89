#!/bin/bash -e
# pi-gen host step: lay the appliance's files into the image, then install it in the chroot.
#
# Runs with pi-gen's ROOTFS_DIR and on_chroot; the repository this stage lives in provides
# the units (systemd/), the udev rules (drivers/udev/) and the wheels (images/build/wheels/,
# made by images/build-image.sh).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../../.." && pwd)"
wheels="${KIOSK_WHEELS:-${repo}/images/build/wheels}"
: "${ROOTFS_DIR:?pi-gen sets ROOTFS_DIR}"

if ! compgen -G "${wheels}/member_center_kiosk-*.whl" >/dev/null; then
	echo "no appliance wheel in ${wheels}: run images/build-image.sh" >&2
	exit 1
fi

# The target filesystem as it should look (journald cap, udev touch rule, defaults).
cp -a "${here}/filesystem/root/." "${ROOTFS_DIR}/"
chmod 0755 "${ROOTFS_DIR}/usr/local/sbin/member-kiosk-install"

install -d -m 0755 "${ROOTFS_DIR}/etc/systemd/system" "${ROOTFS_DIR}/etc/udev/rules.d"
install -m 0644 "${repo}"/systemd/*.service "${repo}"/systemd/*.timer "${repo}"/systemd/*.path \
	"${ROOTFS_DIR}/etc/systemd/system/"
install -m 0644 "${repo}/drivers/udev/99-member-kiosk.rules" "${ROOTFS_DIR}/etc/udev/rules.d/"

install -d -m 0755 "${ROOTFS_DIR}/opt/member-kiosk/wheels" "${ROOTFS_DIR}/opt/member-kiosk/share/doc"
rm -f "${ROOTFS_DIR}"/opt/member-kiosk/wheels/*.whl
install -m 0644 "${wheels}"/*.whl "${ROOTFS_DIR}/opt/member-kiosk/wheels/"
install -m 0644 "${repo}/docs/technician.md" "${ROOTFS_DIR}/opt/member-kiosk/share/doc/"

on_chroot <<CHROOT
KIOSK_STORE_BROKER="${KIOSK_STORE_BROKER:-0}" PIP_INDEX_URL="${KIOSK_PIP_INDEX_URL:-}" \
	/usr/local/sbin/member-kiosk-install
CHROOT
