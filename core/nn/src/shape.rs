//! The shapes layers exchange and the parameters they declare (the inference itself is in
//! `infer`; plugin blocks speak these types too, so they sit below both).

use super::params::{Init, Role};
use std::fmt;

/// The shape of one example's activations (the batch dimension is implicit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatShape {
    Flat(usize),
    Image(usize, usize, usize),
}

impl FeatShape {
    pub fn len(&self) -> usize {
        match *self {
            FeatShape::Flat(n) => n,
            FeatShape::Image(c, h, w) => c * h * w,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Channels and per-channel positions: what norms reduce over.
    pub fn channels(&self) -> (usize, usize) {
        match *self {
            FeatShape::Flat(n) => (n, 1),
            FeatShape::Image(c, h, w) => (c, h * w),
        }
    }
}

impl fmt::Display for FeatShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatShape::Flat(n) => write!(f, "({n})"),
            FeatShape::Image(c, h, w) => write!(f, "({c}, {h}, {w})"),
        }
    }
}

/// A parameter a layer needs: name suffix, shape, initializer, role.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub suffix: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub role: Role,
}
