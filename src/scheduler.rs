//! The per-model queue, the dynamic batcher, and the instance threads.
//!
//! Every served model version owns one bounded queue. Each of its instances is
//! a dedicated OS thread that owns its session and sleeps on the queue; async
//! handlers only ever try to push into it, so a full queue is an immediate
//! answer rather than a wait, and the engine never runs on the reactor.
//!
//! Batching: a free instance takes the oldest queued request at once and,
//! without waiting, every further queued request that fits (same dimensions
//! past the first, rows within `max_batch_size`); so an idle server adds no
//! delay, and a busy one gathers what accumulated while its instances were
//! busy. Only when `max_queue_delay` is set does an instance wait, bounded by
//! the oldest request's enqueue time plus that delay, for a fuller batch.
//! A request that does not fit is held by that instance and starts its next
//! batch, so no request is reordered behind later ones of the same kind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::engine::{Batch, ComputeTimes, EngineError, Instance, priority};
use crate::tensor::Tensor;

/// How an instance forms batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows in one engine call; 0 runs every request on its own.
    pub max_batch_size: usize,
    /// Longest the oldest request waits for a fuller batch; zero never waits.
    pub max_queue_delay: Duration,
    /// Row counts at which a batch runs without waiting further.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests the queue holds before new ones are refused.
    pub queue_size: usize,
}

/// One validated request on its way to an instance.
pub struct Job {
    /// One tensor per model input, in signature order.
    pub inputs: Vec<Tensor>,
    /// Indices of the outputs to return, in the order the client asked.
    pub outputs: Vec<usize>,
    /// Where those outputs are written, one tensor per index in `outputs`;
    /// taken from the scheduler's [`ResultPool`] so that their buffers are
    /// reused from request to request.
    pub results: Vec<Tensor>,
    /// Rows along the batch dimension (1 for models that do not batch).
    pub rows: usize,
    pub enqueued: Instant,
    /// Past this instant the job is answered `Expired` and never computed.
    pub deadline: Option<Instant>,
    pub reply: oneshot::Sender<Result<Answer, JobError>>,
}

/// What an instance hands back for one job.
#[derive(Debug)]
pub struct Answer {
    /// The outputs asked for, in the order asked.
    pub outputs: Vec<Tensor>,
    /// Their indices in the model's signature: the job's `outputs`.
    pub indices: Vec<usize>,
    /// The job's inputs, handed back so that the thread that allocated them
    /// frees them, not the instance's, whose time is the engine's.
    pub inputs: Vec<Tensor>,
    /// From entering the queue to the engine call that computed it.
    pub queue_time: Duration,
    /// The engine call, including building the batch and splitting outputs.
    pub compute_time: Duration,
    /// Rows in that engine call, all requests together.
    pub batch_rows: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    #[error("the request's deadline passed while it was queued")]
    Expired,
    #[error(transparent)]
    Engine(#[from] Arc<EngineError>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the model's queue is full")]
    QueueFull,
    #[error("the model is shutting down")]
    Closed,
}

/// Counters of one served model version, kept by its instances and by the
/// request path; plain atomics, so recording one costs no lock and no
/// allocation. Durations are summed in nanoseconds, as Triton's statistics
/// report them; each request of a batch is charged the batch's compute time.
#[derive(Debug)]
pub struct SchedulerStats {
    /// Engine calls made.
    pub executions: AtomicU64,
    /// Requests computed (successfully or not).
    pub requests: AtomicU64,
    /// Rows computed, all requests together.
    pub rows: AtomicU64,
    /// Requests answered `Expired` instead of being computed.
    pub expired: AtomicU64,
    /// Requests skipped because their client had gone.
    pub abandoned: AtomicU64,
    /// Requests refused because the queue was full.
    pub refused: AtomicU64,
    /// Requests answered with outputs, and their whole time from validation
    /// to answer.
    pub success: DurationSum,
    /// Requests answered with an error, and their time.
    pub fail: DurationSum,
    /// Failed requests by why: queue full or shutting down, deadline passed,
    /// not fit for the model, the engine failed.
    pub failed_refused: AtomicU64,
    pub failed_expired: AtomicU64,
    pub failed_invalid: AtomicU64,
    pub failed_engine: AtomicU64,
    /// Successful requests by time taken: entry `i` counts those of at most
    /// `LATENCY_BUCKETS[i]` seconds; the last entry counts the rest.
    pub latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Computed requests' time in the queue.
    pub queue: DurationSum,
    /// Computed requests' share of the engine calls, by phase.
    pub compute_input: DurationSum,
    pub compute_infer: DurationSum,
    pub compute_output: DurationSum,
    /// Milliseconds since the Unix epoch of the last successful request.
    pub last_inference_ms: AtomicU64,
    /// Engine calls by rows in the call: entry `n` holds calls of `n` rows.
    pub by_batch_size: Box<[BatchSizeStats]>,
}

/// The engine calls of one batch size, by phase.
#[derive(Debug, Default)]
pub struct BatchSizeStats {
    pub compute_input: DurationSum,
    pub compute_infer: DurationSum,
    pub compute_output: DurationSum,
}

/// Upper bounds, in seconds, of the request latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How a request ended, for the failure counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Refused,
    Expired,
    Invalid,
    EngineFailed,
}

