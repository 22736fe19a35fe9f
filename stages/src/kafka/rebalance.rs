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
/// `post_rebalance`. A failed call is logged, as librdkafka logs it too.
pub(crate) fn rebalance<C: ConsumerContext>(
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
