//! The predictor and its batcher against mock models: bounds, exactly-once answers, load
//! shedding, panics, shutdown and the async API.

mod common;

use common::block_on;
use proptest::prelude::*;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use modelhost::{
    BatchCost, BatchOutputs, DataType, Model, Predictor, RequestOptions, Signature, TensorSpec,
    batch::Grouping, error::CapacityError, error::ConfigError, error::InputError,
    error::PredictError, error::RuntimeError,
};

/// Echoes its input back (so crossed answers show), records every batch's size, and can be
/// told to panic on an input, fail one item, or hold a batch until released.
#[derive(Default)]
struct Echo {
    batches: Mutex<Vec<usize>>,
    computed: AtomicUsize,
    /// While set, `run_batch` waits for a message on this channel before it computes.
    gate: Mutex<Option<mpsc::Receiver<()>>>,
    /// Count a batch as its longest input times its size, like an engine that pads.
    padded: bool,
}

const PANIC_ON: u64 = 666;
const FAIL_ON: u64 = 13;

impl Model for Echo {
    type Input = u64;
    type Prepared = u64;
    type Output = u64;

    fn signature(&self) -> Signature {
        Signature::new("echo")
            .input(TensorSpec::new("x", DataType::I64, [1]))
            .output(TensorSpec::new("y", DataType::I64, [1]))
    }

    fn prepare(&self, x: u64) -> Result<u64, InputError> {
        if x > 1_000_000 {
            return Err(InputError::Invalid {
                field: "x".into(),
                reason: format!("{x} is above the maximum of 1000000"),
            });
        }
        Ok(x)
    }

    fn cost(&self, x: &u64) -> usize {
        // Inputs 100..200 cost their value minus 100 tokens; the rest cost 1.
        if (100..200).contains(x) {
            (*x - 100) as usize
        } else {
            1
        }
    }

    fn batch_cost(&self) -> BatchCost {
        if self.padded {
            BatchCost::Padded
        } else {
            BatchCost::Sum
        }
    }

    fn run_batch(&self, batch: &[u64]) -> Result<BatchOutputs<u64>, RuntimeError> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.recv().unwrap();
        }
        self.batches.lock().unwrap().push(batch.len());
        if batch.contains(&PANIC_ON) {
            panic!("input {PANIC_ON} is cursed");
        }
        self.computed.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(batch
            .iter()
            .map(|&x| {
                if x == FAIL_ON {
                    Err(RuntimeError::Backend {
                        message: format!("cannot compute {x}"),
                    })
                } else {
                    Ok(x)
                }
            })
            .collect())
    }
}

#[test]
fn every_request_gets_its_own_answer_under_concurrency() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(16)
        .max_delay(Duration::from_micros(200))
        .build()
        .unwrap();
    let threads = 64;
    let per_thread = 1000u64;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let (predictor, barrier) = (&predictor, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let x = 1000 + t * per_thread + i;
                    assert_eq!(predictor.predict(x).unwrap(), x);
                }
            });
        }
    });
    let total = threads as u64 * per_thread;
    let stats = predictor.stats();
    assert_eq!(stats.accepted, total);
    assert_eq!(stats.succeeded, total);
    assert_eq!(stats.failed, 0);
    assert_eq!(
        predictor.model().computed.load(Ordering::SeqCst) as u64,
        total
    );
    let sizes = predictor.model().batches.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| (1..=16).contains(&n)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>() as u64, total);
    assert!(
        sizes.iter().any(|&n| n > 1),
        "64 concurrent callers never shared a batch: {sizes:?}"
    );
}

#[test]
fn batches_respect_the_token_budget_and_an_oversized_request_runs_alone() {
    // Costs: 150 → 50 tokens (over the budget), 110..=119 → 10..=19 tokens. Each batch's
    // cost is within the budget of 40 unless it is a single request.
    let inputs: Vec<u64> = std::iter::once(150).chain(110..120).collect();
    for batch in batches_under_budget(&inputs, false, Grouping::Arrival) {
        let cost: usize = batch.iter().map(|x| Echo::default().cost(x)).sum();
        assert!(
            batch.len() == 1 || cost <= 40,
            "batch {batch:?} cost {cost}"
        );
    }
}