/// A count of events and their summed duration.
#[derive(Debug, Default)]
pub struct DurationSum {
    pub count: AtomicU64,
    pub ns: AtomicU64,
}

impl DurationSum {
    pub fn record(&self, times: u64, each: Duration) {
        self.count.fetch_add(times, Ordering::Relaxed);
        self.ns.fetch_add(times * each.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Ordering::Relaxed), self.ns.load(Ordering::Relaxed))
    }
}

impl SchedulerStats {
    /// Counters for a model whose engine calls take at most `max_rows` rows.
    pub fn new(max_rows: usize) -> SchedulerStats {
        SchedulerStats {
            executions: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            success: DurationSum::default(),
            fail: DurationSum::default(),
            failed_refused: AtomicU64::new(0),
            failed_expired: AtomicU64::new(0),
            failed_invalid: AtomicU64::new(0),
            failed_engine: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            queue: DurationSum::default(),
            compute_input: DurationSum::default(),
            compute_infer: DurationSum::default(),
            compute_output: DurationSum::default(),
            last_inference_ms: AtomicU64::new(0),
            by_batch_size: (0..=max_rows.max(1)).map(|_| BatchSizeStats::default()).collect(),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a request's outcome, `took` from validation to answer.
    pub fn record_request(&self, outcome: Outcome, took: Duration) {
        let failed = match outcome {
            Outcome::Success => {
                self.success.record(1, took);
                let seconds = took.as_secs_f64();
                let bucket = LATENCY_BUCKETS.iter().position(|&b| seconds <= b);
                Self::add(&self.latency[bucket.unwrap_or(LATENCY_BUCKETS.len())], 1);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_inference_ms.store(now.as_millis() as u64, Ordering::Relaxed);
                return;
            }
            Outcome::Refused => &self.failed_refused,
            Outcome::Expired => &self.failed_expired,
            Outcome::Invalid => &self.failed_invalid,
            Outcome::EngineFailed => &self.failed_engine,
        };
        Self::add(failed, 1);
        self.fail.record(1, took);
    }

    /// Records one engine call of `requests` requests and `rows` rows.
    fn record_execution(&self, requests: u64, rows: usize, times: &ComputeTimes) {
        Self::add(&self.executions, 1);
        Self::add(&self.requests, requests);
        Self::add(&self.rows, rows as u64);
        if let Some(size) = self.by_batch_size.get(rows) {
            size.compute_input.record(1, times.input);
            size.compute_infer.record(1, times.infer);
            size.compute_output.record(1, times.output);
        }
        self.compute_input.record(requests, times.input);
        self.compute_infer.record(requests, times.infer);
        self.compute_output.record(requests, times.output);
    }
}

/// Result tensors handed back after use, so that the next request writes its
/// outputs into buffers that already have the room. Bounded: past its size,
/// returned sets are simply freed.
pub struct ResultPool {
    tx: Sender<Vec<Tensor>>,
    rx: Receiver<Vec<Tensor>>,
}

impl ResultPool {
    fn new(size: usize) -> ResultPool {
        let (tx, rx) = crossbeam_channel::bounded(size);
        ResultPool { tx, rx }
    }

    /// A set of `n` result tensors; reused ones keep their buffers.
    pub fn take(&self, n: usize) -> Vec<Tensor> {
        let mut results = self.rx.try_recv().unwrap_or_default();
        results.truncate(n);
        results.resize_with(n, Tensor::empty);
        results
    }

    pub fn give_back(&self, results: Vec<Tensor>) {
        let _ = self.tx.try_send(results);
    }
}

/// The bounded queue between a model's request handlers and its instances.
///
/// A mutex over a ring buffer, allocated once at its full size, and a
/// condition variable the idle instances sleep on. An instance that finds
/// the queue empty goes to sleep at once: a channel that spins and yields
/// before it blocks hands the core to other threads and back several times
/// for every request that finds the engine idle, which under moderate load
/// cost more than the request itself. A pusher wakes one sleeper, and only
/// one that no earlier push has woken: a woken thread takes tens of
/// microseconds to run again, and every request pushed meanwhile would
/// otherwise make a futex call of its own.
struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Instances asleep in `pop` or `pop_until` that no push has woken yet.
    sleeping: usize,
    /// Instances a push has woken that have not yet run again. A waking
    /// instance takes one of these if there is one, else it was woken by a
    /// close, a timeout or spuriously and leaves `sleeping` itself.
    woken: usize,
    /// Wake-ups sent and sleeps begun, for the tests to compare.
    #[cfg(test)]
    wakes: usize,
    #[cfg(test)]
    sleeps: usize,
    /// Set when the model is dropped: the instances drain what is queued,
    /// then stop.
    closed: bool,
}

impl JobQueue {
    fn new(capacity: usize) -> JobQueue {
        let state = QueueState {
            jobs: VecDeque::with_capacity(capacity),
            sleeping: 0,
            woken: 0,
            #[cfg(test)]
            wakes: 0,
            #[cfg(test)]
            sleeps: 0,
            closed: false,
        };
        JobQueue { state: Mutex::new(state), ready: Condvar::new(), capacity }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock, and the state stays whole
        // even if something did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_push(&self, job: Job) -> Result<(), SubmitError> {
        let mut state = self.lock();
        if state.closed {
            return Err(SubmitError::Closed);
        }
        if state.jobs.len() >= self.capacity {
            return Err(SubmitError::QueueFull);
        }
        state.jobs.push_back(job);
        let wake = state.sleeping > 0;
        if wake {
            state.sleeping -= 1;
            state.woken += 1;
            #[cfg(test)]
            {
                state.wakes += 1;
            }
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The oldest job, if one is queued now.
    fn try_pop(&self) -> Option<Job> {
        self.lock().jobs.pop_front()
    }

    /// The oldest job, sleeping until there is one; `None` once the queue
    /// is closed and empty.
    fn pop(&self) -> Option<Job> {
        self.pop_by(None)
    }

    /// The oldest job, sleeping until there is one or until `deadline`.
    fn pop_until(&self, deadline: Instant) -> Option<Job> {
        self.pop_by(Some(deadline))
    }

    fn pop_by(&self, deadline: Option<Instant>) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    Some(left)
                }
            };
            state = self.sleep(state, timeout);
        }
    }

    /// Sleeps until a push or a close wakes this instance, or `timeout`
    /// passes.
    fn sleep<'a>(
        &self,
        mut state: MutexGuard<'a, QueueState>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, QueueState> {
        state.sleeping += 1;
        #[cfg(test)]
        {
            state.sleeps += 1;
        }
        let mut state = match timeout {
            None => self.ready.wait(state).unwrap_or_else(PoisonError::into_inner),
            Some(timeout) => {
                self.ready.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0
            }
        };
        if state.woken > 0 {
            state.woken -= 1;
        } else {
            state.sleeping -= 1;
        }
        state
    }

    fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

