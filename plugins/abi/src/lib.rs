//! The stable C ABI between vaelab and its run-time plugins.
//!
//! A plugin is a shared library that exports two symbols:
//! - `uint32_t vaelab_plugin_abi_version(void)`: returns [`VAELAB_ABI_VERSION`] as the plugin saw it
//!   when it was built. The host refuses a library whose version differs from its own.
//! - `const VaelabPlugin *vaelab_plugin(void)`: the plugin's table of metrics and model blocks.
//!
//! Versioning: every table begins with its own size in bytes, and fields are only ever appended to a
//! table. A host reads the fields the plugin's `size` covers (the others count as NULL) and refuses a
//! table smaller than the first ABI 1 layout (`VAELAB_*_SIZE_V1`): a plugin built against an older
//! header keeps working, and one built against a later header (larger tables) still loads. Appended
//! so far: `VaelabMetric::definition`, `VaelabBlock::param_decl_ex` and `VaelabBlock::forward_ex`.
//!
//! Ownership: whoever allocates a buffer frees it. Images, configs, parameter buffers and error buffers
//! are owned by the host and valid only during the call; contexts are owned by the plugin and freed by
//! its `destroy`. Strings in tables (names) are owned by the plugin and must live as long as the
//! library (the host never unloads one).
//!
//! Errors: functions return [`VAELAB_OK`] or [`VAELAB_ERROR`]; on error they write a NUL-terminated
//! UTF-8 message (truncated to fit) into the host's error buffer.
//!
//! The C header `include/vaelab_plugin.h` declares the same types; a test compiles it and compares
//! every field's offset and every struct's size with these definitions.
//!
//! This crate depends on nothing. Rust authors implement [`MetricPlugin`] or [`BlockPlugin`] and
//! export them with [`export_plugin!`], which wraps every entry point in `catch_unwind`.

use std::ffi::{c_char, c_void};

pub mod export;

pub use export::{BlockGrads, BlockPlugin, Config, Images, Init, MetricPlugin, ParamSpec, Shape};

/// The ABI version this crate describes. Bumped only for changes that break old plugins.
pub const VAELAB_ABI_VERSION: u32 = 1;

/// Name of the exported `uint32_t (void)` function that returns the plugin's ABI version.
pub const ABI_VERSION_SYMBOL: &str = "vaelab_plugin_abi_version";
/// Name of the exported `const VaelabPlugin *(void)` function that returns the plugin's table.
pub const PLUGIN_SYMBOL: &str = "vaelab_plugin";

/// Success.
pub const VAELAB_OK: i32 = 0;
/// Failure; the message is in the error buffer.
pub const VAELAB_ERROR: i32 = 1;

/// Metric flag: larger values are better (PSNR); unset means smaller is better (MSE).
pub const VAELAB_METRIC_HIGHER_IS_BETTER: u32 = 1;
/// Metric flag: `compute` may be called from several threads at once on one context.
pub const VAELAB_METRIC_THREAD_SAFE: u32 = 2;
/// Metric flag: compares model output with reference images; unset means reference-free (`real` is NULL).
pub const VAELAB_METRIC_NEEDS_REFERENCE: u32 = 4;
/// Metric flag: call `compute` once on all evaluation images (distribution metrics such as FID),
/// not once per evaluation batch.
pub const VAELAB_METRIC_WHOLE_SET: u32 = 8;

/// Block flag for `forward_ex`: this call is part of a training step (a dropout-like block samples
/// its noise); unset during evaluation and analysis.
pub const VAELAB_BLOCK_TRAINING: u32 = 1;

/// Parameter initializers a block can ask for.
pub const VAELAB_INIT_ZEROS: u32 = 0;
pub const VAELAB_INIT_ONES: u32 = 1;
/// U(−a, a) with a = `init_arg`.
pub const VAELAB_INIT_UNIFORM: u32 = 2;
/// U(−b, b) with b = 1/√`init_arg` (PyTorch's default for Linear/Conv with fan-in `init_arg`).
pub const VAELAB_INIT_FAN_IN_UNIFORM: u32 = 3;

/// Longest parameter name, including the NUL.
pub const VAELAB_NAME_LEN: usize = 64;
/// Most dimensions of a shape.
pub const VAELAB_MAX_RANK: usize = 4;

/// One `key: value` of a spec's block or metric configuration. Values are written as RON text:
/// `32`, `0.5`, `true`, `"text"` (strings keep their quotes), `[1, 2]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabKeyValue {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// A configuration: `len` key/value pairs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabConfig {
    pub len: usize,
    pub items: *const VaelabKeyValue,
}

/// A contiguous N×C×H×W batch of f32 values in [0, 1].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabImages {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Bits per sample of the original files (8 for PNG/IDX, up to 16 for radiographs).
    pub bit_depth: u32,
    pub data: *const f32,
}

/// The shape of one example's activations: rank 1 `(features)` or rank 3 `(channels, height, width)`;
/// parameter shapes use rank 1 to 4. Unused dimensions are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaelabShape {
    pub rank: usize,
    pub dims: [usize; VAELAB_MAX_RANK],
}

/// A parameter a block asks the host to create. The host owns it: it lives in vaelab's parameter store
/// as `<layer>.<name>`, is initialised, optimised and checkpointed like every built-in weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabParamDecl {
    /// NUL-terminated; letters, digits and `_` only.
    pub name: [c_char; VAELAB_NAME_LEN],
    pub shape: VaelabShape,
    /// One of the `VAELAB_INIT_*` constants.
    pub init: u32,
    pub init_arg: f32,
}

