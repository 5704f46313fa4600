//! The image metrics a run can name: the built-in ones and those plugins register.

use super::metric::{Metric, MetricError, Mse, Psnr};
use super::ssim::{MsSsim, Ssim};

/// The image metrics vaelab knows, by name.
pub struct MetricRegistry {
    metrics: Vec<Box<dyn Metric>>,
}

impl MetricRegistry {
    pub fn builtin() -> Self {
        MetricRegistry { metrics: vec![Box::new(Mse), Box::new(Psnr), Box::new(Ssim), Box::new(MsSsim)] }
    }

    /// Adds a metric (e.g. from a plugin); a name already taken is an error.
    pub fn register(&mut self, m: Box<dyn Metric>) -> Result<(), MetricError> {
        if self.get(m.name()).is_some() {
            return Err(MetricError::Failed {
                metric: m.name().into(),
                message: "a metric with this name is already registered".into(),
            });
        }
        self.metrics.push(m);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&dyn Metric> {
        self.metrics.iter().find(|m| m.name() == name).map(|m| m.as_ref())
    }

    pub fn names(&self) -> Vec<&str> {
        self.metrics.iter().map(|m| m.name()).collect()
    }
}
