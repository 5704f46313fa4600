//! Plugin model blocks as [`ExternalBlock`]s. The host checks what a block declares (output shape,
//! parameter names and shapes) before creating anything in the parameter store.

use super::library::{BlockDecl, Library};
use super::raw::{message, text, RawConfig, ERROR_BUFFER};
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};
use vaelab_nn::shape::ParamDecl;
use vaelab_nn::{ExternalBlock, FeatShape, Init, Role};
use vaelab_plugin_abi as abi;

struct Context(*mut c_void);
// SAFETY: every call on the context holds `PluginBlock::calls`, so the plugin sees one thread at a time.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

pub struct PluginBlock {
    lib: Arc<Library>,
    decl: BlockDecl,
    ctx: Context,
    calls: Mutex<()>,
    input: FeatShape,
    output: FeatShape,
    params: Vec<ParamDecl>,
}

fn to_raw(s: FeatShape) -> abi::VaelabShape {
    match s {
        FeatShape::Flat(n) => abi::VaelabShape { rank: 1, dims: [n, 0, 0, 0] },
        FeatShape::Image(c, h, w) => abi::VaelabShape { rank: 3, dims: [c, h, w, 0] },
    }
}

fn from_raw(s: &abi::VaelabShape) -> Result<FeatShape, String> {
    let shape = match s.rank {
        1 => FeatShape::Flat(s.dims[0]),
        3 => FeatShape::Image(s.dims[0], s.dims[1], s.dims[2]),
        r => return Err(format!("declared an output of rank {r}; blocks output rank 1 (N) or rank 3 (C, H, W)")),
    };
    if shape.is_empty() {
        return Err(format!("declared an empty output shape {shape}"));
    }
    Ok(shape)
}

fn param_from_raw(d: &abi::VaelabParamDecl, taken: &[ParamDecl]) -> Result<ParamDecl, String> {
    // SAFETY: the name is a fixed-size array inside the declaration; it is read only up to a NUL.
    let name = if d.name.contains(&0) { unsafe { text(d.name.as_ptr()) } } else { None }
        .ok_or("declared a parameter without a NUL-terminated UTF-8 name")?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("parameter `{name}`: names may use letters, digits and `_` only"));
    }
    if taken.iter().any(|p| p.suffix == name) {
        return Err(format!("declared parameter `{name}` twice"));
    }
    if d.shape.rank == 0 || d.shape.rank > abi::VAELAB_MAX_RANK {
        return Err(format!("parameter `{name}`: rank {} is not in 1..={}", d.shape.rank, abi::VAELAB_MAX_RANK));
    }
    let shape = d.shape.dims[..d.shape.rank].to_vec();
    if shape.contains(&0) {
        return Err(format!("parameter `{name}`: declared shape {shape:?} has an empty dimension"));
    }
    let init = match d.init {
        abi::VAELAB_INIT_ZEROS => Init::Zeros,
        abi::VAELAB_INIT_ONES => Init::Ones,
        abi::VAELAB_INIT_UNIFORM if d.init_arg.is_finite() && d.init_arg >= 0.0 => Init::Uniform { a: d.init_arg },
        abi::VAELAB_INIT_FAN_IN_UNIFORM if d.init_arg >= 1.0 => Init::FanInUniform { fan_in: d.init_arg as usize },
        other => return Err(format!("parameter `{name}`: bad initializer {other} with argument {}", d.init_arg)),
    };
    Ok(ParamDecl { suffix: name, shape, init, role: Role::Trainable })
}

