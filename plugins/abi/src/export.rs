//! Safe Rust authoring of plugins: implement [`MetricPlugin`] or [`BlockPlugin`] and export the
//! implementations with [`export_plugin!`](crate::export_plugin). The generated entry points check
//! buffer lengths and turn errors and panics into `VAELAB_ERROR` with a message.

use crate::*;
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A configuration from the spec, e.g. `(channels: 32)` → `channels` = `"32"` (RON text).
pub struct Config<'a> {
    items: Vec<(&'a str, &'a str)>,
}

impl<'a> Config<'a> {
    /// # Safety
    /// `raw` must be NULL or a valid configuration whose strings are NUL-terminated UTF-8.
    pub unsafe fn from_raw(raw: *const VaelabConfig) -> Result<Config<'a>, String> {
        let mut items = Vec::new();
        if let Some(cfg) = raw.as_ref() {
            for i in 0..cfg.len {
                let kv = &*cfg.items.add(i);
                let key = CStr::from_ptr(kv.key).to_str().map_err(|_| "config key is not UTF-8".to_string())?;
                let value = CStr::from_ptr(kv.value).to_str().map_err(|_| format!("config `{key}` is not UTF-8"))?;
                items.push((key, value));
            }
        }
        Ok(Config { items })
    }

    /// A configuration built in Rust (tests, hosts).
    pub fn from_pairs(items: Vec<(&'a str, &'a str)>) -> Config<'a> {
        Config { items }
    }

    /// The RON text of `key`'s value.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// `key` parsed as a number (or any `FromStr`), `default` when absent.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| format!("`{key}`: cannot read `{v}` as {}", std::any::type_name::<T>())),
        }
    }

    /// An error naming the first key not in `known`, so typos don't pass silently.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.items.iter().find(|(k, _)| !known.contains(k)) {
            Some((k, _)) => Err(format!("unknown config key `{k}`; expected one of: {}", known.join(", "))),
            None => Ok(()),
        }
    }
}

/// A borrowed N×C×H×W image batch.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub bit_depth: u32,
    pub data: &'a [f32],
}

impl<'a> Images<'a> {
    /// # Safety
    /// `raw` must be NULL or describe `n·c·h·w` readable floats.
    pub unsafe fn from_raw(raw: *const VaelabImages) -> Option<Images<'a>> {
        let r = raw.as_ref()?;
        let len = r.n * r.c * r.h * r.w;
        let data = if len == 0 { &[][..] } else { std::slice::from_raw_parts(r.data, len) };
        Some(Images { n: r.n, c: r.c, h: r.h, w: r.w, bit_depth: r.bit_depth, data })
    }

    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    pub fn image(&self, i: usize) -> &'a [f32] {
        let l = self.image_len();
        &self.data[i * l..(i + 1) * l]
    }
}

/// One example's activation shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Flat(usize),
    Image(usize, usize, usize),
}

impl Shape {
    pub fn len(&self) -> usize {
        match *self {
            Shape::Flat(n) => n,
            Shape::Image(c, h, w) => c * h * w,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_raw(self) -> VaelabShape {
        match self {
            Shape::Flat(n) => VaelabShape { rank: 1, dims: [n, 0, 0, 0] },
            Shape::Image(c, h, w) => VaelabShape { rank: 3, dims: [c, h, w, 0] },
        }
    }

    pub fn from_raw(s: &VaelabShape) -> Option<Shape> {
        match s.rank {
            1 => Some(Shape::Flat(s.dims[0])),
            3 => Some(Shape::Image(s.dims[0], s.dims[1], s.dims[2])),
            _ => None,
        }
    }
}

/// How a block's parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Uniform(f32),
    FanInUniform(usize),
}

/// A parameter a block declares; the host creates, optimises and checkpoints it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub dims: Vec<usize>,
    pub init: Init,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Gradients from [`BlockPlugin::backward`]: one for the input and one per declared parameter.
pub struct BlockGrads {
    pub dx: Vec<f32>,
    pub dparams: Vec<Vec<f32>>,
}

/// An image metric written in Rust.
pub trait MetricPlugin: Sized + Send + Sync + 'static {
    /// The name specs use in `eval.metrics`.
    const NAME: &'static CStr;
    /// Output names; `compute` fills one value per output.
    const OUTPUTS: &'static [&'static CStr];
    /// `VAELAB_METRIC_*` flags.
    const FLAGS: u32;
    /// One line saying exactly what the metric computes (shown in `metrics.json` and reports).
    const DEFINITION: Option<&'static CStr> = None;
    fn create(config: &Config) -> Result<Self, String>;
    /// `real` is `None` for reference-free metrics.
    fn compute(&self, real: Option<&Images>, fake: &Images, out: &mut [f64]) -> Result<(), String>;
}

