//! Raw access to CPU tensors for the fused ops (`fused`, `fused_act`): a tensor's values as a
//! plain vector, and several gradient buffers as mutable slices at once.

use dfdx::prelude::*;

/// The values of a CPU tensor. dfdx keeps tensor storage private, so this is a copy; `copy_into`
/// is a plain memcpy of the storage (dfdx's `as_vec` walks a strided iterator element by element,
/// several times slower). That is only right for dense row-major tensors, which every input of
/// these ops is (layer outputs, data, parameters); debug builds check it.
pub fn dense<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut v = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut v);
    debug_assert!(v == t.as_vec(), "fused CPU ops need dense row-major tensors");
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
