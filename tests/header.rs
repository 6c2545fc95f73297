//! include/embraft.h must be what cbindgen generates from src/ffi today, so
//! the header C hosts compile against never drifts from the library.

use std::path::Path;

const HEADER: &str = "include/embraft.h";

#[test]
fn checked_in_header_matches_a_fresh_generation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .expect("cbindgen.toml should parse");
    // Only src/ffi is the C surface: parsing the whole crate would also
    // export the Rust API's public constants. cbindgen follows the `mod`
    // declarations of src/ffi/mod.rs.
    let builder = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"));
    let bindings = builder
        .generate()
        .expect("cbindgen should generate the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("generated header is UTF-8");

    let path = root.join(HEADER);
    if std::env::var_os("EMBRAFT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("writing the header");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{HEADER} is stale: the C API in src/ffi changed. Regenerate it with\n\
         \n    EMBRAFT_BLESS=1 cargo test --test header\n\n\
         and commit the result."
    );
}