impl PluginBlock {
    pub fn create(
        lib: Arc<Library>,
        decl: BlockDecl,
        config: &[(String, String)],
        input: FeatShape,
    ) -> Result<PluginBlock, String> {
        let where_ = format!("block `{}` (plugin {})", decl.name, lib.path.display());
        let cfg = RawConfig::new(config)?;
        let view = cfg.view();
        let raw_in = to_raw(input);
        let mut raw_out = abi::VaelabShape { rank: 0, dims: [0; 4] };
        let mut ctx = std::ptr::null_mut();
        let mut err = [0 as c_char; ERROR_BUFFER];
        let t = decl.table;
        // SAFETY: arguments follow the ABI; all buffers outlive the call.
        let status = unsafe { t.create.expect("checked")(&view, &raw_in, &mut raw_out, &mut ctx, err.as_mut_ptr(), err.len()) };
        if status != abi::VAELAB_OK {
            return Err(format!("{where_}: {}", message(&err)));
        }
        // From here the context exists, so errors must go through a built block whose Drop frees it.
        let mut block =
            PluginBlock { lib, decl, ctx: Context(ctx), calls: Mutex::new(()), input, output: input, params: Vec::new() };
        block.output = from_raw(&raw_out).map_err(|m| format!("{where_}: {m}"))?;
        // SAFETY: the context is live; declarations are written into a local.
        let count = unsafe { t.param_count.expect("checked")(ctx) };
        for i in 0..count {
            let mut d = abi::VaelabParamDecl { name: [0; abi::VAELAB_NAME_LEN], shape: raw_out, init: 0, init_arg: 0.0 };
            let mut err = [0 as c_char; ERROR_BUFFER];
            // SAFETY: as above; `param_decl_ex` (appended within ABI 1) also writes a reason.
            let status = match t.param_decl_ex {
                Some(ex) => unsafe { ex(ctx, i, &mut d, err.as_mut_ptr(), err.len()) },
                None => unsafe { t.param_decl.expect("checked")(ctx, i, &mut d) },
            };
            if status != abi::VAELAB_OK {
                let why = if t.param_decl_ex.is_some() { format!(": {}", message(&err)) } else { String::new() };
                return Err(format!("{where_}: cannot describe parameter {i} of {count}{why}"));
            }
            let p = param_from_raw(&d, &block.params).map_err(|m| format!("{where_}: {m}"))?;
            block.params.push(p);
        }
        Ok(block)
    }

    fn sizes_ok(&self, what: &str, got: usize, want: usize) -> Result<(), String> {
        if got != want {
            return Err(format!("{what} has {got} values, expected {want}"));
        }
        Ok(())
    }
}

impl Drop for PluginBlock {
    fn drop(&mut self) {
        // SAFETY: the context came from this block's `create` and is destroyed once.
        unsafe { self.decl.table.destroy.expect("checked")(self.ctx.0) };
    }
}

impl ExternalBlock for PluginBlock {
    fn describe(&self) -> String {
        format!("`{}` (plugin {})", self.decl.name, self.lib.path.display())
    }

    fn output(&self) -> FeatShape {
        self.output
    }

    fn params(&self) -> &[ParamDecl] {
        &self.params
    }

    fn forward(&self, batch: usize, x: &[f32], params: &[&[f32]], training: bool) -> Result<Vec<f32>, String> {
        self.sizes_ok("the input", x.len(), batch * self.input.len())?;
        let ptrs: Vec<*const f32> = params.iter().map(|p| p.as_ptr()).collect();
        let mut y = vec![0.0f32; batch * self.output.len()];
        let mut err = [0 as c_char; ERROR_BUFFER];
        let _one_at_a_time = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let flags = if training { abi::VAELAB_BLOCK_TRAINING } else { 0 };
        let (ctx, xp, pp, yp, ep, el) = (self.ctx.0, x.as_ptr(), ptrs.as_ptr(), y.as_mut_ptr(), err.as_mut_ptr(), err.len());
        // SAFETY: buffers have the sizes the block declared for this batch. `forward_ex` (appended
        // within ABI 1) is told whether this is a training step; older plugins get `forward`.
        let status = unsafe {
            match self.decl.table.forward_ex {
                Some(ex) => ex(ctx, batch, xp, pp, yp, flags, ep, el),
                None => self.decl.table.forward.expect("checked")(ctx, batch, xp, pp, yp, ep, el),
            }
        };
        if status != abi::VAELAB_OK {
            return Err(message(&err));
        }
        Ok(y)
    }

    fn backward(&self, batch: usize, x: &[f32], params: &[&[f32]], dy: &[f32]) -> Result<(Vec<f32>, Vec<Vec<f32>>), String> {
        self.sizes_ok("the output gradient", dy.len(), batch * self.output.len())?;
        let ptrs: Vec<*const f32> = params.iter().map(|p| p.as_ptr()).collect();
        let mut dx = vec![0.0f32; x.len()];
        let mut dps: Vec<Vec<f32>> = self.params.iter().map(|p| vec![0.0; p.shape.iter().product()]).collect();
        let dp_ptrs: Vec<*mut f32> = dps.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let mut err = [0 as c_char; ERROR_BUFFER];
        let _one_at_a_time = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: buffers have the sizes the block declared for this batch.
        let status = unsafe {
            self.decl.table.backward.expect("checked")(
                self.ctx.0,
                batch,
                x.as_ptr(),
                ptrs.as_ptr(),
                dy.as_ptr(),
                dx.as_mut_ptr(),
                dp_ptrs.as_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if status != abi::VAELAB_OK {
            return Err(message(&err));
        }
        Ok((dx, dps))
    }
}