/// A model block written in Rust. Buffers are batch × example, each example row-major in its shape.
pub trait BlockPlugin: Sized + Send + 'static {
    const NAME: &'static CStr;
    fn create(config: &Config, input: Shape) -> Result<Self, String>;
    fn output(&self) -> Shape;
    fn params(&self) -> Vec<ParamSpec>;
    fn forward(&self, batch: usize, x: &[f32], params: &[&[f32]]) -> Result<Vec<f32>, String>;
    /// As `forward`, told whether this is a training step (dropout-like blocks override this).
    fn forward_mode(&self, batch: usize, x: &[f32], params: &[&[f32]], training: bool) -> Result<Vec<f32>, String> {
        let _ = training;
        self.forward(batch, x, params)
    }
    fn backward(&self, batch: usize, x: &[f32], params: &[&[f32]], dy: &[f32]) -> Result<BlockGrads, String>;
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into());
    format!("panicked: {text}")
}

/// Runs `f`, turning `Err` and panics into `VAELAB_ERROR` plus a message.
unsafe fn guarded(err: *mut c_char, err_len: usize, f: impl FnOnce() -> Result<(), String>) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_message(p)));
    match result {
        Ok(()) => VAELAB_OK,
        Err(msg) => {
            write_error(err, err_len, &msg);
            VAELAB_ERROR
        }
    }
}

unsafe extern "C" fn metric_create<T: MetricPlugin>(
    config: *const VaelabConfig,
    ctx: *mut *mut c_void,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let m = T::create(&Config::from_raw(config)?)?;
        *ctx = Box::into_raw(Box::new(m)) as *mut c_void;
        Ok(())
    })
}

unsafe extern "C" fn metric_compute<T: MetricPlugin>(
    ctx: *mut c_void,
    real: *const VaelabImages,
    fake: *const VaelabImages,
    out: *mut f64,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let m = &*(ctx as *const T);
        let fake = Images::from_raw(fake).ok_or("no images given")?;
        let out = std::slice::from_raw_parts_mut(out, T::OUTPUTS.len());
        m.compute(Images::from_raw(real).as_ref(), &fake, out)
    })
}

unsafe extern "C" fn destroy<T>(ctx: *mut c_void) {
    if !ctx.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(ctx as *mut T))));
    }
}

/// The table entry of a Rust metric. Its output-name array is leaked: tables live as long as the
/// library, which the host never unloads.
pub fn metric<T: MetricPlugin>() -> VaelabMetric {
    let names: Vec<*const c_char> = T::OUTPUTS.iter().map(|s| s.as_ptr()).collect();
    VaelabMetric {
        size: std::mem::size_of::<VaelabMetric>(),
        name: T::NAME.as_ptr(),
        n_outputs: names.len(),
        output_names: Box::leak(names.into_boxed_slice()).as_ptr(),
        flags: T::FLAGS,
        create: Some(metric_create::<T>),
        compute: Some(metric_compute::<T>),
        destroy: Some(destroy::<T>),
        definition: T::DEFINITION.map_or(std::ptr::null(), CStr::as_ptr),
    }
}

/// A Rust block with what the entry points need to size its buffers.
struct BlockCtx<T> {
    block: T,
    input: Shape,
    output: Shape,
    params: Vec<ParamSpec>,
}

impl<T> BlockCtx<T> {
    unsafe fn param_slices<'a>(&self, params: *const *const f32) -> Vec<&'a [f32]> {
        (0..self.params.len()).map(|i| std::slice::from_raw_parts(*params.add(i), self.params[i].len())).collect()
    }
}

fn check_len(what: &str, got: usize, want: usize, shape: impl std::fmt::Display) -> Result<(), String> {
    if got != want {
        return Err(format!("{what} has {got} values, but the declared shape {shape} needs {want}"));
    }
    Ok(())
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Flat(n) => write!(f, "({n})"),
            Shape::Image(c, h, w) => write!(f, "({c}, {h}, {w})"),
        }
    }
}

