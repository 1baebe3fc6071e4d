#!/usr/bin/env sh
# Builds the stock userland the bootstrap is proven on (test/stock_userland_test.ts): a Debian
# root filesystem made by mmdebstrap from Debian's own packages, holding what a stock cloud image
# has and nothing the bootstrap could lean on beyond it (no AWS CLI, no libicu), plus an offline
# apt repository with the packages the runner's own bin/installdependencies.sh installs, so the
# test can install libicu without any network.
#
#   sh test/support/stock_rootfs.sh        # prints the rootfs directory, building it if needed
#
# The rootfs is cached in .tools/stock-rootfs/<key>/rootfs, the key being the SHA-256 of this
# script without its comments (the rest holds every package list), so an unchanged script is built
# once; an older build is removed when a new one is made. Needs root (mmdebstrap's root mode,
# chroot) and Debian's package archive; installs mmdebstrap and Debian's archive keyring with
# apt-get when missing (CI is root on Debian 12 with apt).
#
# What the rootfs holds, and why (the README's "Proven on a stock userland" says the same):
# - Debian's minbase (Essential packages and apt: bash, coreutils, tar, gzip, util-linux, grep,
#   sed, findutils, dpkg...), which every cloud image starts from;
# - what Debian's, Ubuntu's and Amazon Linux's cloud images all ship and a user data script may
#   use: curl and ca-certificates, sudo, python3 (cloud-init runs on it), iproute2, procps,
#   passwd and adduser (useradd, as cloud-init uses), systemd (its systemctl is there but systemd
#   is not running in the chroot, as in a container: the bootstrap's no-systemd path runs);
# - not the AWS CLI (Ubuntu's images lack it), not libicu (Amazon Linux 2023 lacks it), not jq;
#   no iptables or nftables (Amazon Linux 2023 ships neither, so the bootstrap must install one
#   to keep jobs from instance metadata); not cloud-init itself (the test runs the user data as
#   cloud-init does: bash, as root).
# - an offline apt repository in /var/local/offline-apt, standing for the distribution's archive:
#   what the runner's installdependencies.sh installs (libicu and the rest) and iptables, with
#   their dependencies, downloaded but not installed. apt's sources list only it, so nothing in
#   the rootfs can reach Debian's archive at test time, and apt's package lists start empty, as
#   on a fresh image.
set -eu

SUITE=trixie
MIRROR=http://deb.debian.org/debian
# A stock cloud image's userland (see above).
PACKAGES="ca-certificates curl sudo python3 iproute2 procps passwd adduser systemd"
# What actions/runner's bin/installdependencies.sh installs on Debian (apt-get install -y
# libkrb5-3 zlib1g; liblttng-ust1; libicu76 ... libicu52, the first that exists) and iptables,
# with the dependencies they pull, downloaded into the offline repository (not installed).
OFFLINE_PACKAGES="libkrb5-3 zlib1g liblttng-ust1t64 libicu76 iptables"

root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.tools/stock-rootfs"
key=$(grep -v '^ *#' "$0" | sha256sum | cut -c1-16)-$(uname -m)
out="$cache/$key"

if [ -e "$out/complete" ]; then
  echo "$out/rootfs"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "stock_rootfs: building the stock rootfs needs root (mmdebstrap's root mode)" >&2
  exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if ! command -v mmdebstrap >/dev/null 2>&1 || [ ! -e "$keyring" ]; then
  echo "stock_rootfs: installing mmdebstrap and Debian's archive keyring with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap \
    debian-archive-keyring >&2
fi

mkdir -p "$cache"
# Older builds go (a rootfs is ~300 MB); so does a half-made one of this key.
for old in "$cache"/*; do
  [ -e "$old" ] && rm -rf "$old"
done
build="$cache/$key.building"
mkdir -p "$build"
started=$(date +%s)
echo "stock_rootfs: building Debian $SUITE ($PACKAGES) in $build" >&2

# The offline repository: the packages' .deb files with a Packages index written from their own
# control fields (dpkg-deb), so no indexing tool is needed. [trusted=yes]: a local, unsigned
# repository, as apt documents for file: sources.
# shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell, "$1" being the rootfs
mmdebstrap --variant=minbase --mode=root --keyring="$keyring" \
  --include="$(echo "$PACKAGES" | tr ' ' ',')" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
  --customize-hook='chroot "$1" apt-get install --download-only --yes --no-install-recommends \
    '"$OFFLINE_PACKAGES" \
  --customize-hook='set -eu
    repo="$1/var/local/offline-apt"
    mkdir -p "$repo"
    mv "$1"/var/cache/apt/archives/*.deb "$repo/"
    cd "$repo"
    for deb in *.deb; do
      dpkg-deb --field "$deb"
      printf "Filename: ./%s\nSize: %s\nSHA256: %s\n\n" "$deb" "$(stat -c %s "$deb")" \
        "$(sha256sum "$deb" | cut -d" " -f1)"
    done >Packages
    chmod -R a+rX "$repo"
    rm -f "$1"/etc/apt/sources.list.d/*
    echo "deb [trusted=yes] file:/var/local/offline-apt ./" >"$1/etc/apt/sources.list"' \
  "$SUITE" "$build/rootfs" "deb $MIRROR $SUITE main" >&2

touch "$build/complete"
mv "$build" "$out"
echo "stock_rootfs: built in $(($(date +%s) - started)) s ($(du -sh "$out/rootfs" | cut -f1))" >&2
echo "$out/rootfs"
