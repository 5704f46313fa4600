//! Plugin metrics as [`Metric`]s. Each evaluation batch is one `compute` call (or one call on all
//! images for `VAELAB_METRIC_WHOLE_SET` metrics); values are averaged over images. A batch whose
//! value is NaN or infinite is left out of the mean and counted in the report's note.

use super::library::{Library, MetricDecl};
use super::raw::{message, RawConfig, ERROR_BUFFER};
use rayon::prelude::*;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};
use vaelab_datasets::ImageBatch;
use vaelab_metrics::metric::{Metric, MetricError, Scored};
use vaelab_plugin_abi as abi;

struct Context(*mut c_void);
// SAFETY: the plugin's context is only used through `call`, which serialises calls unless the
// plugin declared its metric thread-safe.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

pub struct PluginMetric {
    lib: Arc<Library>,
    decl: MetricDecl,
    ctx: Context,
    /// Held around `compute` unless the metric is thread-safe.
    serial: Mutex<()>,
    batch: usize,
    definition: String,
}

impl PluginMetric {
    pub fn create(lib: Arc<Library>, decl: MetricDecl, batch: usize) -> Result<PluginMetric, String> {
        let cfg = RawConfig::new(&[])?;
        let view = cfg.view();
        let mut ctx = std::ptr::null_mut();
        let mut err = [0 as c_char; ERROR_BUFFER];
        let create = decl.table.create.expect("checked on load");
        // SAFETY: arguments follow the ABI; buffers outlive the call.
        let status = unsafe { create(&view, &mut ctx, err.as_mut_ptr(), err.len()) };
        if status != abi::VAELAB_OK {
            return Err(format!("metric `{}` (plugin {}): create failed: {}", decl.name, lib.path.display(), message(&err)));
        }
        let definition = super::metric_definition(&lib, &decl, false);
        Ok(PluginMetric { lib, ctx: Context(ctx), serial: Mutex::new(()), batch: batch.max(1), definition, decl })
    }

    fn fail(&self, message: String) -> MetricError {
        MetricError::Failed { metric: self.decl.name.clone(), message: format!("{message} (plugin {})", self.lib.path.display()) }
    }

    /// One `compute` call on images `range` of the batches.
    fn call(&self, real: &ImageBatch, fake: &ImageBatch, range: std::ops::Range<usize>) -> Result<Vec<f64>, MetricError> {
        let len = fake.image_len();
        let view = |b: &ImageBatch| abi::VaelabImages {
            n: range.len(),
            c: b.c,
            h: b.h,
            w: b.w,
            bit_depth: b.bit_depth as u32,
            data: b.pixels[range.start * len..range.end * len].as_ptr(),
        };
        let fake_view = view(fake);
        let real_view = self.decl.has(abi::VAELAB_METRIC_NEEDS_REFERENCE).then(|| view(real));
        let real_ptr = real_view.as_ref().map_or(std::ptr::null(), |r| r as *const _);
        let mut out = vec![f64::NAN; self.decl.outputs.len()];
        let mut err = [0 as c_char; ERROR_BUFFER];
        let compute = self.decl.table.compute.expect("checked on load");
        let _guard =
            (!self.decl.has(abi::VAELAB_METRIC_THREAD_SAFE)).then(|| self.serial.lock().unwrap_or_else(|p| p.into_inner()));
        // SAFETY: the views point into live batches; `out` has one slot per declared output.
        let status = unsafe { compute(self.ctx.0, real_ptr, &fake_view, out.as_mut_ptr(), err.as_mut_ptr(), err.len()) };
        if status != abi::VAELAB_OK {
            return Err(self.fail(message(&err)));
        }
        Ok(out)
    }
}

impl Drop for PluginMetric {
    fn drop(&mut self) {
        if let Some(destroy) = self.decl.table.destroy {
            // SAFETY: the context came from this metric's `create` and is destroyed once.
            unsafe { destroy(self.ctx.0) };
        }
    }
}

impl Metric for PluginMetric {
    fn name(&self) -> &str {
        &self.decl.name
    }
    fn definition(&self) -> &str {
        &self.definition
    }
    fn higher_is_better(&self) -> bool {
        self.decl.has(abi::VAELAB_METRIC_HIGHER_IS_BETTER)
    }
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError> {
        Ok(self.evaluate(real, fake)?[0].value)
    }

    fn evaluate(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<Vec<Scored>, MetricError> {
        self.evaluate_with(real, fake, None)
    }
}

impl PluginMetric {
    /// As [`Metric::evaluate`]; with `on_batch`, the batches are scored one after another and
    /// `on_batch(k, count)` is called before batch `k` (1-based) — the out-of-process worker
    /// reports it, so that a crash can be placed.
    pub fn evaluate_with(
        &self,
        real: &ImageBatch,
        fake: &ImageBatch,
        on_batch: Option<&dyn Fn(usize, usize)>,
    ) -> Result<Vec<Scored>, MetricError> {
        if self.decl.has(abi::VAELAB_METRIC_NEEDS_REFERENCE) {
            vaelab_metrics::metric::check_pair(&self.decl.name, real, fake)?;
        }
        let n = fake.n;
        let step = if self.decl.has(abi::VAELAB_METRIC_WHOLE_SET) { n.max(1) } else { self.batch };
        let ranges: Vec<_> = (0..n).step_by(step).map(|s| s..(s + step).min(n)).collect();
        // Stops at the first failing batch.
        let results: Vec<Vec<f64>> = if let Some(report) = on_batch {
            let count = ranges.len();
            let each = |(k, r): (usize, &std::ops::Range<usize>)| {
                report(k + 1, count);
                self.call(real, fake, r.clone())
            };
            ranges.iter().enumerate().map(each).collect::<Result<_, _>>()?
        } else if self.decl.has(abi::VAELAB_METRIC_THREAD_SAFE) {
            ranges.par_iter().map(|r| self.call(real, fake, r.clone())).collect::<Result<_, _>>()?
        } else {
            ranges.iter().map(|r| self.call(real, fake, r.clone())).collect::<Result<_, _>>()?
        };
        let single = self.decl.outputs.len() == 1;
        let mut scored = Vec::new();
        for (j, output) in self.decl.outputs.iter().enumerate() {
            let (mut sum, mut images, mut bad) = (0.0, 0usize, 0usize);
            for (r, values) in ranges.iter().zip(&results) {
                if values[j].is_finite() {
                    sum += values[j] * r.len() as f64;
                    images += r.len();
                } else {
                    bad += 1;
                }
            }
            let key = if single { self.decl.name.clone() } else { format!("{}.{output}", self.decl.name) };
            if images == 0 {
                return Err(self.fail(format!("output `{output}` was NaN or infinite for every batch")));
            }
            let note = (bad > 0).then(|| {
                format!("{bad} of {} batches gave a NaN or infinite `{output}` and were left out of the mean", ranges.len())
            });
            scored.push(Scored { key, value: sum / images as f64, note });
        }
        Ok(scored)
    }
}