unsafe extern "C" fn block_create<T: BlockPlugin>(
    config: *const VaelabConfig,
    input: *const VaelabShape,
    output: *mut VaelabShape,
    ctx: *mut *mut c_void,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let input = Shape::from_raw(&*input).ok_or("input shape must have rank 1 or 3")?;
        let block = T::create(&Config::from_raw(config)?, input)?;
        let (out, params) = (block.output(), block.params());
        for p in &params {
            if p.name.is_empty() || p.name.len() >= VAELAB_NAME_LEN || p.dims.is_empty() || p.dims.len() > VAELAB_MAX_RANK {
                return Err(format!(
                    "parameter `{}`: names need 1..{} bytes and shapes 1..{VAELAB_MAX_RANK} dimensions",
                    p.name,
                    VAELAB_NAME_LEN - 1
                ));
            }
        }
        *output = out.to_raw();
        *ctx = Box::into_raw(Box::new(BlockCtx { block, input, output: out, params })) as *mut c_void;
        Ok(())
    })
}

unsafe extern "C" fn block_param_count<T: BlockPlugin>(ctx: *mut c_void) -> usize {
    (*(ctx as *const BlockCtx<T>)).params.len()
}

unsafe extern "C" fn block_param_decl<T: BlockPlugin>(ctx: *mut c_void, index: usize, decl: *mut VaelabParamDecl) -> i32 {
    block_param_decl_ex::<T>(ctx, index, decl, std::ptr::null_mut(), 0)
}

unsafe extern "C" fn block_param_decl_ex<T: BlockPlugin>(
    ctx: *mut c_void,
    index: usize,
    decl: *mut VaelabParamDecl,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    let b = &*(ctx as *const BlockCtx<T>);
    let Some(p) = b.params.get(index) else {
        write_error(err, err_len, &format!("parameter {index} asked for, but the block has {}", b.params.len()));
        return VAELAB_ERROR;
    };
    if p.name.len() >= VAELAB_NAME_LEN || p.dims.len() > VAELAB_MAX_RANK {
        let why = format!(
            "parameter `{}`: names have at most {} bytes and shapes {VAELAB_MAX_RANK} dimensions",
            p.name,
            VAELAB_NAME_LEN - 1
        );
        write_error(err, err_len, &why);
        return VAELAB_ERROR;
    }
    let mut name = [0 as c_char; VAELAB_NAME_LEN];
    for (d, s) in name.iter_mut().zip(p.name.bytes()) {
        *d = s as c_char;
    }
    let mut dims = [0; VAELAB_MAX_RANK];
    dims[..p.dims.len()].copy_from_slice(&p.dims);
    let (init, init_arg) = match p.init {
        Init::Zeros => (VAELAB_INIT_ZEROS, 0.0),
        Init::Ones => (VAELAB_INIT_ONES, 0.0),
        Init::Uniform(a) => (VAELAB_INIT_UNIFORM, a),
        Init::FanInUniform(f) => (VAELAB_INIT_FAN_IN_UNIFORM, f as f32),
    };
    *decl = VaelabParamDecl { name, shape: VaelabShape { rank: p.dims.len(), dims }, init, init_arg };
    VAELAB_OK
}

