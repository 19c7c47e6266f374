//! The queue's refusals: a full queue is scanned for cancelled or expired requests only
//! when one can exist, so refusing is O(1) while nothing can give a slot back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Queue, ReplyTo, Request};
use crate::batch::BatchPolicy;
use crate::error::{CapacityError, PredictError};
use crate::metrics::StatsRecorder;
use crate::model::BatchCost;
use crate::oneshot;

type Answer = oneshot::Receiver<Result<u64, PredictError>>;

fn queue(capacity: usize) -> Queue<u64, u64> {
    let policy = BatchPolicy {
        queue_capacity: capacity,
        ..BatchPolicy::default()
    };
    let stats = Arc::new(StatsRecorder::new(policy.max_batch_size, false));
    Queue::new(policy, BatchCost::Sum, stats)
}

fn request(
    queue: &Queue<u64, u64>,
    x: u64,
    deadline: Option<Duration>,
) -> (Request<u64, u64>, Answer) {
    let (sender, receiver) = queue.reply_channel();
    let now = Instant::now();
    let request = Request {
        prepared: x,
        cost: 1,
        received_at: now,
        enqueued_at: now,
        deadline,
        reply: ReplyTo::Caller(sender),
    };
    (request, receiver)
}

fn scans(queue: &Queue<u64, u64>) -> u64 {
    queue.lock().scans
}

fn is_full(result: Result<(), CapacityError>) -> bool {
    matches!(result, Err(CapacityError::QueueFull { capacity: 2 }))
}

#[test]
fn refusing_a_full_queue_scans_it_only_after_a_cancellation() {
    let q = queue(2);
    let (a, _keep_a) = request(&q, 1, None);
    let (b, cancel_b) = request(&q, 2, None);
    q.push(a).unwrap();
    q.push(b).unwrap();
    for x in 0..100 {
        let (r, _answer) = request(&q, x, None);
        assert!(is_full(q.push(r)));
    }
    assert_eq!(
        scans(&q),
        0,
        "nothing could be freed, so nothing was scanned"
    );
    drop(cancel_b);
    let (c, _keep_c) = request(&q, 3, None);
    q.push(c).expect("the cancelled request gave its slot back");
    assert_eq!((scans(&q), q.len()), (1, 2));
    for x in 0..100 {
        let (r, _answer) = request(&q, x, None);
        assert!(is_full(q.push(r)));
    }
    assert_eq!(scans(&q), 1);
}

#[test]
fn a_full_queue_of_cancelled_requests_still_makes_room() {
    let q = queue(2);
    let (a, cancel_a) = request(&q, 1, None);
    let (b, cancel_b) = request(&q, 2, None);
    q.push(a).unwrap();
    q.push(b).unwrap();
    drop((cancel_a, cancel_b));
    for x in 0..2 {
        let (r, _keep) = request(&q, x, None);
        q.push(r).expect("cancelled requests give their slots back");
    }
    assert_eq!(q.len(), 2);
}

#[test]
fn requests_past_their_deadline_give_their_slots_back_and_are_answered() {
    let q = queue(2);
    let (a, expired_a) = request(&q, 1, Some(Duration::ZERO));
    let (b, _keep_b) = request(&q, 2, None);
    q.push(a).unwrap();
    q.push(b).unwrap();
    let pushed = Instant::now();
    while Instant::now() <= pushed {
        std::thread::yield_now();
    }
    let (c, _keep_c) = request(&q, 3, None);
    q.push(c).expect("the expired request gave its slot back");
    assert!(matches!(
        expired_a.recv(),
        Some(Err(PredictError::Capacity(
            CapacityError::DeadlineExceeded { .. }
        )))
    ));
    let (d, _answer) = request(&q, 4, None);
    assert!(is_full(q.push(d)));
    assert_eq!(scans(&q), 1, "no deadline left to pass, no scan");
}
