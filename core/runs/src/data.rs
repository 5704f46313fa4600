//! From the spec's data section to a dataset, and from dataset images to model tensors.

use vaelab_nn::FeatShape;
use vaelab_spec::{self as spec, Experiment};

use vaelab_datasets::{
    tag, Augment, DataError, Dataset, DicomConfig, DicomDataset, FolderConfig, FolderDataset, IdxConfig, IdxDataset, ImageBatch,
    KneeConfig, KneePhantom, Shapes, ShapesConfig, Split, SplitSizes, StreamRng,
};

/// Opens the spec's dataset. File formats read (and check) their files here, before any training.
pub fn build_dataset(e: &Experiment) -> Result<Box<dyn Dataset>, DataError> {
    Ok(match &e.data.dataset {
        spec::Dataset::Shapes => Box::new(Shapes::new(ShapesConfig { size: e.data.size, splits: split_sizes(e), seed: e.seed })),
        spec::Dataset::KneePhantom { patella } => {
            Box::new(KneePhantom::new(KneeConfig { size: e.data.size, splits: split_sizes(e), seed: e.seed, patella: *patella }))
        }
        spec::Dataset::Idx { dir, train, test } => {
            let cfg = IdxConfig { dir: dir.clone(), train: train.clone(), test: test.clone() };
            Box::new(IdxDataset::open(&cfg, split_sizes(e))?)
        }
        spec::Dataset::Folder { root, channels, fit, on_bad_file, cache_mib } => Box::new(FolderDataset::open(FolderConfig {
            root: root.clone(),
            size: e.data.size,
            channels: *channels,
            fit: *fit,
            on_bad_file: *on_bad_file,
            limits: split_sizes(e),
            seed: e.seed,
            cache_mib: *cache_mib,
        })?),
        spec::Dataset::Dicom { root, fit, window, patches, on_bad_file } => Box::new(DicomDataset::open(DicomConfig {
            root: root.clone(),
            size: e.data.size,
            fit: *fit,
            window: *window,
            patches: *patches,
            on_bad_file: *on_bad_file,
            limits: split_sizes(e),
            seed: e.seed,
        })?),
    })
}

fn split_sizes(e: &Experiment) -> SplitSizes {
    SplitSizes { train: e.data.train_size, val: e.data.val_size, test: e.data.test_size }
}

/// Why a dataset's images do not fit the spec's `data.size`, if they don't.
pub fn size_mismatch(e: &Experiment, ds: &dyn Dataset) -> Option<String> {
    let (_, h, w) = ds.image_shape();
    (h != e.data.size || w != e.data.size).then(|| {
        format!("the dataset's images are {h}×{w} but `size` is {}; set `size: {h}` (IDX images are not resized)", e.data.size)
    })
}

pub fn data_shape(ds: &dyn Dataset) -> FeatShape {
    let (c, h, w) = ds.image_shape();
    FeatShape::Image(c, h, w)
}

/// The training batch of `step`, augmented: a pure function of (seed, step), so resumed runs see
/// the same data.
pub fn train_batch(ds: &dyn Dataset, seed: u64, step: usize, batch: usize, augment: &Augment) -> ImageBatch {
    let mut rng = StreamRng::new(seed, &[tag("batch"), step as u64]);
    let n = ds.len(Split::Train);
    let indices: Vec<usize> = (0..batch).map(|_| rng.below(n)).collect();
    let mut images = ds.batch(Split::Train, &indices);
    augment.apply_batch(&mut images, seed, step as u64);
    images
}