pub struct Scheduler {
    /// Closing it is what stops the threads.
    queue: Arc<JobQueue>,
    workers: Vec<JoinHandle<()>>,
    policy: Arc<BatchPolicy>,
    stats: Arc<SchedulerStats>,
    results: Arc<ResultPool>,
}

impl Scheduler {
    /// Starts one thread per instance, all draining one queue, at nice value
    /// `nice` (0: the server's priority; see [`priority`]).
    pub fn start(
        model: &str,
        instances: Vec<Instance>,
        policy: BatchPolicy,
        nice: i32,
    ) -> std::io::Result<Scheduler> {
        let queue = Arc::new(JobQueue::new(policy.queue_size));
        let policy = Arc::new(policy);
        let stats = Arc::new(SchedulerStats::new(policy.max_batch_size));
        let mut workers = Vec::with_capacity(instances.len());
        let (niced, prioritised) = std::sync::mpsc::channel();
        for (i, instance) in instances.into_iter().enumerate() {
            let (queue, policy, stats) =
                (Arc::clone(&queue), Arc::clone(&policy), Arc::clone(&stats));
            let niced = niced.clone();
            let handle = std::thread::Builder::new().name(format!("inferd-{model}-{i}")).spawn(
                move || {
                    if nice != 0 {
                        let _ = niced.send(priority::set_thread_nice(nice));
                    }
                    drop(niced);
                    Worker::new(instance, queue, policy, stats).run()
                },
            )?;
            workers.push(handle);
        }
        drop(niced);
        // One warning for the model, not one per instance.
        if let Some(Err(error)) = prioritised.iter().find(Result::is_err) {
            tracing::warn!(
                model,
                nice,
                %error,
                "cannot give the engine threads nice {nice} (a negative value needs \
                 CAP_SYS_NICE); they run at the server's priority"
            );
        }
        // Enough result sets for every request that can be in flight at once.
        let results =
            Arc::new(ResultPool::new(policy.queue_size + policy.max_batch_size.max(1) * 4));
        Ok(Scheduler { queue, workers, policy, stats, results })
    }

