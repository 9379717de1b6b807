#!/usr/bin/env bash
# Builds a minimal local base image for csoc-watch's final image stages, from
# `scratch`, without pulling anything: the shared libraries the given
# binaries link (as `ldd` lists them: libc, libm, libgcc_s, the dynamic
# loader...), this host's CA bundle, /etc/passwd and /etc/group with root and
# nonroot (65532, as distroless's :nonroot images), /etc/nsswitch.conf, /tmp
# and /home/nonroot. It stands in for gcr.io/distroless/cc-debian12:nonroot
# where no image can be pulled (the image test, tests/tests/image.rs), and so
# it carries what that image carries that the binaries use, and no shell.
#
# Usage: make-local-base.sh IMAGE BINARY...
#   IMAGE   name of the image to build, e.g. localhost/csoc-base:test
#   BINARY  the binaries the image must run (their libraries are copied)
# Environment:
#   PODMAN  the podman command with its global options, split on spaces
#           [default: podman], e.g. "podman --root /tmp/s --storage-driver vfs"
#   CA_BUNDLE  CA certificates, PEM [default: /etc/ssl/certs/ca-certificates.crt]
#
# The libraries come from this host, so the base fits binaries built on this
# host (or on an older glibc); it is a test fixture, not a release base.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: $0 IMAGE BINARY..." >&2
  exit 2
fi
image=$1
shift
read -r -a podman <<<"${PODMAN:-podman}"
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$ca_bundle" ] || { echo "$0: no CA bundle at $ca_bundle (set CA_BUNDLE)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib" "$ctx/home"

# Every library (and the loader) the binaries need, at the path the loader
# looks for it. ldd names a library "name => /path (addr)" and the loader
# "/path (addr)"; linux-vdso is in the kernel.
libs=$(for b in "$@"; do
  [ -x "$b" ] || { echo "$0: $b is not an executable" >&2; exit 1; }
  out=$(ldd "$b") || { echo "$0: ldd $b failed (a static binary needs no base)" >&2; exit 1; }
  if grep -q 'not found' <<<"$out"; then
    echo "$0: $b: a library is missing on this host:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
done | sort -u)
for l in $libs; do
  mkdir -p "$root$(dirname "$l")"
  cp -L "$l" "$root$l"
done

cp -L "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
cat >"$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
P
cat >"$root/etc/group" <<'G'
root:x:0:
nonroot:x:65532:
G
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"

cat >"$ctx/Containerfile" <<'C'
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 home/ /home/nonroot/
USER 65532
C
"${podman[@]}" build --pull=never --quiet -t "$image" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "$image: $(wc -w <<<"$libs") libraries: $(tr '\n' ' ' <<<"$libs")"
