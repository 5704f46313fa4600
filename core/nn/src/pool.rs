//! Where training and evaluation run: on one of rayon's pool threads.
//!
//! Why: a training step is a long chain of small parallel kernels (a 64 px GAN step runs hundreds).
//! Called from a thread outside the pool, each one is injected into the pool's queue, wakes a
//! sleeping worker and puts the caller to sleep until a worker wakes it again. Called from a pool
//! thread, a kernel's first half runs on the caller while the other worker, often still spinning
//! from the last kernel, takes the second. The 64 px GAN step runs about 6 % faster so (measured in
//! `docs/architecture.md`). Which thread runs a piece of work changes no number: the kernels split
//! their work by the thread count, not by who runs it.

/// Runs `work` on a thread of the current rayon pool (the global one unless a caller `install`ed
/// another) and returns its result; on a pool thread already, runs it in place. The calling thread
/// waits, so `work` may borrow from it.
pub fn on_pool_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    rayon::join(work, || ()).0
}

/// Joins a scoped thread that may itself hand work to the pool. Called on a pool thread, a plain
/// `join` would block a thread the other one may be waiting for (with a one-thread pool, the only
/// one: a deadlock); so until the thread is done, this one runs the pool's pending work, or naps
/// briefly when there is none. Elsewhere it is a plain `join`.
fn join_scoped<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> std::thread::Result<T> {
    while !handle.is_finished() {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            Some(rayon::Yield::Idle) => std::thread::sleep(std::time::Duration::from_micros(50)),
            None => break,
        }
    }
    handle.join()
}

/// A scoped thread that may hand work to the pool, joined with [`join_scoped`] however its owner
/// leaves the scope: by [`PoolAwareThread::join`], or by dropping it on an early return, a `?` or a
/// panic. Dropping a plain handle leaves the join to the scope's end, which blocks like a plain
/// `join` (the one-thread deadlock again: an interrupted run's last prefetch met it).
pub struct PoolAwareThread<'scope, T>(Option<std::thread::ScopedJoinHandle<'scope, T>>);

impl<'scope, T> PoolAwareThread<'scope, T> {
    pub fn spawn<'env>(scope: &'scope std::thread::Scope<'scope, 'env>, work: impl FnOnce() -> T + Send + 'scope) -> Self
    where
        T: Send + 'scope,
    {
        PoolAwareThread(Some(scope.spawn(work)))
    }

    /// The thread's result (its panic, if it panicked).
    pub fn join(mut self) -> std::thread::Result<T> {
        let handle = self.0.take().expect("a PoolAwareThread holds its handle until joined or dropped");
        join_scoped(handle)
    }
}

impl<T> Drop for PoolAwareThread<'_, T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // Its result or panic is not wanted any more; only that it is over.
            let _ = join_scoped(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::Duration;

    /// What `run` returns, run on its own thread with a one-thread pool, or `None` when it has not
    /// finished within 20 s (a deadlock: the thread is left behind).
    fn within_a_time_limit<T: Send + 'static>(run: impl FnOnce(&rayon::ThreadPool) -> T + Send + 'static) -> Option<T> {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            done.send(run(&pool)).unwrap();
        });
        finished.recv_timeout(Duration::from_secs(20)).ok()
    }

    /// A one-thread pool whose only thread waits for a thread that hands the pool work: with a
    /// plain `join` this never finishes.
    #[test]
    fn waiting_for_a_thread_that_uses_the_pool_keeps_the_pool_going() {
        let sum = within_a_time_limit(|pool| {
            pool.install(|| {
                std::thread::scope(|scope| {
                    let handle = scope.spawn(|| pool.install(|| (0..1000u64).into_par_iter().sum::<u64>()));
                    // Let the thread queue its work before this one waits.
                    std::thread::sleep(Duration::from_millis(50));
                    join_scoped(handle).unwrap()
                })
            })
        });
        assert_eq!(sum, Some(499_500));
    }

    /// The same, when the waiting thread leaves the scope without joining (an early return).
    #[test]
    fn leaving_a_scope_early_keeps_the_pool_going() {
        let left = within_a_time_limit(|pool| {
            pool.install(|| {
                std::thread::scope(|scope| {
                    let _thread = PoolAwareThread::spawn(scope, || {
                        std::thread::sleep(Duration::from_millis(50));
                        pool.install(|| (0..1000u64).into_par_iter().sum::<u64>())
                    });
                    "left early"
                })
            })
        });
        assert_eq!(left, Some("left early"));
    }

    #[test]
    fn work_runs_on_a_pool_thread_and_returns_its_value() {
        assert_eq!(rayon::current_thread_index(), None);
        assert!(on_pool_thread(|| rayon::current_thread_index().is_some()));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let caller = pool.install(|| (rayon::current_thread_index(), on_pool_thread(rayon::current_thread_index)));
        assert_eq!(caller.0, caller.1, "on a pool thread already, the work runs in place");
    }
}
