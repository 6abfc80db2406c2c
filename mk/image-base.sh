#!/usr/bin/env bash
# The base image for `make test-image`: the Dockerfile's pinned base when docker has it or can
# pull it; otherwise a substitute of the same Debian release and Python minor version built from
# Debian packages with debootstrap (kept by docker, so only the first run pays ~3 min).
# Usage: mk/image-base.sh DOCKERFILE  -> prints the base image to build on (last stdout line).
# Messages go to stderr. The substitute trusts this machine's CA bundle for pip (package
# registries may be reached through it); the pinned base is never changed.
set -euo pipefail
dockerfile=${1:-Dockerfile}
pinned=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$dockerfile" | head -n 1)
# python:3.11.15-slim-bookworm -> Python 3.11 on Debian bookworm
python_minor=$(sed -n 's/^python:\([0-9]*\.[0-9]*\)\..*/\1/p' <<<"$pinned")
release=${pinned##*-}
if [ -z "$python_minor" ] || [ -z "$release" ]; then
  echo "image-base: cannot read a python:X.Y.Z-slim-<release> base from $dockerfile ($pinned)" >&2
  exit 1
fi
substitute="synapse-substitute-base:${release}-python${python_minor}"

if docker image inspect "$pinned" >/dev/null 2>&1; then
  echo "image-base: using the pinned base $pinned (present locally)" >&2
  echo "$pinned"
  exit 0
fi
echo "image-base: pulling the pinned base $pinned (up to 60 s)…" >&2
if timeout 60 docker pull -q "$pinned" >/dev/null 2>&1; then
  echo "image-base: using the pinned base $pinned (pulled)" >&2
  echo "$pinned"
  exit 0
fi

cat >&2 <<EOF
########################################################################################
# image-base: the pinned base $pinned cannot be had here (no image registry).
# SUBSTITUTE: building on $substitute instead: Debian $release with its own
# python3 ($python_minor.x) from Debian packages, and this machine's CA bundle trusted by pip.
# The image tested is the Dockerfile's, on that base; its Python patch release differs.
########################################################################################
EOF
if docker image inspect "$substitute" >/dev/null 2>&1; then
  echo "image-base: $substitute is cached in docker (built $(docker image inspect -f '{{.Created}}' "$substitute"))" >&2
  echo "$substitute"
  exit 0
fi

# The Debian mirror apt uses on this machine (deb822 sources first, then sources.list).
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1 || true)
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/synapse-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
log=${TMPDIR:-/tmp}/synapse-debootstrap.log
echo "image-base: debootstrap $release from $mirror into $root (~3 min; log $log)" >&2
started=$SECONDS
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  "$release" "$root" "$mirror" >"$log" 2>&1 &
boot=$!
while kill -0 "$boot" 2>/dev/null; do
  sleep 15
  kill -0 "$boot" 2>/dev/null || break
  echo "image-base: debootstrap $((SECONDS - started)) s: $(tail -n 1 "$log" | cut -c1-100)" >&2
done
wait "$boot" || { tail -n 20 "$log" >&2; echo "image-base: debootstrap failed" >&2; exit 1; }
got=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$got" != "$python_minor" ]; then
  echo "image-base: Debian $release has Python $got, the pinned base $python_minor" >&2
  exit 1
fi
# pip inside the build reaches the registry only if it trusts this machine's CA bundle.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca-bundle.crt"
printf '[global]\ncert = /etc/ssl/certs/host-ca-bundle.crt\n' >"$root/etc/pip.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  -m "substitute for $pinned: debootstrap $release, python3 $got, host CA trusted by pip" \
  - "$substitute" >/dev/null
echo "image-base: built $substitute in $((SECONDS - started)) s" >&2
echo "$substitute"