/// Runs `inputs` through an `Echo` with a token budget of 40 and returns the inputs of
/// each batch. The first input is queued alone and taken by the worker, which then holds
/// it until every other input is queued, so the batches that follow are formed from the
/// whole rest at once, however slow the machine.
fn batches_under_budget(inputs: &[u64], padded: bool, grouping: Grouping) -> Vec<Vec<u64>> {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        padded,
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(64)
        .max_batch_tokens(40)
        .max_delay(Duration::from_millis(1))
        .grouping(grouping)
        .build()
        .unwrap();
    let first = predictor.predict_async(inputs[0]);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let mut pending = vec![first];
    pending.extend(inputs[1..].iter().map(|&x| predictor.predict_async(x)));
    for _ in 0..inputs.len() {
        open.send(()).unwrap();
    }
    for (x, future) in inputs.iter().zip(pending) {
        assert_eq!(block_on(future).unwrap(), *x);
    }
    let sizes = predictor.model().batches.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), inputs.len());
    let mut next = inputs.iter().copied();
    sizes
        .into_iter()
        .map(|n| next.by_ref().take(n).collect())
        .collect()
}

#[test]
fn a_padding_model_counts_its_batches_as_longest_times_count() {
    // One 20-token input followed by many 2-token ones: 20 + 2 + 2 + ... fits a budget of
    // 40 for a long way, but padded to 20 tokens each only two inputs fit. The first input
    // (1 token) is the one the worker holds while the rest are queued.
    let inputs: Vec<u64> = [1, 120]
        .into_iter()
        .chain(std::iter::repeat_n(102, 9))
        .collect();
    let cost = |x: &u64| Echo::default().cost(x);
    for grouping in [Grouping::Arrival, Grouping::Length] {
        let batches = batches_under_budget(&inputs, true, grouping);
        for batch in &batches {
            let longest = batch.iter().map(cost).max().unwrap();
            assert!(
                batch.len() == 1 || longest * batch.len() <= 40,
                "{grouping:?}: padded batch {batch:?} costs {} > 40",
                longest * batch.len()
            );
        }
    }
    // The same inputs summed: the 20-token input shares its batch with 2-token ones beyond
    // what padding allows, so the rule above is what made the difference.
    let summed = batches_under_budget(&inputs, false, Grouping::Arrival);
    assert!(
        summed.iter().any(|b| b.contains(&120) && b.len() > 2),
        "{summed:?}"
    );
}

#[test]
fn a_panic_fails_only_its_batch_and_the_worker_keeps_serving() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(1)
        .build()
        .unwrap();
    match predictor.predict(PANIC_ON) {
        Err(PredictError::Runtime(RuntimeError::Panicked {
            batch_size,
            message,
        })) => {
            assert_eq!(batch_size, 1);
            assert_eq!(message, "input 666 is cursed");
        }
        other => panic!("expected a Panicked error, got {other:?}"),
    }
    assert_eq!(predictor.predict(7).unwrap(), 7);
    let stats = predictor.stats();
    assert_eq!((stats.succeeded, stats.failed), (1, 1));
}

#[test]
fn one_failing_item_fails_alone() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(8)
        .max_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let answers = predictor.predict_many([1, FAIL_ON, 3]);
    assert_eq!(answers[0], Ok(1));
    assert_eq!(
        answers[1],
        Err(PredictError::Runtime(RuntimeError::Backend {
            message: "cannot compute 13".into()
        }))
    );
    assert_eq!(answers[2], Ok(3));
}

#[test]
fn bad_input_is_refused_before_it_is_queued() {
    let predictor = Predictor::builder(Echo::default()).build().unwrap();
    let err = predictor.predict(5_000_000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`x` is invalid: 5000000 is above the maximum of 1000000"
    );
    assert_eq!(predictor.model().computed.load(Ordering::SeqCst), 0);
    let stats = predictor.stats();
    assert_eq!((stats.input_errors, stats.accepted), (1, 0));
}

