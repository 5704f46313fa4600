//! Opening the compute device a spec names, with errors that say what to do.

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("this vaelab was built without CUDA: build with `--features cuda` (or run with `--device cpu`)")]
    NotBuilt,
    #[error("no CUDA driver (libcuda.so.1) found; this machine cannot run --device cuda")]
    NoDriver,
    #[error("no CUDA device {0}: the driver sees no GPU of that number")]
    NoDevice(usize),
    #[error("cannot open CUDA device {0}: {1}")]
    Other(usize, String),
}

/// Sorts a failure to open CUDA device `ordinal`, given the error's debug text. cudarc names the
/// driver's `CUresult` (cuda.h): the stub library vaelab links against (and puts on the library path
/// where no driver is installed) answers `CUDA_ERROR_STUB_LIBRARY`; a driver with no GPU answers
/// `CUDA_ERROR_NO_DEVICE`, and a number past the last GPU `CUDA_ERROR_INVALID_DEVICE`.
pub fn classify_cuda_error(ordinal: usize, debug: &str) -> DeviceError {
    if debug.contains("CUDA_ERROR_STUB_LIBRARY") {
        DeviceError::NoDriver
    } else if debug.contains("CUDA_ERROR_NO_DEVICE") || debug.contains("CUDA_ERROR_INVALID_DEVICE") {
        DeviceError::NoDevice(ordinal)
    } else {
        DeviceError::Other(ordinal, debug.to_string())
    }
}

/// CUDA device `ordinal`, its random streams seeded with `seed`.
#[cfg(feature = "cuda")]
pub fn open_cuda(ordinal: usize, seed: u64) -> Result<dfdx::tensor::Cuda, DeviceError> {
    // cudarc's CudaDevice::new unwraps cuInit and cuDeviceGet (a panic where there is no driver or
    // no such GPU), so ask the driver first.
    use cudarc::driver::result;
    result::init().map_err(|e| classify_cuda_error(ordinal, &format!("{:?}", e.0)))?;
    let count = result::device::get_count().map_err(|e| classify_cuda_error(ordinal, &format!("{:?}", e.0)))?;
    if ordinal >= count.max(0) as usize {
        return Err(DeviceError::NoDevice(ordinal));
    }
    dfdx::tensor::Cuda::try_build(ordinal, seed).map_err(|e| classify_cuda_error(ordinal, &format!("{e:?}")))
}

/// Evaluates `$body` with `$dev` bound to the device `$device` names (a `vaelab_spec::Device`), seeded with
/// `$seed`. The body is generic code instantiated once per backend; a device that cannot be opened
/// returns `Err(DeviceError.into())` from the enclosing function. Subnormals are flushed on the
/// calling thread and the current rayon pool first ([`crate::subnormal`]).
#[macro_export]
macro_rules! on_device {
    ($device:expr, $seed:expr, |$dev:ident| $body:expr) => {{
        $crate::subnormal::flush_subnormals();
        match $device {
            $crate::device::SpecDevice::Cpu => {
                let $dev = $crate::device::Cpu::seed_from_u64($seed);
                $body
            }
            $crate::device::SpecDevice::Cuda(ordinal) => $crate::on_cuda!(ordinal, $seed, |$dev| $body),
        }
    }};
}

// The CUDA arm of `on_device!`, chosen by this crate's `cuda` feature (a `#[cfg]` inside `on_device!`
// itself would read the features of the crate that calls it).
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! on_cuda {
    ($ordinal:expr, $seed:expr, |$dev:ident| $body:expr) => {{
        let $dev = $crate::device::open_cuda($ordinal, $seed)?;
        $body
    }};
}
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! on_cuda {
    ($ordinal:expr, $seed:expr, |$dev:ident| $body:expr) => {{
        let _ = ($ordinal, $seed);
        Err($crate::device::DeviceError::NotBuilt.into())
    }};
}

#[doc(hidden)]
pub use dfdx::tensor::Cpu;
#[doc(hidden)]
pub use vaelab_spec::Device as SpecDevice;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_results_are_sorted_into_messages() {
        let stub = classify_cuda_error(0, "Driver(DriverError(CUDA_ERROR_STUB_LIBRARY, \"stub\"))");
        assert_eq!(stub.to_string(), "no CUDA driver (libcuda.so.1) found; this machine cannot run --device cuda");
        assert!(matches!(classify_cuda_error(3, "DriverError(CUDA_ERROR_INVALID_DEVICE)"), DeviceError::NoDevice(3)));
        assert!(matches!(classify_cuda_error(0, "DriverError(CUDA_ERROR_OUT_OF_MEMORY)"), DeviceError::Other(0, _)));
    }
}