unsafe extern "C" fn block_forward<T: BlockPlugin>(
    ctx: *mut c_void,
    batch: usize,
    x: *const f32,
    params: *const *const f32,
    y: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    block_forward_ex::<T>(ctx, batch, x, params, y, 0, err, err_len)
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn block_forward_ex<T: BlockPlugin>(
    ctx: *mut c_void,
    batch: usize,
    x: *const f32,
    params: *const *const f32,
    y: *mut f32,
    flags: u32,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let b = &*(ctx as *const BlockCtx<T>);
        let x = std::slice::from_raw_parts(x, batch * b.input.len());
        let training = flags & VAELAB_BLOCK_TRAINING != 0;
        let out = b.block.forward_mode(batch, x, &b.param_slices(params), training)?;
        check_len("forward's output", out.len(), batch * b.output.len(), format!("{batch} × {}", b.output))?;
        std::ptr::copy_nonoverlapping(out.as_ptr(), y, out.len());
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn block_backward<T: BlockPlugin>(
    ctx: *mut c_void,
    batch: usize,
    x: *const f32,
    params: *const *const f32,
    dy: *const f32,
    dx: *mut f32,
    dparams: *const *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let b = &*(ctx as *const BlockCtx<T>);
        let x = std::slice::from_raw_parts(x, batch * b.input.len());
        let dy = std::slice::from_raw_parts(dy, batch * b.output.len());
        let g = b.block.backward(batch, x, &b.param_slices(params), dy)?;
        check_len("backward's input gradient", g.dx.len(), x.len(), format!("{batch} × {}", b.input))?;
        if g.dparams.len() != b.params.len() {
            return Err(format!("backward returned {} parameter gradients for {} parameters", g.dparams.len(), b.params.len()));
        }
        std::ptr::copy_nonoverlapping(g.dx.as_ptr(), dx, g.dx.len());
        for (i, (gp, p)) in g.dparams.iter().zip(&b.params).enumerate() {
            check_len(&format!("the gradient of `{}`", p.name), gp.len(), p.len(), format!("{:?}", p.dims))?;
            std::ptr::copy_nonoverlapping(gp.as_ptr(), *dparams.add(i), gp.len());
        }
        Ok(())
    })
}

/// The table entry of a Rust block.
pub fn block<T: BlockPlugin>() -> VaelabBlock {
    VaelabBlock {
        size: std::mem::size_of::<VaelabBlock>(),
        name: T::NAME.as_ptr(),
        create: Some(block_create::<T>),
        param_count: Some(block_param_count::<T>),
        param_decl: Some(block_param_decl::<T>),
        forward: Some(block_forward::<T>),
        backward: Some(block_backward::<T>),
        destroy: Some(destroy::<BlockCtx<T>>),
        param_decl_ex: Some(block_param_decl_ex::<T>),
        forward_ex: Some(block_forward_ex::<T>),
    }
}

/// A plugin's table and the arrays it points into, built once per library.
pub struct Exported {
    table: VaelabPlugin,
}

// SAFETY: the table only points at leaked, never-mutated data and at static strings.
unsafe impl Send for Exported {}
unsafe impl Sync for Exported {}

impl Exported {
    pub fn new(name: &'static CStr, metrics: Vec<VaelabMetric>, blocks: Vec<VaelabBlock>) -> Exported {
        let metrics: Vec<*const VaelabMetric> = metrics.into_iter().map(|m| Box::leak(Box::new(m)) as *const _).collect();
        let blocks: Vec<*const VaelabBlock> = blocks.into_iter().map(|b| Box::leak(Box::new(b)) as *const _).collect();
        Exported {
            table: VaelabPlugin {
                size: std::mem::size_of::<VaelabPlugin>(),
                abi_version: VAELAB_ABI_VERSION,
                name: name.as_ptr(),
                n_metrics: metrics.len(),
                metrics: Box::leak(metrics.into_boxed_slice()).as_ptr(),
                n_blocks: blocks.len(),
                blocks: Box::leak(blocks.into_boxed_slice()).as_ptr(),
            },
        }
    }

    pub fn table(&self) -> *const VaelabPlugin {
        &self.table
    }
}

/// Exports a plugin's two entry points from a `cdylib` crate:
///
/// ```ignore
/// vaelab_plugin_abi::export_plugin!(name: c"metric-psnr", metrics: [PsnrRs], blocks: []);
/// ```
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, metrics: [$($metric:ty),* $(,)?], blocks: [$($block:ty),* $(,)?] $(,)?) => {
        #[no_mangle]
        pub extern "C" fn vaelab_plugin_abi_version() -> u32 {
            $crate::VAELAB_ABI_VERSION
        }

        #[no_mangle]
        pub extern "C" fn vaelab_plugin() -> *const $crate::VaelabPlugin {
            static TABLE: ::std::sync::OnceLock<$crate::export::Exported> = ::std::sync::OnceLock::new();
            ::std::panic::catch_unwind(|| {
                TABLE
                    .get_or_init(|| {
                        $crate::export::Exported::new(
                            $name,
                            vec![$($crate::export::metric::<$metric>()),*],
                            vec![$($crate::export::block::<$block>()),*],
                        )
                    })
                    .table()
            })
            .unwrap_or(::std::ptr::null())
        }
    };
}
