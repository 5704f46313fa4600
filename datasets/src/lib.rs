//! Datasets for vaelab.
//!
//! Everything a model sees passes through [`ImageBatch`]: N×C×H×W `f32` values in `[0, 1]`,
//! together with the bit depth the images had before normalisation (metrics report it).
//! Datasets are deterministic: an image is a pure function of (dataset options, split, index),
//! so a training run can be resumed without saving any data-loader state.

mod batch;
pub mod dicom;
mod error;
pub mod folder;
pub mod idx;
pub mod knee;
mod procedural;
pub mod resample;
mod rng;
pub mod shapes;

pub use batch::ImageBatch;
pub use dicom::{DicomConfig, DicomDataset, Patches, Window};
pub use error::DataError;
pub use folder::{Channels, Fit, FolderConfig, FolderDataset, OnBadFile};
pub use idx::{IdxConfig, IdxDataset};
pub use knee::{KneeConfig, KneeFactors, KneePhantom};
pub use rng::{tag, StreamRng};
pub use shapes::{Shapes, ShapesConfig};

use serde::{Deserialize, Serialize};

/// Which part of a dataset to read. Splits never share images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    Train,
    Test,
}

/// One image with its ground truth.
#[derive(Clone, Debug)]
pub struct Sample {
    /// C×H×W values in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// Ground-truth factor values (empty when the dataset has none), in `Dataset::factor_names` order.
    pub factors: Vec<f32>,
}

/// A source of images. Implementations must be deterministic and cheap to index in parallel.
pub trait Dataset: Send + Sync {
    /// A short name for logs and reports.
    fn name(&self) -> &str;
    /// (channels, height, width) of every image.
    fn image_shape(&self) -> (usize, usize, usize);
    /// Number of images in a split.
    fn len(&self, split: Split) -> usize;
    /// Bit depth of the stored images (8 for procedural data rendered to 8-bit levels).
    fn bit_depth(&self) -> u8 {
        8
    }
    /// Names of the ground-truth factors, if the dataset has any.
    fn factor_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// One image.
    fn sample(&self, split: Split, index: usize) -> Sample;

    /// Files left out as unreadable (with the reason), for the run record.
    fn skipped(&self) -> Vec<(std::path::PathBuf, String)> {
        Vec::new()
    }

    /// Images at `indices`, decoded or generated in parallel with rayon.
    fn batch(&self, split: Split, indices: &[usize]) -> ImageBatch {
        use rayon::prelude::*;
        let (c, h, w) = self.image_shape();
        let samples: Vec<Sample> = indices.par_iter().map(|&i| self.sample(split, i)).collect();
        let mut pixels = Vec::with_capacity(indices.len() * c * h * w);
        let mut factors = Vec::new();
        for s in samples {
            pixels.extend_from_slice(&s.pixels);
            factors.push(s.factors);
        }
        ImageBatch { n: indices.len(), c, h, w, pixels, factors, bit_depth: self.bit_depth() }
    }
}
