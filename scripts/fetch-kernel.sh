#!/usr/bin/env bash
# Fetches and unpacks Debian's linux-source-7.3 into the cache.
#
# The package comes from trixie-backports, which this bookworm machine does
# not list in its apt sources. Rather than touching the system's apt state,
# we write a private apt configuration (own sources list, lists and cache
# directories under the cache) whose archive location is taken from the
# archive the system's own apt sources already use. It is only ever used
# for `apt-get download`, never for `install`.
. "$(dirname "$0")/lib.sh"

APT_DIR=$RKVM_CACHE/apt
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$RKVM_CACHE/src"

# The first Debian archive URI the system's apt sources name (deb822 or
# one-line format), skipping the security archive.
system_archive_uri() {
	local uri=""
	shopt -s nullglob
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
		[ -n "$uri" ] && { echo "$uri"; return; }
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { if ($i !~ /security/) { print $i; exit } else break } }' "$f")
		[ -n "$uri" ] && { echo "$uri"; return; }
	done
}

apt_opts() {
	printf '%s\n' \
		-o "Dir::Etc::sourcelist=$APT_DIR/sources.list" \
		-o Dir::Etc::sourceparts=- \
		-o "Dir::State::Lists=$APT_DIR/lists" \
		-o "Dir::Cache=$APT_DIR/cache" \
		-o APT::Sandbox::User=root
}
apt_private() {
	local opts
	mapfile -t opts < <(apt_opts)
	apt-get -q "${opts[@]}" "$@"
}
apt_cache_private() {
	local opts
	mapfile -t opts < <(apt_opts)
	apt-cache "${opts[@]}" "$@"
}

# Already unpacked? Then there is nothing to do.
if [ -s "$(kernel_version_file)" ] && [ -f "$(kernel_src_dir)/Makefile" ]; then
	say "kernel source $(kernel_version) already in $(kernel_src_dir)"
	exit 0
fi

uri=$(system_archive_uri)
[ -n "$uri" ] || die "could not find a Debian archive in /etc/apt/sources*; add one and retry"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "missing $keyring (install debian-archive-keyring)"
echo "deb [signed-by=$keyring] $uri $KERNEL_SUITE main" >"$APT_DIR/sources.list"

say "updating the private package list for $KERNEL_SUITE (from the system's archive)"
run_logged "$RKVM_LOGS/apt-update.log" "apt-get update (private $KERNEL_SUITE list)" apt_private update

# The pinned version, or the newest 7.3.x the archive has.
available=$(apt_cache_private madison "$KERNEL_PKG" | awk -F' *[|] *' '{ print $2 }')
[ -n "$available" ] || die "$KERNEL_PKG is not in $KERNEL_SUITE of $uri"
if grep -qxF "$KERNEL_PIN" <<<"$available"; then
	version=$KERNEL_PIN
else
	version=$(sort -V <<<"$available" | tail -n 1)
	say "pinned $KERNEL_PKG $KERNEL_PIN is gone from the archive; using the newest, $version"
fi

say "downloading $KERNEL_PKG $version (about 170 MB)"
dl=$RKVM_CACHE/src/deb
rm -rf "$dl" && mkdir -p "$dl"
(cd "$dl" && run_logged "$RKVM_LOGS/apt-download.log" "apt-get download $KERNEL_PKG=$version" \
	apt_private download "$KERNEL_PKG=$version")
deb=$(ls "$dl"/*.deb)
dpkg-deb -x "$deb" "$dl/x"
tarball=$(ls "$dl"/x/usr/src/linux-source-*.tar.xz)
# The upstream version is in the tarball's top directory name.
kver=$(basename "$tarball" .tar.xz)
kver=${kver#linux-source-}

say "unpacking kernel source ($kver)"
dest=$RKVM_CACHE/src
rm -rf "$dest/linux-source-$kver" "$dest/linux-$version"
tar -C "$dest" -xf "$tarball"
mv "$dest/linux-source-$kver" "$dest/linux-$version"
rm -rf "$dl"
echo "$version" >"$(kernel_version_file)"
say "kernel source $version ready in $dest/linux-$version"
