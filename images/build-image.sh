#!/bin/bash
# Builds the Member Center Kiosk SD-card image with pi-gen (Raspberry Pi OS Lite, arm64,
# Bookworm) plus this repository's stage. Run on a Debian/Ubuntu host with Docker, or on an
# arm64 Debian host as root. Output: images/build/pi-gen/deploy/*member-kiosk*.img.xz
#
#   images/build-image.sh                 # docker build (needs docker)
#   KIOSK_PIGEN_NATIVE=1 images/build-image.sh    # pi-gen's build.sh on this host (root)
#
# HQ's enrolment public key is built in (/etc/member-kiosk/hq-enrol.pub):
#   KIOSK_HQ_ENROL_PUB=/path/to/hq-enrol.pub images/build-image.sh
# or, for an image whose devices are enrolled with `kiosk provision enrol --hq-key FILE`:
#   KIOSK_NO_ENROL_KEY=1 images/build-image.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
build="${here}/build"
pigen_repo="${KIOSK_PIGEN_REPO:-https://github.com/RPi-Distro/pi-gen.git}"
# pi-gen's arm64 branch builds 64-bit Raspberry Pi OS; a release tag pins what it installs.
pigen_ref="${KIOSK_PIGEN_REF:-arm64}"

# Refuse early (before the long build) when HQ's enrolment key is neither given nor waived.
enrol_key=""
if [ -n "${KIOSK_HQ_ENROL_PUB:-}" ]; then
	if [ ! -f "${KIOSK_HQ_ENROL_PUB}" ] || ! grep -q -- '-----BEGIN PUBLIC KEY-----' "${KIOSK_HQ_ENROL_PUB}"; then
		echo "KIOSK_HQ_ENROL_PUB=${KIOSK_HQ_ENROL_PUB} is not a PEM public key file" >&2
		exit 1
	fi
	enrol_key="${build}/hq-enrol.pub" # inside the repository: the docker build sees it
elif [ "${KIOSK_NO_ENROL_KEY:-0}" != 1 ]; then
	echo "HQ's enrolment public key is missing: set KIOSK_HQ_ENROL_PUB=/path/to/hq-enrol.pub" \
		"(made at HQ by 'kiosk hq enrol-key'), or KIOSK_NO_ENROL_KEY=1 to build an image whose" \
		"devices are enrolled with 'kiosk provision enrol --hq-key FILE'" >&2
	exit 1
fi

mkdir -p "${build}"
if [ -n "${enrol_key}" ]; then
	install -m 0644 "${KIOSK_HQ_ENROL_PUB}" "${enrol_key}"
fi
rm -rf "${build}/wheels"
python3 -m pip wheel --no-deps --quiet --wheel-dir "${build}/wheels" "${repo}"

if [ ! -d "${build}/pi-gen/.git" ]; then
	git clone --depth 1 --branch "${pigen_ref}" "${pigen_repo}" "${build}/pi-gen"
fi
# Export only the kiosk image, not stage2's plain Lite image.
touch "${build}/pi-gen/stage2/SKIP_IMAGES"

{
	cat "${here}/config"
	printf 'STAGE_LIST="stage0 stage1 stage2 %s"\n' "${here}/stage-member-kiosk"
	if [ -n "${enrol_key}" ]; then
		printf 'export KIOSK_HQ_ENROL_PUB="%s"\n' "${enrol_key}"
	else
		printf 'export KIOSK_NO_ENROL_KEY=1\n'
	fi
	if [ -n "${KIOSK_SSH_KEY:-}" ]; then
		printf 'PUBKEY_SSH_FIRST_USER="%s"\n' "${KIOSK_SSH_KEY}"
	fi
} >"${build}/config"

cd "${build}/pi-gen"
if [ "${KIOSK_PIGEN_NATIVE:-0}" = 1 ]; then
	./build.sh -c "${build}/config"
else
	# The docker build sees only pi-gen's directory: mount the repository at the same path.
	PIGEN_DOCKER_OPTS="${PIGEN_DOCKER_OPTS:-} --volume ${repo}:${repo}:ro" \
		./build-docker.sh -c "${build}/config"
fi
ls -l deploy/
