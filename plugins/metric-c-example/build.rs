//! Compiles `src/metric_c_example.c` into a shared library with the cc crate's compiler, exactly
//! as a C author would with `cc -shared -fPIC -I plugins/abi/include ...` (see plugins/README.md).
//! The library's path is exported to the crate as `VAELAB_METRIC_C_EXAMPLE`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let macos = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos");
    let lib = out.join(if macos { "libmetric_c_example.dylib" } else { "libmetric_c_example.so" });
    let compiler = cc::Build::new().opt_level(2).pic(true).warnings(true).extra_warnings(true).get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.arg(if macos { "-dynamiclib" } else { "-shared" })
        .args(["-I", "../abi/include", "-o"])
        .arg(&lib)
        .arg("src/metric_c_example.c")
        .arg("-lm");
    let status = cmd.status().expect("cannot run the C compiler");
    assert!(status.success(), "compiling src/metric_c_example.c failed: {cmd:?}");
    println!("cargo:rustc-env=VAELAB_METRIC_C_EXAMPLE={}", lib.display());
    println!("cargo:rerun-if-changed=src/metric_c_example.c");
    println!("cargo:rerun-if-changed=../abi/include/vaelab_plugin.h");
}
