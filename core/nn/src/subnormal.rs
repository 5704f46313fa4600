//! Subnormal floats flushed to zero (FTZ) and read as zero (DAZ) on the threads that compute.
//!
//! Why: adversarial objectives drive some activations and gradients into the subnormal range
//! (|x| < 1.2e-38 in f32). On the x86 CPUs this project runs on, an FMA that meets a subnormal operand
//! or result takes a microcode assist, so gemm's kernels slow down by that much: measured on the
//! shapes IntroVAE (2 threads, the study's spec without warm-up), 35–60 img/s after 20 steps with
//! IEEE subnormals against 124–151 img/s with FTZ and DAZ, the logged losses equal in every digit.
//! Deep-learning runtimes commonly set the same bits (the values involved are below anything a
//! model can use); it is set once per thread, so a spec, a seed, a thread count and a CPU kind still
//! give the same numbers.

/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

/// Sets FTZ and DAZ on the calling thread (x86-64; elsewhere nothing).
pub fn flush_subnormals_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads and writes the calling thread's MXCSR only, keeping every bit but FTZ and DAZ
    // (rounding mode and exception masks unchanged); SSE is part of x86-64.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= FTZ_DAZ;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
}

/// Whether the calling thread flushes subnormals; for the test below.
#[cfg(all(test, target_arch = "x86_64"))]
fn subnormals_flushed() -> bool {
    let mut csr: u32 = 0;
    // SAFETY: only reads the calling thread's MXCSR.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
    csr & FTZ_DAZ == FTZ_DAZ
}

/// Sets FTZ and DAZ on the calling thread and on every thread of the current rayon pool (the global
/// one, or the pool a caller `install`ed), where gemm's and vaelab's parallel kernels run.
pub fn flush_subnormals() {
    flush_subnormals_on_this_thread();
    rayon::broadcast(|_| flush_subnormals_on_this_thread());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn subnormal_results_become_zero_on_every_pool_thread() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let tiny = std::hint::black_box(1.0e-38f32);
        let (before, after) = pool.install(|| {
            let before = rayon::broadcast(|_| std::hint::black_box(tiny) * std::hint::black_box(0.5f32));
            flush_subnormals();
            let after = rayon::broadcast(|_| (subnormals_flushed(), std::hint::black_box(tiny) * std::hint::black_box(0.5f32)));
            (before, after)
        });
        assert!(before.iter().all(|v| *v > 0.0 && !v.is_normal()), "IEEE subnormals before: {before:?}");
        assert!(after.iter().all(|(on, v)| *on && *v == 0.0), "flushed after: {after:?}");
    }
}
