//! Raw access to CPU tensors for the fused ops (`fused`, `fused_act`): a tensor's values as a
//! plain vector, and several gradient buffers as mutable slices at once.

use super::kernels::with_reused;
use dfdx::prelude::*;
use rayon::prelude::*;

/// The values of a CPU tensor. dfdx keeps tensor storage private, so this is a copy; `copy_into`
/// is a plain memcpy of the storage (dfdx's `as_vec` walks a strided iterator element by element,
/// several times slower). That is only right for dense row-major tensors, which every input of
/// these ops is (layer outputs, data, parameters); debug builds check it.
pub fn dense<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut v = zeros(t.shape().num_elements());
    t.copy_into(&mut v);
    debug_assert!(v == t.as_vec(), "fused CPU ops need dense row-major tensors");
    v
}

/// Inputs of at most this many values (16 MiB) go through [`with_values`]'s reused buffer; larger
/// ones get a copy of their own, so that a 256 px run's inference passes (pictures, evaluation)
/// leave no activation-sized buffer behind on every thread.
const REUSED_MAX: usize = 4 << 20;

thread_local! {
    static VALUES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on the values of `t`, for an op that reads them only while it runs (an inference pass,
/// which keeps nothing for a backward pass). They are copied into a per-thread buffer reused across
/// calls, which spares the fresh allocation and its zeroing that [`dense`] costs (measured: the
/// zeroing alone was 5 % of an encoder's inference time in evaluation).
pub fn with_values<S: Shape, T, R>(t: &Tensor<S, f32, Cpu, T>, f: impl FnOnce(&[f32]) -> R) -> R {
    let n = t.shape().num_elements();
    if n > REUSED_MAX {
        return f(&dense(t));
    }
    with_reused(&VALUES, n, |buf| {
        t.copy_into(buf);
        debug_assert!(buf[..] == t.as_vec()[..], "fused CPU ops need dense row-major tensors");
        f(buf)
    })
}

/// `n` zeros, written in parallel when there are many, so that the allocation's first touch (page
/// faults) and the fill are shared by the threads instead of run on the thread that runs the tape.
pub fn zeros(n: usize) -> Vec<f32> {
    planes(&[0.0], n)
}

/// Planes of `plane` values each, plane `i` filled with `values[i]` (a convolution's output starting
/// at its bias), written in parallel blocks as [`zeros`] is.
pub fn planes(values: &[f32], plane: usize) -> Vec<f32> {
    /// Values per parallel block.
    const BLOCK: usize = 1 << 15;
    let n = values.len() * plane;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    if n <= BLOCK {
        for value in values {
            v.resize(v.len() + plane, *value);
        }
        return v;
    }
    v.spare_capacity_mut().par_chunks_mut(BLOCK).enumerate().for_each(|(b, block)| {
        // A block is a few runs of one value each (the parts of the planes it covers), each written
        // with `fill`, which vectorises; a value-by-value loop with a plane counter does not.
        let (mut start, mut rest) = (b * BLOCK, block);
        while !rest.is_empty() {
            let run = (plane - start % plane).min(rest.len());
            let (head, tail) = rest.split_at_mut(run);
            head.fill(std::mem::MaybeUninit::new(values[start / plane]));
            (start, rest) = (start + run, tail);
        }
    });
    // SAFETY: the blocks cover all n values of the capacity, and each was written above.
    unsafe { v.set_len(n) };
    v
}

/// Gradient buffers of several tensors at once, as mutable slices. The slices point into each
/// buffer's heap storage, which stays where it is when a later allocation grows the map (that moves
/// only the vectors' headers), so a backward op may take more buffers later on, as it needs them.
macro_rules! grad_slices {
    ($grads:expr, [$($t:expr),*]) => {{
        $( $grads.try_alloc_for($t)?; )*
        ( $( {
            let v: &mut [f32] = &mut $grads.get_or_alloc_mut($t)?[..];
            // SAFETY: distinct tensors have distinct map entries, and an entry's storage is neither
            // freed nor moved while the op runs (later inserts move headers, not heap buffers).
            unsafe { &mut *(v as *mut [f32]) }
        }, )* )
    }};
}
pub(crate) use grad_slices;

/// Frees the gradient buffer of an op's output once the op's backward pass has used it. Only the op
/// that made a tensor reads its gradient, and dfdx runs it after every consumer has added to it, so
/// nothing reads the buffer again; dfdx itself keeps every gradient until the whole pass ends, which
/// kept the gradients of all activations alive at once (most of a 256 px step's peak memory). A
/// macro because dfdx's ghost tensors cannot be named outside it. Evaluates to `Ok(())`.
macro_rules! free_grad {
    ($grads:expr, $t:expr) => {{
        drop(std::mem::take::<Vec<f32>>(&mut *$grads.get_or_alloc_mut($t)?));
        Ok(())
    }};
}
pub(crate) use free_grad;

#[cfg(test)]
mod tests {
    use super::{planes, with_values};
    use dfdx::prelude::*;

    /// The reused buffer hands out exactly the tensor's values: after a larger tensor (whose values
    /// stay in the buffer beyond a smaller one's), inside a nested call, and past the reuse limit.
    #[test]
    fn with_values_gives_exactly_the_tensors_values() {
        let dev = Cpu::default();
        let t = |n: usize, at: f32| dev.tensor_from_vec((0..n).map(|i| at + i as f32).collect(), (n,));
        for (n, at) in [(10, 0.0), (1000, 5.0), (7, -3.0), (5 << 20, 1.0), (3, 9.0)] {
            let x = t(n, at);
            let (outer, inner) = with_values(&x, |v| (v.to_vec(), with_values(&t(4, 100.0), |w| w.to_vec())));
            assert_eq!(outer, x.as_vec(), "{n} values");
            assert_eq!(inner, vec![100.0, 101.0, 102.0, 103.0], "nested call inside {n}");
        }
    }

    /// Planes that straddle the parallel blocks (20,001 values each, blocks of 32,768), and small ones.
    #[test]
    fn planes_hold_their_values_across_blocks() {
        for (values, plane) in [(vec![1.0, -2.0, 3.5, 0.25], 20_001), (vec![7.0, 8.0], 3), (vec![], 5), (vec![1.0], 0)] {
            let v = planes(&values, plane);
            assert_eq!(v.len(), values.len() * plane);
            for (i, x) in v.iter().enumerate() {
                assert_eq!(*x, values[i / plane], "value {i} of planes of {plane}");
            }
        }
    }
}
