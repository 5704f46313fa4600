//! Deliberately broken metrics and blocks. The host must report each fault with the library's path
//! and carry on (tests only; never list this in a spec you care about).

use std::sync::atomic::{AtomicUsize, Ordering};
use vaelab_plugin_abi::*;

/// Returns an error status with a message.
pub struct AlwaysFails;

impl MetricPlugin for AlwaysFails {
    const NAME: &'static std::ffi::CStr = c"always_fails";
    const OUTPUTS: &'static [&'static std::ffi::CStr] = &[c"value"];
    const FLAGS: u32 = VAELAB_METRIC_NEEDS_REFERENCE;
    fn create(_: &Config) -> Result<Self, String> {
        Ok(AlwaysFails)
    }
    fn compute(&self, _: Option<&Images>, _: &Images, _: &mut [f64]) -> Result<(), String> {
        Err("licence server unreachable".into())
    }
}

/// Panics inside `compute`; the export macro must catch it.
pub struct Panics;

impl MetricPlugin for Panics {
    const NAME: &'static std::ffi::CStr = c"panics";
    const OUTPUTS: &'static [&'static std::ffi::CStr] = &[c"value"];
    const FLAGS: u32 = VAELAB_METRIC_NEEDS_REFERENCE;
    fn create(_: &Config) -> Result<Self, String> {
        Ok(Panics)
    }
    fn compute(&self, _: Option<&Images>, fake: &Images, _: &mut [f64]) -> Result<(), String> {
        let empty: Vec<f32> = Vec::new();
        let _ = empty[fake.n]; // index out of bounds
        Ok(())
    }
}

/// Reference-free: the mean pixel value of each batch, but NaN on every second call.
pub struct NanEveryOtherBatch {
    calls: AtomicUsize,
}

impl MetricPlugin for NanEveryOtherBatch {
    const NAME: &'static std::ffi::CStr = c"nan_every_other_batch";
    const OUTPUTS: &'static [&'static std::ffi::CStr] = &[c"mean"];
    const FLAGS: u32 = VAELAB_METRIC_HIGHER_IS_BETTER;
    fn create(_: &Config) -> Result<Self, String> {
        Ok(NanEveryOtherBatch { calls: AtomicUsize::new(0) })
    }
    fn compute(&self, real: Option<&Images>, fake: &Images, out: &mut [f64]) -> Result<(), String> {
        if real.is_some() {
            return Err("a reference-free metric was given reference images".into());
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        out[0] = if call % 2 == 1 { f64::NAN } else { fake.data.iter().map(|v| *v as f64).sum::<f64>() / fake.data.len() as f64 };
        Ok(())
    }
}

/// Declares that it keeps its input's shape, but its forward returns half as many values.
pub struct WrongOutput {
    input: Shape,
}

impl BlockPlugin for WrongOutput {
    const NAME: &'static std::ffi::CStr = c"wrong_output";
    fn create(_: &Config, input: Shape) -> Result<Self, String> {
        Ok(WrongOutput { input })
    }
    fn output(&self) -> Shape {
        self.input
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![]
    }
    fn forward(&self, _: usize, x: &[f32], _: &[&[f32]]) -> Result<Vec<f32>, String> {
        Ok(x[..x.len() / 2].to_vec())
    }
    fn backward(&self, _: usize, _: &[f32], _: &[&[f32]], dy: &[f32]) -> Result<BlockGrads, String> {
        Ok(BlockGrads { dx: dy.to_vec(), dparams: vec![] })
    }
}

/// Declares a parameter with an empty dimension.
pub struct EmptyParam {
    input: Shape,
}

impl BlockPlugin for EmptyParam {
    const NAME: &'static std::ffi::CStr = c"empty_param";
    fn create(_: &Config, input: Shape) -> Result<Self, String> {
        Ok(EmptyParam { input })
    }
    fn output(&self) -> Shape {
        self.input
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec { name: "scale".into(), dims: vec![4, 0], init: Init::Ones }]
    }
    fn forward(&self, _: usize, x: &[f32], _: &[&[f32]]) -> Result<Vec<f32>, String> {
        Ok(x.to_vec())
    }
    fn backward(&self, _: usize, _: &[f32], _: &[&[f32]], dy: &[f32]) -> Result<BlockGrads, String> {
        Ok(BlockGrads { dx: dy.to_vec(), dparams: vec![vec![]] })
    }
}

/// Dereferences a null pointer on its second batch: a segmentation fault (SIGSEGV).
pub struct Segfaults {
    calls: AtomicUsize,
}

impl MetricPlugin for Segfaults {
    const NAME: &'static std::ffi::CStr = c"segfaults";
    const OUTPUTS: &'static [&'static std::ffi::CStr] = &[c"value"];
    const FLAGS: u32 = VAELAB_METRIC_NEEDS_REFERENCE;
    fn create(_: &Config) -> Result<Self, String> {
        Ok(Segfaults { calls: AtomicUsize::new(0) })
    }
    fn compute(&self, _: Option<&Images>, _: &Images, out: &mut [f64]) -> Result<(), String> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 1 {
            // SAFETY: none; this is the fault under test.
            unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
        }
        out[0] = 1.0;
        Ok(())
    }
}

/// Calls `abort()` on its first batch (SIGABRT), as a failed C assertion does.
pub struct Aborts;

impl MetricPlugin for Aborts {
    const NAME: &'static std::ffi::CStr = c"aborts";
    const OUTPUTS: &'static [&'static std::ffi::CStr] = &[c"value"];
    const FLAGS: u32 = 0;
    fn create(_: &Config) -> Result<Self, String> {
        Ok(Aborts)
    }
    fn compute(&self, _: Option<&Images>, _: &Images, _: &mut [f64]) -> Result<(), String> {
        std::process::abort()
    }
}

/// Keeps its input's shape, and dereferences a null pointer in `forward`.
pub struct CrashingBlock {
    input: Shape,
}

impl BlockPlugin for CrashingBlock {
    const NAME: &'static std::ffi::CStr = c"crashing_block";
    fn create(_: &Config, input: Shape) -> Result<Self, String> {
        Ok(CrashingBlock { input })
    }
    fn output(&self) -> Shape {
        self.input
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![]
    }
    fn forward(&self, _: usize, x: &[f32], _: &[&[f32]]) -> Result<Vec<f32>, String> {
        // SAFETY: none; this is the fault under test.
        unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
        Ok(x.to_vec())
    }
    fn backward(&self, _: usize, _: &[f32], _: &[&[f32]], dy: &[f32]) -> Result<BlockGrads, String> {
        Ok(BlockGrads { dx: dy.to_vec(), dparams: vec![] })
    }
}

export_plugin!(
    name: c"test-faulty",
    metrics: [AlwaysFails, Panics, NanEveryOtherBatch, Segfaults, Aborts],
    blocks: [WrongOutput, EmptyParam, CrashingBlock],
);
