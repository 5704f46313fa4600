//! Layers implemented outside vaelab (plugin model blocks), seen through two small traits so that
//! `nn` knows nothing of libraries or the C ABI (`vaelab_plugin_host` implements them).
//!
//! An external block computes over host buffers laid out batch × example (N×C×H×W for images);
//! [`external_op`] converts from and to vaelab's batch-last layout and records the block's backward
//! on dfdx's tape with `Tape::add_backward_op`.

use super::shape::{FeatShape, ParamDecl};
use super::{from_batch_last, to_batch_last, Backend, Flat, Tensor2, OT};
use dfdx::prelude::*;
use std::sync::{Arc, Mutex};

/// A block instantiated for one input shape.
pub trait ExternalBlock: Send + Sync {
    /// `se (from target/release/libvaelab_block_se.so)`: used in error messages.
    fn describe(&self) -> String;
    fn output(&self) -> FeatShape;
    /// Parameters the block declares; the host creates them as `<layer>.<suffix>`.
    fn params(&self) -> &[ParamDecl];
    /// `x`: batch × |input| values; returns batch × |output|. `training`: part of a training step.
    fn forward(&self, batch: usize, x: &[f32], params: &[&[f32]], training: bool) -> Result<Vec<f32>, String>;
    /// Returns the input gradient and one gradient per parameter.
    fn backward(&self, batch: usize, x: &[f32], params: &[&[f32]], dy: &[f32]) -> Result<(Vec<f32>, Vec<Vec<f32>>), String>;
}

/// Where layers find plugin blocks by name.
pub trait BlockSource {
    fn instantiate(&self, name: &str, config: &ron::Value, input: FeatShape) -> Result<Arc<dyn ExternalBlock>, String>;
}

/// No plugins loaded: every `Plugin(...)` layer is an error that says how to load one.
pub struct NoBlocks;

impl BlockSource for NoBlocks {
    fn instantiate(&self, name: &str, _: &ron::Value, _: FeatShape) -> Result<Arc<dyn ExternalBlock>, String> {
        Err(format!(
            "unknown block `{name}`: no plugin is loaded; name the library in the spec's `plugins: [...]`, \
             with --plugin PATH, or in VAELAB_PLUGIN_PATH"
        ))
    }
}

/// Failures of external code during a step. Forward and backward run inside dfdx's graph, which
/// cannot return our errors, so they are collected here and checked before parameters change.
#[derive(Clone, Default)]
pub struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    pub fn push(&self, message: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(message);
    }

    /// The first failure, if any (and forgets them all).
    pub fn take(&self) -> Option<String> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let first = v.first().cloned();
        v.clear();
        first
    }
}

/// Runs `block` on a batch-last activation. A failing forward yields zeros and a recorded failure;
/// a failing backward leaves the gradients untouched and records a failure.
pub fn external_op<D: Backend>(
    block: &Arc<dyn ExternalBlock>,
    x: Tensor2<D>,
    params: Vec<Flat<D, OT<D>>>,
    out_len: usize,
    failures: &Failures,
    training: bool,
) -> Tensor2<D> {
    let batch = x.shape().1;
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let mut ghosts = Vec::new();
    let mut values = Vec::new();
    for p in params {
        let (p, t) = p.split_tape();
        tape = tape.merge(t);
        values.push(p.as_vec());
        ghosts.push(p.ghost());
    }
    let x_rows = from_batch_last(&x.as_vec(), batch);
    let slices: Vec<&[f32]> = values.iter().map(|v| &v[..]).collect();
    let y_rows = match block.forward(batch, &x_rows, &slices, training) {
        Ok(y) if y.len() == out_len * batch => y,
        Ok(y) => {
            failures.push(format!(
                "block {}: forward returned {} values, expected {}",
                block.describe(),
                y.len(),
                out_len * batch
            ));
            vec![0.0; out_len * batch]
        }
        Err(m) => {
            failures.push(format!("block {}: forward failed: {m}", block.describe()));
            vec![0.0; out_len * batch]
        }
    };
    let out = dev.tensor_from_vec(to_batch_last(&y_rows, batch), (out_len, batch));
    let (xg, og) = (x.ghost(), out.ghost());
    let (block, failures) = (block.clone(), failures.clone());
    tape.add_backward_op(move |grads| {
        let dy_rows = from_batch_last(&grads.get(&og).as_vec(), batch);
        let slices: Vec<&[f32]> = values.iter().map(|v| &v[..]).collect();
        match block.backward(batch, &x_rows, &slices, &dy_rows) {
            Ok((dx, dps)) => {
                D::add_host(grads.get_or_alloc_mut(&xg)?, &to_batch_last(&dx, batch))?;
                for (g, dp) in ghosts.iter().zip(&dps) {
                    D::add_host(grads.get_or_alloc_mut(g)?, dp)?;
                }
            }
            Err(m) => failures.push(format!("block {}: backward failed: {m}", block.describe())),
        }
        Ok(())
    });
    out.put_tape(tape)
}