    /// Hands `job` to the queue without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let pushed = self.queue.try_push(job);
        if pushed == Err(SubmitError::QueueFull) {
            SchedulerStats::add(&self.stats.refused, 1);
        }
        pushed
    }

    /// Requests waiting for an instance.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    pub fn results(&self) -> &Arc<ResultPool> {
        &self.results
    }
}

impl Drop for Scheduler {
    /// Closes the queue, lets the instances finish what is queued, and joins
    /// them, so that a dropped model leaves no thread or session behind.
    fn drop(&mut self) {
        self.queue.close();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a model instance thread panicked");
            }
        }
    }
}

/// One instance thread: its session, its queue end, and its current batch.
struct Worker {
    instance: Instance,
    queue: Arc<JobQueue>,
    policy: Arc<BatchPolicy>,
    stats: Arc<SchedulerStats>,
    batch: Vec<Job>,
    /// A job taken from the queue that did not fit the last batch.
    held: Option<Job>,
}

impl Worker {
    fn new(
        instance: Instance,
        queue: Arc<JobQueue>,
        policy: Arc<BatchPolicy>,
        stats: Arc<SchedulerStats>,
    ) -> Worker {
        let batch = Vec::with_capacity(policy.max_batch_size.max(1));
        Worker { instance, queue, policy, stats, batch, held: None }
    }

