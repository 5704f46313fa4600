//! The Fréchet distance between Gaussians fitted to two feature sets (Dowson & Landau 1982), the
//! distance behind FID (Heusel et al. 2017):
//!
//! d² = ‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁Σ₂)^{1/2}).
//!
//! Computed in f64. Σ₁Σ₂ is similar to the symmetric positive semi-definite Σ₁^{1/2} Σ₂ Σ₁^{1/2}, so
//! tr((Σ₁Σ₂)^{1/2}) is the sum of the square roots of that matrix's eigenvalues: two symmetric
//! eigendecompositions, no general matrix square root, no complex round-off to discard (negative
//! eigenvalues from round-off are clamped to 0). Covariances are unbiased (divisor n − 1), as
//! `numpy.cov` and pytorch-fid use.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and covariance of a feature set.
#[derive(Clone, Debug)]
pub struct Gaussian {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    pub count: usize,
}

impl Gaussian {
    /// Fits `rows` (each `dim` values). Needs at least two rows.
    pub fn fit<R: AsRef<[f64]>>(rows: &[R], dim: usize) -> Result<Gaussian, String> {
        let n = rows.len();
        if n < 2 {
            return Err(format!("a covariance needs at least 2 feature vectors, got {n}"));
        }
        if let Some(bad) = rows.iter().position(|r| r.as_ref().len() != dim) {
            return Err(format!("feature vector {bad} has {} values, expected {dim}", rows[bad].as_ref().len()));
        }
        let mut mean = DVector::zeros(dim);
        for r in rows {
            mean += DVector::from_column_slice(r.as_ref());
        }
        mean /= n as f64;
        let mut centred = DMatrix::zeros(dim, n);
        for (k, r) in rows.iter().enumerate() {
            centred.set_column(k, &(DVector::from_column_slice(r.as_ref()) - &mean));
        }
        let cov = (&centred * centred.transpose()) / (n - 1) as f64;
        Ok(Gaussian { mean, cov, count: n })
    }
}

/// The symmetric square root of a symmetric positive semi-definite matrix.
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(m.clone());
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// d² between two fitted Gaussians (same dimension).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let diff = &a.mean - &b.mean;
    let root_a = sqrt_psd(&a.cov);
    let mut inner = &root_a * &b.cov * &root_a;
    // Symmetrise away round-off before the symmetric eigensolver.
    inner = (&inner + inner.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(inner).eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    diff.dot(&diff) + a.cov.trace() + b.cov.trace() - 2.0 * tr_sqrt
}
