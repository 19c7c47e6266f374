//! A fixed set of threads for the blocking work on rows (tokenizing, decoding, queueing).
//!
//! Tokio's blocking pool starts a thread whenever none is idle at the instant of a spawn,
//! and a thread that just finished a task is not idle yet: under 64 clients it grew to the
//! pool's limit although at most four tasks ran at once, and each thread kept its stack and
//! malloc caches for the 10 s it lingered (most of the growth of RSS under load in
//! docs/SOAK.md). A fixed pool keeps the thread count, and that memory, flat.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A job that panicked (a bug in a model's preparation); its panic was caught.
#[derive(Debug)]
pub(crate) struct Panicked;

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("preparing the rows failed unexpectedly (a panic in the model's prepare)")
    }
}

/// `threads` threads taking jobs in order.
pub(crate) struct Pool {
    /// `None` when no thread could start: jobs then go to tokio's blocking pool.
    jobs: Option<Mutex<Sender<Job>>>,
}

impl Pool {
    /// Starts `threads` threads (at least one) named `modelhost-prep`; they end with the
    /// process. A thread that cannot start leaves the pool smaller; with none, jobs run
    /// on tokio's blocking pool.
    pub(crate) fn new(threads: usize) -> Pool {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            let thread = std::thread::Builder::new()
                .name("modelhost-prep".into())
                .spawn(move || work(&rx));
            match thread {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::warn!("started {started} of {threads} preparing threads: {e}");
                    break;
                }
            }
        }
        Pool {
            jobs: (started > 0).then(|| Mutex::new(tx)),
        }
    }

    /// Runs `f` on one of the pool's threads; its result, or `Panicked`.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let Some(jobs) = &self.jobs else {
            return tokio::task::spawn_blocking(f).await.map_err(|_| Panicked);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(result.map_err(|_| Panicked));
        });
        let sent = jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job);
        if sent.is_err() {
            return Err(Panicked);
        }
        rx.await.unwrap_or(Err(Panicked))
    }
}

/// A pool thread: takes the next job, runs it, until the pool is gone.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pool_and_a_panic_is_an_error() {
        let pool = Pool::new(2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("modelhost-prep"));
        let e = pool.run(|| panic!("boom")).await.unwrap_err();
        assert!(e.to_string().contains("panic"), "{e}");
        // The thread that caught the panic still serves.
        let sums: Vec<_> = futures_sum(&pool).await;
        assert_eq!(sums, vec![0, 1, 3, 6]);
    }

    async fn futures_sum(pool: &Pool) -> Vec<u32> {
        let mut out = Vec::new();
        for n in 0..4u32 {
            out.push(pool.run(move || (0..=n).sum()).await.unwrap());
        }
        out
    }
}
