# Sourced by the scripts that build Go code against libembraft.a (after
# cargo built it): Go's build cache does not look inside the archive, so
# its hash goes into the cgo flags, and a rebuilt library relinks every
# binary and test that uses it. Needs the repository root in $root.
lib_hash="$(sha256sum "$root/target/release/libembraft.a" | cut -c1-16)"
export CGO_LDFLAGS="-O2 -g -L/nonexistent/libembraft-$lib_hash"
