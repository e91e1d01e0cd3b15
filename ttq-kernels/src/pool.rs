//! Keeping rayon's other threads polling for work while a forward pass runs.
//!
//! A decode step on the CPU is a few hundred short parallel loops (a 4-bit GEMV of a small
//! model reads its weight in about 10 µs) separated by short serial stretches (norms,
//! attention, residuals). Between two loops rayon's idle threads yield and then sleep on a
//! futex; waking one takes longer than the next loop lasts, so the thread that started the
//! loop ended up doing all of it (perf, SmolLM2 135M TTQ-W4: the GEMVs ran on one thread, the
//! other idle two thirds of the time). [`with_polling_workers`] parks one polling task on
//! each other thread for the duration of a closure: the task runs whatever work appears
//! (`rayon::yield_now`) and spins in between, as llama.cpp's threads do.
//!
//! A polling task ends when the closure returns or after [`IDLE_LIMIT`] without work, so a
//! long serial stretch gives the cores back, and a task that the calling thread picks up
//! itself while it waits for stolen work (possible only when the pool is busier than the
//! pass) delays it by at most that long.

use rayon::Yield;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a polling task spins without finding work before it returns.
pub const IDLE_LIMIT: Duration = Duration::from_micros(500);

/// Runs `f` on the calling thread while the pool's other threads poll for its parallel work.
/// With a one-thread pool it just runs `f`.
pub fn with_polling_workers<R>(f: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    if threads < 2 {
        return f();
    }
    let stop = AtomicBool::new(false);
    rayon::in_place_scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| poll(&stop));
        }
        let r = f();
        stop.store(true, Ordering::Release);
        r
    })
}

/// Runs pool work as it appears until `stop` is set or nothing came for [`IDLE_LIMIT`].
fn poll(stop: &AtomicBool) {
    let mut last_work = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(Yield::Executed) {
            last_work = Instant::now();
        } else if last_work.elapsed() > IDLE_LIMIT {
            return;
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn returns_the_closures_value_and_runs_its_parallel_work() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let sum = pool.install(|| {
            with_polling_workers(|| (0..10_000u64).into_par_iter().map(|i| i * 2).sum::<u64>())
        });
        assert_eq!(sum, 10_000 * 9_999);
        // Outside any pool and with a single thread too.
        assert_eq!(with_polling_workers(|| 7), 7);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| with_polling_workers(|| 8)), 8);
    }

    #[test]
    fn nested_and_repeated_calls_finish() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let total: usize = pool.install(|| {
            (0..50)
                .map(|_| {
                    with_polling_workers(|| {
                        with_polling_workers(|| (0..1000usize).into_par_iter().sum::<usize>())
                    })
                })
                .sum()
        });
        assert_eq!(total, 50 * 999 * 1000 / 2);
    }
}
