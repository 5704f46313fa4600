/// A batch of images in N×C×H×W order with values in `[0, 1]`.
///
/// This is the one layout that crosses crate boundaries (datasets → trainer, evaluator → metrics,
/// and later plugins). Models convert to their internal layout in one place.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub pixels: Vec<f32>,
    /// Ground-truth factors per image; empty inner vectors when the dataset has none.
    pub factors: Vec<Vec<f32>>,
    /// Bit depth of the source images before normalisation to `[0, 1]`.
    pub bit_depth: u8,
}

impl ImageBatch {
    /// Values per image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The C×H×W values of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.image_len();
        &self.pixels[i * len..(i + 1) * len]
    }

    /// Images `start..end` as a batch of their own.
    pub fn range(&self, start: usize, end: usize) -> ImageBatch {
        let len = self.image_len();
        ImageBatch {
            n: end - start,
            c: self.c,
            h: self.h,
            w: self.w,
            pixels: self.pixels[start * len..end * len].to_vec(),
            factors: self.factors.get(start..end).map(<[_]>::to_vec).unwrap_or_default(),
            bit_depth: self.bit_depth,
        }
    }

    /// A batch of the same geometry holding other pixel values (e.g. a model's reconstructions).
    pub fn with_pixels(&self, pixels: Vec<f32>) -> ImageBatch {
        assert_eq!(pixels.len(), self.pixels.len(), "pixel count must match the batch geometry");
        ImageBatch { pixels, ..self.clone() }
    }
}