    fn run(mut self) {
        loop {
            let first = match self.held.take() {
                Some(job) => job,
                None => match self.queue.pop() {
                    Some(job) => job,
                    None => return,
                },
            };
            let Some(first) = admit(first, &self.stats) else { continue };
            let mut rows = first.rows;
            self.batch.push(first);
            if self.policy.max_batch_size > 0 {
                self.gather(&mut rows);
            }
            self.execute(rows);
            self.batch.clear();
        }
    }

    /// Adds queued jobs to the batch until it is full, the queue is empty
    /// (and waiting is not called for), or a job does not fit.
    fn gather(&mut self, rows: &mut usize) {
        let policy = &*self.policy;
        let wait_until = self.batch[0].enqueued + policy.max_queue_delay;
        while *rows < policy.max_batch_size {
            let next = match self.queue.try_pop() {
                Some(job) => job,
                None => {
                    let satisfied = policy.preferred_batch_sizes.contains(rows);
                    if policy.max_queue_delay.is_zero() || satisfied {
                        return;
                    }
                    match self.queue.pop_until(wait_until) {
                        Some(job) => job,
                        None => return,
                    }
                }
            };
            let Some(job) = admit(next, &self.stats) else { continue };
            if *rows + job.rows <= policy.max_batch_size && same_item_shape(&self.batch[0], &job) {
                *rows += job.rows;
                self.batch.push(job);
            } else {
                self.held = Some(job);
                return;
            }
        }
    }

    /// Runs the batch and answers every job in it. When a batch of several
    /// requests fails, each is retried alone, so that one request the engine
    /// rejects does not fail the others.
    fn execute(&mut self, rows: usize) {
        let started = Instant::now();
        let result = self.instance.run_batch(&mut Jobs(&mut self.batch));
        let compute_time = started.elapsed();
        match result {
            Ok(times) => {
                self.stats.record_execution(self.batch.len() as u64, rows, &times);
                for job in self.batch.drain(..) {
                    let queue_time = started.saturating_duration_since(job.enqueued);
                    self.stats.queue.record(1, queue_time);
                    let answer = Answer {
                        outputs: job.results,
                        indices: job.outputs,
                        inputs: job.inputs,
                        queue_time,
                        compute_time,
                        batch_rows: rows,
                    };
                    // The client may have gone while the engine ran; nobody is left to tell.
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(error) if self.batch.len() == 1 => {
                let times = ComputeTimes { infer: compute_time, ..ComputeTimes::default() };
                self.stats.record_execution(1, rows, &times);
                let job = self.batch.pop().expect("one job");
                self.stats.queue.record(1, started.saturating_duration_since(job.enqueued));
                let _ = job.reply.send(Err(JobError::Engine(Arc::new(error))));
            }
            Err(_) => {
                let jobs: Vec<Job> = self.batch.drain(..).collect();
                for job in jobs {
                    let job_rows = job.rows;
                    self.batch.push(job);
                    self.execute(job_rows);
                }
            }
        }
    }
}

/// Returns the job if it should run: a job whose client has gone is dropped,
/// one past its deadline is answered `Expired`; neither is computed.
fn admit(job: Job, stats: &SchedulerStats) -> Option<Job> {
    // The deadline first: a request past it has usually been answered with
    // a timeout already, which closes its reply too, and it is expired, not
    // abandoned.
    if job.deadline.is_some_and(|d| Instant::now() >= d) {
        SchedulerStats::add(&stats.expired, 1);
        let _ = job.reply.send(Err(JobError::Expired));
        return None;
    }
    if job.reply.is_closed() {
        SchedulerStats::add(&stats.abandoned, 1);
        return None;
    }
    Some(job)
}

/// Two jobs can share a batch when every input agrees past the first dimension.
fn same_item_shape(a: &Job, b: &Job) -> bool {
    a.inputs.iter().zip(&b.inputs).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

/// A batch of jobs as the engine sees it: inputs to read, result tensors to
/// write.
struct Jobs<'a>(&'a mut [Job]);

impl Batch for Jobs<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn inputs(&self, item: usize) -> &[Tensor] {
        &self.0[item].inputs
    }

    fn rows(&self, item: usize) -> usize {
        self.0[item].rows
    }

    fn output(&mut self, item: usize, output: usize) -> Option<&mut Tensor> {
        let job = &mut self.0[item];
        let position = job.outputs.iter().position(|&o| o == output)?;
        job.results.get_mut(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-row job; `rows` tells jobs apart.
    fn job(rows: usize) -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            inputs: Vec::new(),
            outputs: Vec::new(),
            results: Vec::new(),
            rows,
            enqueued: Instant::now(),
            deadline: None,
            reply,
        }
    }

    #[test]
    fn a_full_queue_refuses_and_jobs_leave_in_order() {
        let queue = JobQueue::new(2);
        assert!(queue.try_push(job(1)).is_ok());
        assert!(queue.try_push(job(2)).is_ok());
        assert_eq!(queue.try_push(job(3)), Err(SubmitError::QueueFull));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.try_pop().map(|j| j.rows), Some(1));
        assert!(queue.try_push(job(4)).is_ok());
        assert_eq!(queue.pop().map(|j| j.rows), Some(2));
        assert_eq!(queue.pop().map(|j| j.rows), Some(4));
        assert!(queue.try_pop().is_none());
    }

