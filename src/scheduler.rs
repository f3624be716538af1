//! The per-model queue and the instance threads that drain it.
//!
//! Every served model version owns one bounded queue. Each of its instances is
//! a dedicated OS thread that owns its session and blocks on the queue; async
//! handlers only ever `try_send` into it, so a full queue is an immediate
//! answer rather than a wait, and the engine never runs on the reactor.
//! Answers travel back on a oneshot channel per request.
//!
//! Requests run one per engine call: gathering concurrent requests into one
//! batched call is not done yet, so under load each request pays the engine's
//! fixed per-call cost.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::engine::{EngineError, Instance};
use crate::tensor::Tensor;

/// One validated request on its way to an instance.
pub struct Job {
    /// One tensor per model input, in signature order.
    pub inputs: Vec<Tensor>,
    /// Indices of the outputs to return, in the order the client asked.
    pub outputs: Vec<usize>,
    pub reply: oneshot::Sender<Result<Vec<Tensor>, EngineError>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the model's queue is full")]
    QueueFull,
    #[error("the model is shutting down")]
    Closed,
}

pub struct Scheduler {
    /// `None` only while dropping: closing the queue is what stops the threads.
    queue: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts one thread per instance, all draining a queue of `queue_size`.
    pub fn start(
        model: &str,
        instances: Vec<Instance>,
        queue_size: usize,
    ) -> std::io::Result<Scheduler> {
        let (tx, rx) = crossbeam_channel::bounded(queue_size);
        let mut workers = Vec::with_capacity(instances.len());
        for (i, instance) in instances.into_iter().enumerate() {
            let rx = rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("inferd-{model}-{i}"))
                .spawn(move || serve_queue(instance, rx))?;
            workers.push(handle);
        }
        Ok(Scheduler {
            queue: Some(tx),
            workers,
        })
    }

    /// Hands `job` to the queue without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let queue = self.queue.as_ref().ok_or(SubmitError::Closed)?;
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::QueueFull,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// Requests waiting for an instance.
    pub fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, Sender::len)
    }
}

impl Drop for Scheduler {
    /// Closes the queue, lets the instances finish what is queued, and joins
    /// them, so that a dropped model leaves no thread or session behind.
    fn drop(&mut self) {
        drop(self.queue.take());
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a model instance thread panicked");
            }
        }
    }
}

/// An instance thread's whole life: take the next job, skip it if its client
/// has gone, run it, answer.
fn serve_queue(mut instance: Instance, queue: Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let result = instance.run(&job.inputs, &job.outputs);
        // The client may have gone while the engine ran; nobody is left to tell.
        let _ = job.reply.send(result);
    }
}
