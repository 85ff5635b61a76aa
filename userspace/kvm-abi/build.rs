//! Locates the bindgen output of the kernel's `include/uapi/linux/kvm.h`.
//!
//! `userspace/.cargo/config.toml` sets `RKVM_UAPI_RS`; when cargo runs from a
//! directory that does not see that file, fall back to the same path relative
//! to this crate, so that `include!(env!("RKVM_UAPI_RS"))` always resolves.

use std::env;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    println!("cargo:rerun-if-env-changed=RKVM_UAPI_RS");
    let path = match env::var_os("RKVM_UAPI_RS") {
        Some(p) => PathBuf::from(p),
        None => {
            let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            dir.join("../../build/gen/kvm_uapi.rs")
        }
    };
    if !path.is_file() {
        println!(
            "cargo:warning=kvm-abi: {} does not exist; generate it with \
             `scripts/gen-uapi.sh build/gen/kvm_uapi.rs` from the repository root",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=RKVM_UAPI_RS={}", path.display());
    ExitCode::SUCCESS
}
