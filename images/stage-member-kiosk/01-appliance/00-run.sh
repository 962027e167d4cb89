#!/bin/bash -e
# pi-gen host step: lay the appliance's files into the image, then install it in the chroot.
#
# Runs with pi-gen's ROOTFS_DIR and on_chroot; the repository this stage lives in provides
# the units (systemd/), the udev rules (drivers/udev/) and the wheels (images/build/wheels/,
# made by images/build-image.sh).
#
# HQ's enrolment public key goes to /etc/member-kiosk/hq-enrol.pub: the builder names it in
# KIOSK_HQ_ENROL_PUB (a PEM file, made at HQ by `kiosk hq enrol-key`). Without it the build
# stops, unless KIOSK_NO_ENROL_KEY=1 says the devices will be enrolled with
# `kiosk provision enrol --hq-key FILE` instead.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../../.." && pwd)"
wheels="${KIOSK_WHEELS:-${repo}/images/build/wheels}"
: "${ROOTFS_DIR:?pi-gen sets ROOTFS_DIR}"

if ! compgen -G "${wheels}/member_center_kiosk-*.whl" >/dev/null; then
	echo "no appliance wheel in ${wheels}: run images/build-image.sh" >&2
	exit 1
fi

enrol_key="${KIOSK_HQ_ENROL_PUB:-}"
if [ -n "${enrol_key}" ]; then
	if [ ! -f "${enrol_key}" ] || ! grep -q -- '-----BEGIN PUBLIC KEY-----' "${enrol_key}"; then
		echo "KIOSK_HQ_ENROL_PUB=${enrol_key} is not a PEM public key file" >&2
		exit 1
	fi
elif [ "${KIOSK_NO_ENROL_KEY:-0}" != 1 ]; then
	echo "HQ's enrolment public key is missing: set KIOSK_HQ_ENROL_PUB=/path/to/hq-enrol.pub" \
		"(made at HQ by 'kiosk hq enrol-key'), or KIOSK_NO_ENROL_KEY=1 to build an image whose" \
		"devices are enrolled with 'kiosk provision enrol --hq-key FILE'" >&2
	exit 1
fi

# The target filesystem as it should look (journald cap, udev touch rule, defaults).
cp -a "${here}/filesystem/root/." "${ROOTFS_DIR}/"
chmod 0755 "${ROOTFS_DIR}/usr/local/sbin/member-kiosk-install"

# HQ's enrolment key, where `kiosk provision enrol` looks for it.
if [ -n "${enrol_key}" ]; then
	install -D -m 0644 "${enrol_key}" "${ROOTFS_DIR}/etc/member-kiosk/hq-enrol.pub"
else
	rm -f "${ROOTFS_DIR}/etc/member-kiosk/hq-enrol.pub"
	echo "no HQ enrolment key in this image (KIOSK_NO_ENROL_KEY=1): enrol with --hq-key FILE"
fi

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
