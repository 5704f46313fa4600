//! Compiles `src/metric_cpp_example.cpp` into a shared library with the C++ compiler the cc crate
//! finds, exactly as a C++ author would with
//! `c++ -std=c++17 -shared -fPIC -I plugins/abi/include ...` (see plugins/README.md).
//! The library's path is exported to the crate as `VAELAB_METRIC_CPP_EXAMPLE`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let macos = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos");
    let lib = out.join(if macos { "libmetric_cpp_example.dylib" } else { "libmetric_cpp_example.so" });
    let compiler = cc::Build::new().cpp(true).opt_level(2).pic(true).warnings(true).extra_warnings(true).get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.arg("-std=c++17")
        .arg(if macos { "-dynamiclib" } else { "-shared" })
        .args(["-I", "../abi/include", "-o"])
        .arg(&lib)
        .arg("src/metric_cpp_example.cpp");
    let status = cmd.status().expect("cannot run the C++ compiler (install g++ or clang++)");
    assert!(status.success(), "compiling src/metric_cpp_example.cpp failed: {cmd:?}");
    println!("cargo:rustc-env=VAELAB_METRIC_CPP_EXAMPLE={}", lib.display());
    println!("cargo:rerun-if-changed=src/metric_cpp_example.cpp");
    println!("cargo:rerun-if-changed=../abi/include/vaelab_plugin.h");
}
