//! Rebalance calls that cannot hang a closing consumer.
//!
//! A group consumer answers each rebalance event with an (un)assign call.
//! rdkafka's default [`ConsumerContext::rebalance`] makes that call (and
//! `rd_kafka_rebalance_protocol` before it) on the polling thread, and
//! librdkafka waits for its main thread's answer without a bound. While the
//! consumer closes, the consumer group can terminate between the moment the
//! call is queued and the moment it is served: librdkafka then discards it
//! without an answer (librdkafka 2.12.1, `rd_kafka_cgrp_op_serve` destroys
//! every op once `rkcg_terminated` is set; confluentinc/librdkafka#4884), and
//! the caller waits forever. The caller is the thread dropping the consumer:
//! rdkafka's `Drop` closes it and serves the rebalance events still queued,
//! such as the assignment of a consumer whose stream stopped before it was
//! polled again. Seen as a test that hung in a few percent of runs.
//!
//! [`rebalance`] makes the same calls on a thread of its own and waits for
//! the answer as long as the group lives. Once the group has terminated it
//! waits [`GRACE_AFTER_CLOSE`] more, then goes on without the answer: the
//! consumer closes, and the helper thread stays blocked on a reply that never
//! comes (it holds no lock and no reference into the closed client, only its
//! own reply queue).
//!
//! The whole answer, the revocation's commit included, is blocking work on
//! the thread that polls the consumer, often a tokio worker. [`rebalance`]
//! runs it through [`tokio::task::block_in_place`] there, so the worker's
//! other tasks go on on another thread while a slow coordinator answers (for
//! up to the source's `commit_timeout`).

use std::ffi::CStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;

/// How long a call may stay unanswered once the consumer group terminated.
const GRACE_AFTER_CLOSE: Duration = Duration::from_secs(2);
/// How often the waiting thread looks whether the group terminated.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// The librdkafka handle, sent to the thread that makes the call.
struct Handle(*mut rd::rd_kafka_t);

// SAFETY: librdkafka's handle is thread-safe; the caller keeps it alive
// while the call can still touch it (see `apply`).
unsafe impl Send for Handle {}

/// What rdkafka's default `rebalance` does, with the (un)assign call made as
/// described in the [module docs](self): `pre_rebalance`, then `assign` (or
/// `incremental_assign`) for an assignment, `unassign` (or
/// `incremental_unassign`) for a revocation or an error, then
/// `post_rebalance`. A failed call is logged, as librdkafka logs it too. All
/// of it [`off_the_workers`].
pub(crate) fn rebalance<C: ConsumerContext>(
    context: &C,
    consumer: &BaseConsumer<C>,
    err: RDKafkaRespErr,
    tpl: &TopicPartitionList,
) {
    off_the_workers(|| answer(context, consumer, err, tpl));
}

/// Runs `f`, blocking work of a librdkafka callback, so that it holds up no
/// other task: on a thread of a multi-threaded tokio runtime through
/// [`tokio::task::block_in_place`] (a worker hands its other tasks to
/// another thread meanwhile), elsewhere (a current-thread runtime, a plain
/// thread) in place.
///
/// `block_in_place` panics on a thread where the runtime does not allow
/// blocking, and a panic cannot unwind out of a callback from C: the process
/// would abort. The runtime's flavor rules that case out; should
/// `block_in_place` still refuse before running `f`, `f` runs in place. A
/// panic of `f` itself goes on unwinding, as it would without this.
fn off_the_workers(f: impl Fn()) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_threaded = Handle::try_current()
        .is_ok_and(|h| matches!(h.runtime_flavor(), RuntimeFlavor::MultiThread));
    if !multi_threaded {
        return f();
    }
    let ran = std::cell::Cell::new(false);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tokio::task::block_in_place(|| {
            ran.set(true);
            f();
        })
    }));
    match outcome {
        Ok(()) => {}
        Err(panic) if ran.get() => std::panic::resume_unwind(panic),
        Err(_) => {
            tracing::debug!(
                "kafka: block_in_place refused here; the callback's work runs in place"
            );
            f();
        }
    }
}

/// What [`rebalance`] does, on the calling thread.
fn answer<C: ConsumerContext>(
    context: &C,
    consumer: &BaseConsumer<C>,
    err: RDKafkaRespErr,
    tpl: &TopicPartitionList,
) {
    let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    let rebalance = match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
        _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
    };
    context.pre_rebalance(consumer, &rebalance);
    if let Err(e) = apply(consumer, assign, tpl) {
        tracing::warn!(error = %e, assign, "kafka: a rebalance call failed");
    }
    context.post_rebalance(consumer, &rebalance);
}

