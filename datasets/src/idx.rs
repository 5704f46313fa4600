//! The IDX format of MNIST and Fashion-MNIST (LeCun et al., "The MNIST database"): a 4-byte magic
//! (0, 0, element type, number of dimensions), the dimensions as big-endian u32, then the data.
//! Files may be gzip-compressed (`.gz`), as distributed.

use crate::error::DataError;
use crate::{Dataset, Sample, Split, SplitSizes};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type 0x08), gzip-compressed when the name ends in `.gz`.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_end(&mut bytes).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            format: "gzip",
            message: e.to_string(),
        })?;
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes).map_err(DataError::io(path))?;
    }
    parse_idx(&bytes).map_err(|message| DataError::Format { path: path.to_path_buf(), format: "IDX", message })
}

pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!("bad magic number {:02x?}; expected 00 00 08 0N", &bytes[..bytes.len().min(4)]));
    }
    if bytes[2] != 0x08 {
        return Err(format!("element type 0x{:02x} is not supported (only unsigned bytes, 0x08)", bytes[2]));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err(format!("header of {ndims} dimensions is cut short"));
    }
    let dims: Vec<usize> =
        (0..ndims).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let expected: usize = dims.iter().product();
    let have = bytes.len() - header;
    if have != expected {
        return Err(format!("dimensions {dims:?} need {expected} data bytes, the file has {have} (truncated or corrupt)"));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Writes an unsigned-byte IDX file (uncompressed); used by tests and for exporting data.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> std::io::Result<()> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    std::fs::write(path, out)
}

/// Options of an IDX dataset, as written in a spec: `Idx(dir: "...", train: "train", test: "t10k")`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxConfig {
    /// Folder holding `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]`.
    pub dir: PathBuf,
    #[serde(default = "train_prefix")]
    pub train: String,
    #[serde(default = "test_prefix")]
    pub test: String,
}

fn train_prefix() -> String {
    "train".into()
}
fn test_prefix() -> String {
    "t10k".into()
}

/// Images and labels of one split.
struct Part {
    images: IdxArray,
    labels: Vec<u8>,
}

/// MNIST-style images with class labels, decoded into memory once.
pub struct IdxDataset {
    train: Part,
    test: Part,
    /// Use at most this many images of each split. The validation images are the last `val` of the
    /// training file (IDX sets ship no validation file), and never train.
    limits: SplitSizes,
}

fn find(dir: &Path, prefix: &str, kind: &str) -> Result<PathBuf, DataError> {
    let base = dir.join(format!("{prefix}-{kind}"));
    let gz = dir.join(format!("{prefix}-{kind}.gz"));
    if base.exists() {
        Ok(base)
    } else if gz.exists() {
        Ok(gz)
    } else {
        let what = if dir.is_dir() { "no such file (also looked for .gz)" } else { "the folder does not exist" };
        Err(DataError::Mismatch { path: base, message: what.into() })
    }
}

fn open_part(dir: &Path, prefix: &str) -> Result<Part, DataError> {
    let images_path = find(dir, prefix, "images-idx3-ubyte")?;
    let labels_path = find(dir, prefix, "labels-idx1-ubyte")?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    if images.dims.len() != 3 {
        return Err(DataError::Mismatch {
            path: images_path,
            message: format!("expected 3 dimensions (N, H, W), got {:?}", images.dims),
        });
    }
    if labels.dims != [images.dims[0]] {
        return Err(DataError::Mismatch {
            path: labels_path,
            message: format!("{} labels for {} images", labels.dims.first().copied().unwrap_or(0), images.dims[0]),
        });
    }
    Ok(Part { images, labels: labels.data })
}

impl IdxDataset {
    /// Opens both files. `limits` caps the images used per split (the first N, in file order); the
    /// validation split takes the last `limits.val` images of the training file (at most half of it).
    pub fn open(cfg: &IdxConfig, limits: SplitSizes) -> Result<IdxDataset, DataError> {
        let train = open_part(&cfg.dir, &cfg.train)?;
        let test = open_part(&cfg.dir, &cfg.test)?;
        if train.images.dims[1..] != test.images.dims[1..] {
            return Err(DataError::Mismatch {
                path: cfg.dir.clone(),
                message: format!(
                    "train images are {:?} but test images are {:?}",
                    &train.images.dims[1..],
                    &test.images.dims[1..]
                ),
            });
        }
        let val = limits.val.min(train.images.dims[0] / 2);
        Ok(IdxDataset { train, test, limits: SplitSizes { val, ..limits } })
    }

    /// The file part and the index in it of image `index` of `split`.
    fn locate(&self, split: Split, index: usize) -> (&Part, usize) {
        match split {
            Split::Train => (&self.train, index),
            Split::Val => (&self.train, self.train.images.dims[0] - self.limits.val + index),
            Split::Test => (&self.test, index),
        }
    }

    /// The class label of an image.
    pub fn label(&self, split: Split, index: usize) -> u8 {
        let (part, i) = self.locate(split, index);
        part.labels[i]
    }
}

impl Dataset for IdxDataset {
    fn name(&self) -> &str {
        "idx"
    }
    fn image_shape(&self) -> (usize, usize, usize) {
        (1, self.train.images.dims[1], self.train.images.dims[2])
    }
    fn len(&self, split: Split) -> usize {
        match split {
            Split::Train => (self.train.images.dims[0] - self.limits.val).min(self.limits.train),
            Split::Val => self.limits.val,
            Split::Test => self.test.images.dims[0].min(self.limits.test),
        }
    }
    fn factor_names(&self) -> Vec<String> {
        vec!["label".into()]
    }
    fn labels(&self, split: Split) -> Vec<Option<u32>> {
        (0..self.len(split)).map(|i| Some(self.label(split, i) as u32)).collect()
    }
    fn sample(&self, split: Split, index: usize) -> Sample {
        let (part, index) = self.locate(split, index);
        let len = part.images.dims[1] * part.images.dims[2];
        let pixels = part.images.data[index * len..(index + 1) * len].iter().map(|&v| v as f32 / 255.0).collect();
        Sample { pixels, factors: vec![part.labels[index] as f32] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_errors_say_what_is_wrong() {
        assert!(parse_idx(&[1, 2, 3, 4]).unwrap_err().contains("bad magic"));
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err().contains("0x0d is not supported"));
        let e = parse_idx(&[0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3]).unwrap_err();
        assert!(e.contains("need 4 data bytes, the file has 3"), "{e}");
        let ok = parse_idx(&[0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 2, 7, 9]).unwrap();
        assert_eq!((ok.dims, ok.data), (vec![1, 2], vec![7, 9]));
    }
}