    #[test]
    fn a_closed_queue_is_drained_then_ends_and_refuses() {
        let queue = JobQueue::new(4);
        queue.try_push(job(1)).unwrap();
        queue.close();
        assert_eq!(queue.try_push(job(2)), Err(SubmitError::Closed));
        assert_eq!(queue.pop().map(|j| j.rows), Some(1));
        assert!(queue.pop().is_none());
        assert!(queue.pop_until(Instant::now() + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_sleeping_instance_wakes_for_a_push_and_for_a_close() {
        let queue = Arc::new(JobQueue::new(4));
        let sleeper = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || (queue.pop().map(|j| j.rows), queue.pop().is_none()))
        };
        // Until it sleeps, a push would be taken without any wake-up.
        while queue.lock().sleeping == 0 {
            std::thread::yield_now();
        }
        queue.try_push(job(7)).unwrap();
        while queue.lock().sleeping == 0 {
            std::thread::yield_now();
        }
        queue.close();
        assert_eq!(sleeper.join().unwrap(), (Some(7), true));
    }

    #[test]
    fn a_push_wakes_only_an_instance_no_earlier_push_has_woken() {
        const JOBS: usize = 2000;
        let queue = Arc::new(JobQueue::new(JOBS));
        let instances: Vec<_> = (0..2)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || std::iter::from_fn(|| queue.pop()).count())
            })
            .collect();
        // Bursts of pushes, each begun while both instances are asleep and
        // going on while the one it woke is on its way.
        for burst in 0..JOBS / 10 {
            while queue.lock().sleeping < 2 {
                std::thread::yield_now();
            }
            for i in 0..10 {
                queue.try_push(job(burst * 10 + i)).unwrap();
            }
        }
        queue.close();
        let taken: usize = instances.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, JOBS);
        let state = queue.lock();
        // Every burst found both instances asleep, so at least one wake-up
        // each, and never more wake-ups than sleeps.
        assert!(state.wakes >= JOBS / 10, "{} wake-ups", state.wakes);
        assert!(
            state.wakes <= state.sleeps,
            "{} wake-ups for {} sleeps",
            state.wakes,
            state.sleeps
        );
        assert_eq!((state.sleeping, state.woken), (0, 0));
    }

    #[test]
    fn waiting_for_a_fuller_batch_ends_at_the_deadline() {
        let queue = JobQueue::new(4);
        let started = Instant::now();
        assert!(queue.pop_until(started + Duration::from_millis(30)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
        queue.try_push(job(1)).unwrap();
        let past = started;
        assert_eq!(queue.pop_until(past).map(|j| j.rows), Some(1), "a queued job is taken at once");
    }
}