/// Makes the call on a helper thread and waits for its answer (see the
/// [module docs](self)).
fn apply<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assign: bool,
    tpl: &TopicPartitionList,
) -> Result<(), KafkaError> {
    let rk = Handle(consumer.client().native_ptr());
    let list = tpl.clone();
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("flowstage-rebalance".into())
        .spawn(move || {
            let rk = rk;
            // SAFETY: the handle lives until the caller returns, which is
            // after this call answered or after the group terminated; then
            // the call only waits on its own reply queue.
            let r = unsafe { call(rk.0, assign, &list) };
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "kafka: no thread for the rebalance call; making it here");
        // SAFETY: the handle is live while `consumer` is borrowed.
        return unsafe { call(consumer.client().native_ptr(), assign, tpl) };
    }
    let mut terminated_at: Option<Instant> = None;
    loop {
        match rx.recv_timeout(LOOK_EVERY) {
            Ok(r) => return r,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(KafkaError::Rebalance(RDKafkaErrorCode::Fail))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !consumer.closed() {
                    continue;
                }
                let since = *terminated_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= GRACE_AFTER_CLOSE {
                    tracing::debug!(
                        assign,
                        "kafka: librdkafka dropped a rebalance call made while the consumer \
                         closed (confluentinc/librdkafka#4884); closing without its answer"
                    );
                    return Ok(());
                }
            }
        }
    }
}

/// The (un)assign call for the group's rebalance protocol.
///
/// # Safety
/// `rk` must be a live consumer handle.
unsafe fn call(
    rk: *mut rd::rd_kafka_t,
    assign: bool,
    tpl: &TopicPartitionList,
) -> Result<(), KafkaError> {
    let protocol = rd::rd_kafka_rebalance_protocol(rk);
    let cooperative = !protocol.is_null() && CStr::from_ptr(protocol).to_bytes() == b"COOPERATIVE";
    if cooperative {
        let error = if assign {
            rd::rd_kafka_incremental_assign(rk, tpl.ptr())
        } else {
            rd::rd_kafka_incremental_unassign(rk, tpl.ptr())
        };
        if error.is_null() {
            return Ok(());
        }
        let code = rd::rd_kafka_error_code(error);
        rd::rd_kafka_error_destroy(error);
        return Err(KafkaError::Rebalance(code.into()));
    }
    let list = if assign {
        tpl.ptr()
    } else {
        std::ptr::null_mut()
    };
    match rd::rd_kafka_assign(rk, list) {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        code => Err(KafkaError::Rebalance(code.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::off_the_workers;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;

    /// On the only worker of a multi-threaded runtime, as a consumer polled
    /// by a task is, the blocking work lets the worker's other tasks run
    /// meanwhile: it wakes another task and waits for it to run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blocking_work_on_the_only_worker_lets_its_other_tasks_run() {
        let (wake_tx, wake_rx) = tokio::sync::oneshot::channel::<()>();
        let (ran_tx, ran_rx) = mpsc::channel::<()>();
        tokio::spawn(async move {
            if wake_rx.await.is_ok() {
                let _ = ran_tx.send(());
            }
        });
        let wake = Mutex::new(Some(wake_tx));
        let other_ran = tokio::spawn(async move {
            let seen = Cell::new(None);
            off_the_workers(|| {
                if let Some(wake) = wake.lock().unwrap().take() {
                    let _ = wake.send(());
                    // A guard, not a measure: the other task runs at once
                    // unless this thread holds the only worker.
                    seen.set(Some(ran_rx.recv_timeout(Duration::from_secs(20)).is_ok()));
                }
            });
            seen.get()
        })
        .await
        .unwrap();
        assert_eq!(
            other_ran,
            Some(true),
            "the blocking work held the runtime's only worker"
        );
    }

    /// Where blocking is the thread's own business (a current-thread
    /// runtime, where `block_in_place` would panic, or no runtime), the work
    /// runs in place, once.
    #[tokio::test]
    async fn on_a_current_thread_runtime_the_work_runs_in_place_once() {
        let runs = AtomicUsize::new(0);
        off_the_workers(|| {
            runs.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                off_the_workers(|| {
                    runs.fetch_add(1, Ordering::SeqCst);
                })
            });
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// A panic of the work itself goes on unwinding, and the work is not
    /// made a second time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panic_of_the_work_is_not_swallowed_nor_the_work_repeated() {
        let outcome = tokio::spawn(async {
            let runs = AtomicUsize::new(0);
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                off_the_workers(|| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    panic!("the work's own panic");
                })
            }));
            (panic.is_err(), runs.load(Ordering::SeqCst))
        })
        .await
        .unwrap();
        assert_eq!(outcome, (true, 1));
    }
}