#[test]
fn a_full_queue_sheds_load_with_queue_full() {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .queue_capacity(2)
        .build()
        .unwrap();
    // The first request is taken by the worker, which then waits at the gate.
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let queued = [predictor.predict_async(2), predictor.predict_async(3)];
    assert_eq!(
        predictor.predict(4),
        Err(PredictError::Capacity(CapacityError::QueueFull {
            capacity: 2
        }))
    );
    for _ in 0..3 {
        open.send(()).unwrap();
    }
    assert_eq!(block_on(first), Ok(1));
    let [a, b] = queued;
    assert_eq!((block_on(a), block_on(b)), (Ok(2), Ok(3)));
    assert_eq!(predictor.stats().shed, 1);
}

#[test]
fn expired_requests_are_answered_without_being_computed() {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .deadline(Duration::from_millis(20))
        .build()
        .unwrap();
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let late = predictor.predict_async(2);
    std::thread::sleep(Duration::from_millis(40));
    open.send(()).unwrap();
    assert_eq!(block_on(first), Ok(1));
    match block_on(late) {
        Err(PredictError::Capacity(CapacityError::DeadlineExceeded { waited, deadline })) => {
            assert_eq!(deadline, Duration::from_millis(20));
            assert!(waited > deadline);
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(predictor.model().computed.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_future_cancels_the_request() {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    drop(predictor.predict_async(2));
    let third = predictor.predict_async(3);
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert_eq!(block_on(first), Ok(1));
    assert_eq!(block_on(third), Ok(3));
    // Input 2 was never computed.
    assert_eq!(*predictor.model().batches.lock().unwrap(), vec![1, 1]);
}

#[test]
fn shutdown_answers_every_accepted_request() {
    let (open, gate) = mpsc::sync_channel(0);
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(4)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    let inputs: Vec<u64> = (1000..1020).collect();
    let pending: Vec<_> = inputs.iter().map(|&x| predictor.predict_async(x)).collect();
    let opener = std::thread::spawn(move || while open.send(()).is_ok() {});
    predictor.shutdown();
    for (x, future) in inputs.into_iter().zip(pending) {
        assert_eq!(block_on(future), Ok(x));
    }
    assert_eq!(
        predictor.predict(1),
        Err(PredictError::Capacity(CapacityError::ShuttingDown))
    );
    drop(predictor);
    opener.join().unwrap();
}

#[test]
fn predict_many_keeps_input_order_and_fails_bad_items_alone() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(8)
        .queue_capacity(4)
        .build()
        .unwrap();
    let inputs: Vec<u64> = (1000..1100).chain([2_000_000]).collect();
    let answers = predictor.predict_many(inputs.clone());
    assert_eq!(answers.len(), 101);
    for (x, answer) in inputs.iter().zip(&answers).take(100) {
        assert_eq!(answer, &Ok(*x));
    }
    assert!(matches!(
        answers[100],
        Err(PredictError::Input(InputError::Invalid { .. }))
    ));
}

#[test]
fn invalid_settings_are_refused_with_what_is_allowed() {
    let err = Predictor::builder(Echo::default())
        .max_batch_size(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::InvalidSetting {
            name: "max_batch_size",
            value: "0".into(),
            allowed: "at least 1"
        }
    );
    assert_eq!(
        err.to_string(),
        "`max_batch_size` = 0 is not allowed: at least 1"
    );
}

#[test]
fn predictor_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Predictor<Echo>>();
}

#[test]
fn a_lone_request_waits_max_delay_for_company_then_runs() {
    let max_delay = Duration::from_millis(40);
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(100)
        .max_delay(max_delay)
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    assert_eq!(predictor.predict(5), Ok(5));
    let waited = start.elapsed();
    assert!(
        waited >= max_delay,
        "answered after {waited:?}, before max_delay"
    );
    assert!(
        waited < Duration::from_secs(10),
        "a lone request waited {waited:?}"
    );
}

#[test]
fn requests_arriving_within_max_delay_share_one_batch() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(100)
        .max_delay(Duration::from_millis(500))
        .build()
        .unwrap();
    let pending: Vec<_> = (1..=3).map(|x| predictor.predict_async(x)).collect();
    let answers: Vec<_> = pending.into_iter().map(block_on).collect();
    assert_eq!(answers, vec![Ok(1), Ok(2), Ok(3)]);
    assert_eq!(*predictor.model().batches.lock().unwrap(), vec![3]);
}

#[test]
fn a_cancelled_request_frees_its_queue_slot() {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .queue_capacity(1)
        .build()
        .unwrap();
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let second = predictor.predict_async(2);
    assert!(matches!(
        predictor.predict_async(3).now_or_never(),
        Some(Err(PredictError::Capacity(CapacityError::QueueFull {
            capacity: 1
        })))
    ));
    drop(second);
    let third = predictor.predict_async(3);
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert_eq!(block_on(first), Ok(1));
    assert_eq!(block_on(third), Ok(3));
    assert_eq!(*predictor.model().batches.lock().unwrap(), vec![1, 1]);
}

#[test]
fn a_per_call_deadline_overrides_the_default() {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let strict =
        predictor.predict_async_with(2, &RequestOptions::deadline(Duration::from_millis(10)));
    let patient = predictor.predict_async(3);
    std::thread::sleep(Duration::from_millis(30));
    for _ in 0..2 {
        open.send(()).unwrap();
    }
    assert_eq!(block_on(first), Ok(1));
    assert!(matches!(
        block_on(strict),
        Err(PredictError::Capacity(
            CapacityError::DeadlineExceeded { .. }
        ))
    ));
    assert_eq!(block_on(patient), Ok(3));
}

#[test]
fn each_replica_is_owned_by_a_worker_of_its_own() {
    let (open_a, gate_a) = mpsc::channel();
    let (open_b, gate_b) = mpsc::channel();
    let replica = |gate| Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(replica(gate_a))
        .replicas([replica(gate_b)])
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    // Each replica holds one request at its gate: two batches run at once.
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let second = predictor.predict_async(2);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    open_a.send(()).unwrap();
    open_b.send(()).unwrap();
    assert_eq!(block_on(first), Ok(1));
    assert_eq!(block_on(second), Ok(2));
    assert_eq!(predictor.stats().batches, 2);
}

#[test]
fn a_deadline_shorter_than_max_delay_does_not_expire_waiting_for_company() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(100)
        .max_delay(Duration::from_secs(10))
        .deadline(Duration::from_millis(400))
        .build()
        .unwrap();
    // Alone, it waits at most half its deadline for others, then runs.
    assert_eq!(predictor.predict(5), Ok(5));
}

