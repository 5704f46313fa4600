//! Data as tensors: a batch of images as the batch-last matrix models consume, and seeded
//! standard-normal noise. No I/O: datasets are opened elsewhere (`vaelab_runs::data`).

use super::to_batch_last;
use dfdx::prelude::*;
use vaelab_datasets::{tag, ImageBatch, StreamRng};

/// Standard-normal noise of `rows × batch` from the stream (seed, purpose, step).
pub fn normal_noise<D: Device<f32>>(
    dev: &D,
    seed: u64,
    purpose: &str,
    step: u64,
    rows: usize,
    batch: usize,
) -> Tensor<(usize, usize), f32, D> {
    let mut rng = StreamRng::new(seed, &[tag(purpose), step]);
    let v: Vec<f32> = (0..rows * batch).map(|_| rng.normal() as f32).collect();
    dev.tensor_from_vec(v, (rows, batch))
}

/// A batch as the batch-last matrix models consume.
pub fn to_tensor<D: Device<f32>>(dev: &D, b: &ImageBatch) -> Tensor<(usize, usize), f32, D> {
    dev.tensor_from_vec(to_batch_last(&b.pixels, b.n), (b.image_len(), b.n))
}
