//! The steady-state path from a validated request entering the queue to its
//! output tensors coming back allocates nothing on the Rust heap.
//!
//! A counting global allocator counts every allocation while the window is
//! open. Outside the window the test builds what a validated request brings
//! with it (its input tensors, its reply channel, a result set from the
//! model's pool); inside it, requests are submitted, batched, run through ONNX
//! Runtime and answered. ONNX Runtime's own C++ allocations (its arena) are
//! not visible to a Rust allocator and are not counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use inferd::engine::{Instance, ModelSource, OptimizationLevel, SessionSettings};
use inferd::scheduler::{Answer, BatchPolicy, Job, JobError, Scheduler};
use inferd::tensor::{Tensor, TensorData};
use tokio::sync::oneshot;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a plain atomic that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MAX_BATCH: usize = 16;

fn scheduler() -> Scheduler {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models/dyn_batch/1/model.onnx");
    let settings = SessionSettings {
        intra_op_threads: 1,
        optimization: OptimizationLevel::All,
        pool_thread_name: None,
    };
    let mut instance = Instance::load(&ModelSource::File(model), &settings).unwrap();
    assert!(
        instance.prepare_fixed_path(MAX_BATCH).unwrap(),
        "dyn_batch has fixed non-batch dimensions"
    );
    let policy = BatchPolicy {
        max_batch_size: MAX_BATCH,
        max_queue_delay: Duration::ZERO,
        preferred_batch_sizes: Vec::new(),
        queue_size: 1024,
    };
    Scheduler::start("dyn_batch", vec![instance], policy, 0).unwrap()
}

type Reply = oneshot::Receiver<Result<Answer, JobError>>;

/// A validated request of `rows` rows whose values identify it.
fn job(scheduler: &Scheduler, id: usize, rows: usize) -> (Job, Reply) {
    let data: Vec<f32> =
        (0..rows * 4).map(|k| (id % 97) as f32 * 0.01 + k as f32 * 0.001).collect();
    let (reply, answer) = oneshot::channel();
    let job = Job {
        inputs: vec![Tensor { shape: vec![rows as i64, 4], data: TensorData::Fp32(data) }],
        outputs: vec![0],
        results: scheduler.results().take(1),
        rows,
        enqueued: Instant::now(),
        deadline: None,
        reply,
    };
    (job, answer)
}

/// Submits `wave` requests, waits for every answer, checks and recycles them.
/// Returns the allocations counted while requests were in the scheduler.
fn drive(scheduler: &Scheduler, first_id: usize, wave: usize, count: bool) -> u64 {
    let mut jobs = Vec::with_capacity(wave);
    let mut replies = Vec::with_capacity(wave);
    let mut inputs = Vec::with_capacity(wave);
    for i in 0..wave {
        let rows = 1 + (first_id + i) % 3;
        let (job, reply) = job(scheduler, first_id + i, rows);
        let TensorData::Fp32(data) = &job.inputs[0].data else { unreachable!() };
        inputs.push(data.clone());
        jobs.push(job);
        replies.push(reply);
    }
    let mut answers = Vec::with_capacity(wave);

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(count, Ordering::SeqCst);
    for job in jobs.drain(..) {
        assert!(scheduler.submit(job).is_ok());
    }
    for reply in replies.drain(..) {
        answers.push(reply.blocking_recv().unwrap().unwrap());
    }
    COUNTING.store(false, Ordering::SeqCst);
    let counted = ALLOCATIONS.load(Ordering::SeqCst) - before;

    for (answer, input) in answers.into_iter().zip(inputs) {
        let TensorData::Fp32(got) = &answer.outputs[0].data else { panic!("not FP32") };
        assert_eq!(answer.outputs[0].shape, vec![(input.len() / 4) as i64, 2]);
        let want = common::dyn_batch_expected(&input);
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-6), "rows were mixed up");
        scheduler.results().give_back(answer.outputs);
    }
    counted
}

// One test in this file: the counter is global to the process, and a second
// test running beside it would add its own allocations.
#[test]
fn steady_state_requests_allocate_nothing() {
    // The counter must see allocations at all, or a zero below proves nothing.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let probe: Vec<u64> = std::hint::black_box(Vec::with_capacity(10));
    COUNTING.store(false, Ordering::SeqCst);
    drop(probe);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > before, "the counting allocator counts nothing");

    let scheduler = scheduler();
    // Warm-up, with the same waves as measured: every batch size is met, and
    // every pooled result set has held a request of every size, so its
    // buffers have grown to their steady size.
    for round in 0..50 {
        drive(&scheduler, round * 100, 100, false);
    }
    let mut allocations = 0;
    let mut requests = 0;
    for round in 0..40 {
        allocations += drive(&scheduler, 100_000 + round * 100, 100, true);
        requests += 100;
    }
    let stats = scheduler.stats();
    let executions = inferd::scheduler::SchedulerStats::get(&stats.executions);
    let computed = inferd::scheduler::SchedulerStats::get(&stats.requests);
    assert!(
        executions < computed,
        "requests were never batched: {executions} calls for {computed}"
    );
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations over {requests} requests in steady state"
    );
}