#[test]
fn a_max_delay_too_long_to_represent_waits_for_a_full_batch() {
    let predictor = Predictor::builder(Echo::default())
        .max_batch_size(2)
        .max_delay(Duration::MAX)
        .build()
        .unwrap();
    let first = predictor.predict_async(1);
    let second = predictor.predict_async(2);
    assert_eq!((block_on(first), block_on(second)), (Ok(1), Ok(2)));
    assert_eq!(*predictor.model().batches.lock().unwrap(), vec![2]);
}

/// Panics when dropped: a prepared input whose destructor takes the worker down (the worker
/// drops a batch's inputs after answering it, outside the model's own code).
struct Grenade(u64);

impl Drop for Grenade {
    fn drop(&mut self) {
        if self.0 == 666 && !std::thread::panicking() {
            panic!("grenade");
        }
    }
}

struct Explosive;

impl Model for Explosive {
    type Input = u64;
    type Prepared = Grenade;
    type Output = u64;

    fn signature(&self) -> Signature {
        Signature::new("explosive")
    }

    fn prepare(&self, x: u64) -> Result<Grenade, InputError> {
        Ok(Grenade(x))
    }

    fn run_batch(&self, batch: &[Grenade]) -> Result<BatchOutputs<u64>, RuntimeError> {
        Ok(batch.iter().map(|g| Ok(g.0)).collect())
    }
}

