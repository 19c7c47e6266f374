//! Wakes futures at their deadlines without a runtime: one thread for the whole process,
//! started the first time a future needs it, holding one waker per pending deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::Instant;

type Key = (Instant, u64);

struct Timer {
    /// Wakers by when they are due; an entry leaves when it fires or its alarm is dropped.
    due: Mutex<BTreeMap<Key, Waker>>,
    /// Signalled when an earlier deadline is set.
    changed: Condvar,
    next_id: AtomicU64,
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, Waker>> {
        // Plain data that no update leaves half done: a poisoned lock is still consistent.
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut due = self.lock();
        loop {
            let now = Instant::now();
            let mut fired = Vec::new();
            while let Some(entry) = due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                fired.push(entry.remove());
            }
            if !fired.is_empty() {
                // Wakers run user code: never under the lock.
                drop(due);
                fired.into_iter().for_each(Waker::wake);
                due = self.lock();
                continue;
            }
            due = match due.first_key_value().map(|((at, _), _)| *at) {
                Some(at) => {
                    self.changed
                        .wait_timeout(due, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(due)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// The process's timer, or `None` when its thread could not be started.
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            due: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(0),
        }));
        let started = std::thread::Builder::new()
            .name("modelhost-deadlines".into())
            .spawn(move || timer.run());
        match started {
            Ok(_) => Some(timer),
            Err(error) => {
                tracing::warn!(%error, "cannot start the deadline timer; async followers of a cache flight wait without their deadline");
                None
            }
        }
    })
}

/// One future's deadline with the timer; dropping it takes the waker back out.
#[derive(Default)]
pub(crate) struct Alarm {
    key: Option<Key>,
}

impl Alarm {
    /// Wakes `waker` at `at` (replacing the waker set before, if any).
    pub(crate) fn set(&mut self, at: Instant, waker: &Waker) {
        let Some(timer) = timer() else { return };
        let key = match self.key {
            Some(key) if key.0 == at => key,
            _ => (at, timer.next_id.fetch_add(1, Ordering::Relaxed)),
        };
        // Cloning and dropping wakers runs executor code: never under the timer's lock.
        let waker = waker.clone();
        let mut due = timer.lock();
        let old = self
            .key
            .filter(|old| *old != key)
            .and_then(|old| due.remove(&old));
        let earliest = due.first_key_value().is_none_or(|(first, _)| key < *first);
        let replaced = due.insert(key, waker);
        self.key = Some(key);
        drop(due);
        drop((old, replaced));
        if earliest {
            timer.changed.notify_one();
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if let (Some(key), Some(timer)) = (self.key.take(), timer()) {
            // The lock is released at the end of this statement, the waker dropped after.
            let removed = timer.lock().remove(&key);
            drop(removed);
        }
    }
}
