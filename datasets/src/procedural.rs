//! What the procedural datasets (shapes, knee phantom) share: every image is drawn from its own
//! random stream, keyed by dataset, split and index, so images are independent of order and thread.

use crate::rng::{tag, StreamRng};
use crate::Split;

/// The random stream of image `index` of `split` in the dataset called `name`.
/// (Keyed by `"<name>/<split>"` and the index, as these datasets always were, so data never change.)
pub fn image_rng(seed: u64, name: &str, split: Split, index: usize) -> StreamRng {
    StreamRng::new(seed, &[tag(&format!("{name}/{}", split.name())), index as u64])
}