pub type CreateMetricFn =
    unsafe extern "C" fn(config: *const VaelabConfig, ctx: *mut *mut c_void, err: *mut c_char, err_len: usize) -> i32;
pub type ComputeMetricFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    real: *const VaelabImages,
    fake: *const VaelabImages,
    out: *mut f64,
    err: *mut c_char,
    err_len: usize,
) -> i32;
pub type DestroyFn = unsafe extern "C" fn(ctx: *mut c_void);

/// An image metric.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabMetric {
    /// `sizeof(VaelabMetric)` as the plugin was compiled.
    pub size: usize,
    /// The name specs use in `eval.metrics`.
    pub name: *const c_char,
    /// How many values `compute` writes into `out`, and their names. A single output is reported
    /// under the metric's name; several as `name.output`.
    pub n_outputs: usize,
    pub output_names: *const *const c_char,
    /// `VAELAB_METRIC_*` flags.
    pub flags: u32,
    /// Makes a context from the spec's configuration.
    pub create: Option<CreateMetricFn>,
    /// Scores `fake` (model output) against `real` (references; NULL for reference-free metrics),
    /// writing `n_outputs` values into `out`.
    pub compute: Option<ComputeMetricFn>,
    pub destroy: Option<DestroyFn>,
    // ---- Appended within ABI 1 (read only when `size` covers them; NULL/absent in older plugins).
    /// One line saying exactly what the metric computes, for `metrics.json` and reports; NULL: none.
    pub definition: *const c_char,
}

/// `VaelabMetric`'s size in the first ABI 1 release: the smallest table a host accepts.
pub const VAELAB_METRIC_SIZE_V1: usize = std::mem::offset_of!(VaelabMetric, definition);

pub type CreateBlockFn = unsafe extern "C" fn(
    config: *const VaelabConfig,
    input: *const VaelabShape,
    output: *mut VaelabShape,
    ctx: *mut *mut c_void,
    err: *mut c_char,
    err_len: usize,
) -> i32;
pub type ParamCountFn = unsafe extern "C" fn(ctx: *mut c_void) -> usize;
pub type ParamDeclFn = unsafe extern "C" fn(ctx: *mut c_void, index: usize, decl: *mut VaelabParamDecl) -> i32;
pub type BlockForwardFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    batch: usize,
    x: *const f32,
    params: *const *const f32,
    y: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
/// `param_decl` with an error buffer for the reason a declaration cannot be given.
pub type ParamDeclExFn =
    unsafe extern "C" fn(ctx: *mut c_void, index: usize, decl: *mut VaelabParamDecl, err: *mut c_char, err_len: usize) -> i32;
/// `forward` with `flags` (`VAELAB_BLOCK_TRAINING`).
pub type BlockForwardExFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    batch: usize,
    x: *const f32,
    params: *const *const f32,
    y: *mut f32,
    flags: u32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
pub type BlockBackwardFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    batch: usize,
    x: *const f32,
    params: *const *const f32,
    dy: *const f32,
    dx: *mut f32,
    dparams: *const *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;

/// A model block a spec can name inside an encoder or decoder: `Plugin("film", (channels: 32))`.
///
/// Activations cross as contiguous batch × example buffers (each example in its shape's row-major
/// order, N×C×H×W for images). `forward` writes `batch × |output|` values into `y`; `backward` gets
/// the output gradient `dy` and writes (overwrites) `dx` (`batch × |input|`) and each parameter's
/// gradient into `dparams[i]`. Calls on one context come from one thread at a time.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabBlock {
    pub size: usize,
    pub name: *const c_char,
    /// Makes a context for one input shape and writes the block's output shape.
    pub create: Option<CreateBlockFn>,
    pub param_count: Option<ParamCountFn>,
    pub param_decl: Option<ParamDeclFn>,
    pub forward: Option<BlockForwardFn>,
    pub backward: Option<BlockBackwardFn>,
    pub destroy: Option<DestroyFn>,
    // ---- Appended within ABI 1 (read only when `size` covers them; absent in older plugins).
    /// As `param_decl`, writing the reason into `err` on failure. Preferred when present.
    pub param_decl_ex: Option<ParamDeclExFn>,
    /// As `forward`, told whether the call is part of a training step. Preferred when present.
    pub forward_ex: Option<BlockForwardExFn>,
}

/// `VaelabBlock`'s size in the first ABI 1 release: the smallest table a host accepts.
pub const VAELAB_BLOCK_SIZE_V1: usize = std::mem::offset_of!(VaelabBlock, param_decl_ex);

/// What `vaelab_plugin()` returns. The arrays hold pointers, so each entry keeps its own `size`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VaelabPlugin {
    pub size: usize,
    pub abi_version: u32,
    /// A human-readable name for listings, e.g. `"metric-psnr"`.
    pub name: *const c_char,
    pub n_metrics: usize,
    pub metrics: *const *const VaelabMetric,
    pub n_blocks: usize,
    pub blocks: *const *const VaelabBlock,
}

pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
pub type PluginFn = unsafe extern "C" fn() -> *const VaelabPlugin;

/// Writes `msg` into a host error buffer, truncated at a character boundary, NUL-terminated.
///
/// # Safety
/// `err` must be NULL or point to `len` writable bytes.
pub unsafe fn write_error(err: *mut c_char, len: usize, msg: &str) {
    if err.is_null() || len == 0 {
        return;
    }
    let mut n = msg.len().min(len - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    std::ptr::copy_nonoverlapping(msg.as_ptr() as *const c_char, err, n);
    *err.add(n) = 0;
}
