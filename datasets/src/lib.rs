//! Datasets for vaelab.
//!
//! Everything a model sees passes through [`ImageBatch`]: N×C×H×W `f32` values in `[0, 1]`,
//! together with the bit depth the images had before normalisation (metrics report it).
//! Datasets are deterministic: an image is a pure function of (dataset options, split, index),
//! so a training run can be resumed without saving any data-loader state.

pub mod augment;
mod batch;
pub mod dicom;
mod error;
pub mod folder;
pub mod idx;
pub mod knee;
mod order;
mod procedural;
pub mod resample;
mod rng;
pub mod shapes;
pub mod single;

pub use augment::Augment;
pub use batch::ImageBatch;
pub use dicom::{DicomConfig, DicomDataset, Patches, Window};
pub use error::DataError;
pub use folder::{Channels, Fit, FolderConfig, FolderDataset, OnBadFile};
pub use idx::{IdxConfig, IdxDataset};
pub use knee::{KneeConfig, KneeFactors, KneePhantom};
pub use order::stratified_order;
pub use procedural::image_rng;
pub use rng::{tag, StreamRng};
pub use shapes::{Shapes, ShapesConfig};
pub use single::{list_inputs, read_input, InputFile, InputImage, Preprocess};

use serde::{Deserialize, Serialize};

/// Which part of a dataset to read. Splits never share images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    Train,
    /// Held out for choosing models and settings; empty unless `val_size` asks for it.
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Split, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(format!("unknown split `{other}`: expected train, val or test")),
        }
    }
}

/// How many images each split holds (procedural data) or may use at most (files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

impl SplitSizes {
    pub fn get(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }

    /// Every training and test image, none held out for validation.
    pub fn unlimited() -> SplitSizes {
        SplitSizes { train: usize::MAX, val: 0, test: usize::MAX }
    }
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

    /// The class label of every image of a split, where the dataset has classes (class folders, IDX
    /// labels), read without decoding images; `None` for each image otherwise. Evaluation takes its
    /// subset in [`stratified_order`] of these.
    fn labels(&self, split: Split) -> Vec<Option<u32>> {
        vec![None; self.len(split)]
    }

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
