//! A one-shot reply channel that works both blocking and as a `Future`, with no runtime.
//!
//! The worker holds the [`Sender`]; the caller holds the [`Receiver`] and either blocks on
//! [`Receiver::recv`] or awaits it. Dropping the receiver marks the sender closed, which is
//! how the worker learns that a caller has gone and skips its request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a blocking receiver polls before it sleeps: an answer that comes within it
/// (a fast model, a cache hit) is taken without the cost of waking a sleeping thread.
const RECV_SPIN: Duration = Duration::from_micros(20);

/// Receivers polling right now. Only a few may, so that many waiting callers never take
/// the cores the workers need.
static SPINNERS: AtomicUsize = AtomicUsize::new(0);

/// At most one spinning receiver per core beyond the first.
fn max_spinners() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    })
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Set once the sender has finished (sent or dropped), readable without the lock.
    done: AtomicBool,
    /// Counts receivers dropped before their answer (cancellations), for whoever holds the
    /// senders (the queue) to know when a cancelled request may be waiting.
    on_cancel: Option<Arc<AtomicUsize>>,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is plain data that no code path leaves half-updated, so a poisoned lock
        // (a panic elsewhere while it was held) is safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a connected sender and receiver.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    channel_counting_cancels(None)
}

/// [`channel`], adding 1 to `cancels` when the receiver is dropped before the sender has
/// finished.
pub(crate) fn channel_counting_cancels<T>(
    cancels: Option<Arc<AtomicUsize>>,
) -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        ready: Condvar::new(),
        done: AtomicBool::new(false),
        on_cancel: cancels,
    });
    (
        Sender {
            slot: Some(slot.clone()),
        },
        Receiver { slot },
    )
}

/// The sending half; sends at most one value.
pub(crate) struct Sender<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Sender<T> {
    /// Delivers the value. If the receiver has gone the value is dropped.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            let waker = {
                let mut state = slot.lock();
                if !state.receiver_gone {
                    state.value = Some(value);
                }
                state.sender_gone = true;
                state.waker.take()
            };
            slot.done.store(true, Ordering::Release);
            slot.ready.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// True when the receiver has been dropped: nobody is waiting for the answer.
    pub(crate) fn is_closed(&self) -> bool {
        self.slot
            .as_ref()
            .is_none_or(|slot| slot.lock().receiver_gone)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let waker = {
                let mut state = slot.lock();
                state.sender_gone = true;
                state.waker.take()
            };
            slot.done.store(true, Ordering::Release);
            slot.ready.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The receiving half.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Receiver<T> {
    /// Blocks until the value arrives; `None` if the sender was dropped without sending.
    pub(crate) fn recv(self) -> Option<T> {
        if SPINNERS.fetch_add(1, Ordering::Relaxed) < max_spinners() {
            let start = Instant::now();
            'spin: loop {
                for _ in 0..64 {
                    if self.slot.done.load(Ordering::Acquire) {
                        break 'spin;
                    }
                    std::hint::spin_loop();
                }
                if start.elapsed() >= RECV_SPIN {
                    break;
                }
            }
        }
        SPINNERS.fetch_sub(1, Ordering::Relaxed);
        let mut state = self.slot.lock();
        loop {
            if let Some(value) = state.value.take() {
                return Some(value);
            }
            if state.sender_gone {
                return None;
            }
            state = self
                .slot
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A bounded wait ran out before the value arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl<T> Receiver<T> {
    /// [`recv`](Self::recv), giving up at `until`: `Err(Elapsed)` when the value has not
    /// arrived by then (dropping the receiver, so the sender sees it closed).
    pub(crate) fn recv_until(self, until: Instant) -> Result<Option<T>, Elapsed> {
        let mut state = self.slot.lock();
        loop {
            if let Some(value) = state.value.take() {
                return Ok(Some(value));
            }
            if state.sender_gone {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= until {
                return Err(Elapsed);
            }
            state = self
                .slot
                .ready
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.slot.lock();
        if let Some(value) = state.value.take() {
            return Poll::Ready(Some(value));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        state.receiver_gone = true;
        state.value = None;
        let cancelled = !state.sender_gone;
        drop(state);
        // Counted after `receiver_gone` is set, so a scan that reset the count sees it.
        if cancelled && let Some(cancels) = &self.slot.on_cancel {
            cancels.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_sent_before_recv_is_received() {
        let (tx, rx) = channel();
        tx.send(7);
        assert_eq!(rx.recv(), Some(7));
    }

    #[test]
    fn dropped_sender_ends_the_wait_with_none() {
        let (tx, rx) = channel::<i32>();
        let waiter = std::thread::spawn(move || rx.recv());
        drop(tx);
        assert_eq!(waiter.join().unwrap(), None);
    }

    #[test]
    fn recv_until_gives_up_at_its_deadline_and_takes_a_value_sent_before() {
        let (tx, rx) = channel::<i32>();
        assert_eq!(rx.recv_until(Instant::now()), Err(Elapsed));
        assert!(tx.is_closed(), "the receiver is gone after giving up");
        let (tx, rx) = channel();
        tx.send(3);
        assert_eq!(rx.recv_until(Instant::now()), Ok(Some(3)));
    }

    #[test]
    fn dropped_receiver_closes_the_sender() {
        let (tx, rx) = channel::<i32>();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
    }

    #[test]
    fn value_sent_from_another_thread_wakes_the_waiter() {
        let (tx, rx) = channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            tx.send("done");
        });
        assert_eq!(rx.recv(), Some("done"));
        sender.join().unwrap();
    }
}
