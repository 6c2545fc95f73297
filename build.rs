//! Limits the symbols the shared library exports to the C API (`embraft_*`),
//! so hosts never bind to, and never clash with, Rust internals.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // GNU ld and lld understand version scripts; macOS's ld64 does not (it
    // would take -exported_symbols_list instead).
    if target_os == "linux" || target_os == "android" || target_os.ends_with("bsd") {
        let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let script = out_dir.join("embraft.version");
        std::fs::write(&script, "{\n  global: embraft_*;\n  local: *;\n};\n")
            .expect("writing the linker version script");
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            script.display()
        );
    }
}