#[test]
fn when_the_last_worker_dies_callers_get_an_error_not_a_hang() {
    let predictor = Predictor::builder(Explosive)
        .max_batch_size(1)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(predictor.predict(666), Ok(666));
    // The worker died after answering; what comes next is refused or failed, never left
    // waiting.
    for x in 0..3 {
        match predictor.predict(x) {
            Err(PredictError::Capacity(
                CapacityError::ShuttingDown | CapacityError::WorkerGone,
            )) => {}
            other => panic!("expected ShuttingDown or WorkerGone, got {other:?}"),
        }
    }
}

/// Sleeps 2 ms per batch.
struct Slow;

impl Model for Slow {
    type Input = u64;
    type Prepared = u64;
    type Output = u64;

    fn signature(&self) -> Signature {
        Signature::new("slow")
    }

    fn prepare(&self, x: u64) -> Result<u64, InputError> {
        Ok(x)
    }

    fn run_batch(&self, batch: &[u64]) -> Result<BatchOutputs<u64>, RuntimeError> {
        std::thread::sleep(Duration::from_millis(2));
        Ok(batch.iter().map(|&x| Ok(x)).collect())
    }
}

#[test]
fn predict_many_waiting_for_room_does_not_spend_its_deadline() {
    // 400 inputs through a queue of 4 at 2 ms per batch of 4 take ~200 ms in all, far past
    // the 100 ms deadline; each input's clock starts when it enters the queue, where it
    // waits a couple of batches.
    let predictor = Predictor::builder(Slow)
        .max_batch_size(4)
        .queue_capacity(4)
        .max_delay(Duration::ZERO)
        .deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let answers = predictor.predict_many(0..400u64);
    for (x, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer, Ok(x as u64));
    }
}

/// Polls a future once.
trait NowOrNever: Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        struct Noop;
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        match pin!(self).poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }
}

impl<F: Future> NowOrNever for F {}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random submissions, some cancelled at once: the queue never holds more than its
    /// capacity, and every request kept is answered with its own answer (or refused).
    #[test]
    fn random_submissions_each_get_their_own_answer(
        capacity in 1usize..8,
        ops in prop::collection::vec((0u64..50, any::<bool>()), 1..40),
    ) {
        let predictor = Predictor::builder(Echo::default())
            .max_batch_size(4)
            .max_delay(Duration::ZERO)
            .queue_capacity(capacity)
            .build()
            .unwrap();
        let mut kept = Vec::new();
        for (x, cancel) in ops {
            let answer = predictor.predict_async(x);
            prop_assert!(predictor.queue_len() <= capacity);
            if !cancel {
                kept.push((x, answer));
            }
        }
        for (x, answer) in kept {
            match block_on(answer) {
                Ok(y) => prop_assert_eq!(y, x),
                Err(PredictError::Capacity(CapacityError::QueueFull { capacity: c })) => {
                    prop_assert_eq!(c, capacity)
                }
                Err(e) => prop_assert!(x == FAIL_ON, "{} answered {:?}", x, e),
            }
        }
    }
}

#[test]
fn predict_many_async_queues_a_group_in_order_and_dropping_one_cancels_it() {
    let (open, gate) = mpsc::channel();
    let model = Echo {
        gate: Mutex::new(Some(gate)),
        ..Echo::default()
    };
    let predictor = Predictor::builder(model)
        .max_batch_size(8)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    // Hold the worker on a first batch so the group below waits in the queue together.
    let first = predictor.predict_async(1);
    while predictor.queue_len() > 0 {
        std::thread::yield_now();
    }
    let mut group = predictor.predict_many_async([10, 11, 2_000_000, 12, 14]);
    assert_eq!(
        predictor.queue_len(),
        4,
        "the bad input is refused, the rest queued"
    );
    drop(group.remove(3)); // cancels 12
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert_eq!(block_on(first), Ok(1));
    let answers: Vec<_> = group.into_iter().map(block_on).collect();
    assert_eq!(answers[0], Ok(10));
    assert_eq!(answers[1], Ok(11));
    assert!(
        matches!(answers[2], Err(PredictError::Input(_))),
        "{:?}",
        answers[2]
    );
    assert_eq!(answers[3], Ok(14));
    // One batch of the first, one of the group's three live rows.
    assert_eq!(*predictor.model().batches.lock().unwrap(), vec![1, 3]);
}
