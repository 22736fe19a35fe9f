//! Offset commits that are handed to librdkafka at once and awaited with a
//! bound.
//!
//! rdkafka's `commit(.., CommitMode::Sync)` issues the commit and waits for
//! its result in one call, without a limit. That wait can last forever: a
//! commit sent while the group coordinator is away can stay pending until a
//! rebalance completes, and a rebalance waits for the consumer's rebalance
//! callback. A committer that held a lock during such a commit, and a
//! revocation callback that needed the lock, stalled a server for good after a
//! broker restart.
//!
//! Here the two halves are apart: [`CommitRequest::issue`] only enqueues the
//! commit (so callers can order issues under a short lock), and
//! [`CommitRequest::wait`] waits for the result on a queue of the request's
//! own, at most for a given time. A request dropped before its result came is
//! not cancelled: librdkafka still sends it and discards the reply.

use std::marker::PhantomData;
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::TopicPartitionList;

/// An offset commit handed to librdkafka, whose result is read from a queue
/// of its own. It borrows the consumer, which thus outlives the queue.
pub(crate) struct CommitRequest<'a> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    _consumer: PhantomData<&'a ()>,
}

fn commit_error(err: RDKafkaRespErr) -> KafkaError {
    KafkaError::ConsumerCommit(RDKafkaErrorCode::from(err))
}

impl<'a> CommitRequest<'a> {
    /// Hands the commit of `offsets` to `consumer`'s group without waiting.
    pub(crate) fn issue<C: ConsumerContext + 'static>(
        consumer: &'a impl Consumer<C>,
        offsets: &TopicPartitionList,
    ) -> KafkaResult<CommitRequest<'a>> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live client: `consumer` is borrowed for `'a`.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) })
            .ok_or_else(|| commit_error(RDKafkaRespErr::RD_KAFKA_RESP_ERR__FAIL))?;
        let request = CommitRequest {
            queue,
            _consumer: PhantomData,
        };
        // SAFETY: `offsets` is a valid list, which librdkafka copies; the
        // reply queue is ours and outlives the call (librdkafka holds its own
        // reference for the reply).
        let err = unsafe {
            rd::rd_kafka_commit_queue(
                rk,
                offsets.ptr(),
                queue.as_ptr(),
                None,
                std::ptr::null_mut(),
            )
        };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(commit_error(err));
        }
        Ok(request)
    }

    /// Waits at most `timeout` for the commit's result. A commit with no
    /// result by then fails with `OperationTimedOut` (a retriable error: it
    /// may still land, and the positions stay pending).
    pub(crate) fn wait(self, timeout: Duration) -> KafkaResult<()> {
        let deadline = super::deadline_after(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = c_int::try_from(left.as_millis()).unwrap_or(c_int::MAX);
            // SAFETY: the queue is ours and alive until `drop`.
            let event = unsafe { rd::rd_kafka_queue_poll(self.queue.as_ptr(), ms) };
            if event.is_null() {
                if left.is_zero() {
                    return Err(KafkaError::ConsumerCommit(
                        RDKafkaErrorCode::OperationTimedOut,
                    ));
                }
                continue;
            }
            // SAFETY: `event` is a live event we own until destroyed here.
            let (kind, err) = unsafe {
                let kind = rd::rd_kafka_event_type(event);
                let err = rd::rd_kafka_event_error(event);
                rd::rd_kafka_event_destroy(event);
                (kind, err)
            };
            if kind != rd::RD_KAFKA_EVENT_OFFSET_COMMIT {
                continue;
            }
            return match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
                e => Err(commit_error(e)),
            };
        }
    }
}

impl Drop for CommitRequest<'_> {
    fn drop(&mut self) {
        // SAFETY: the queue was created by `issue` and is destroyed once; the
        // client is still alive (borrowed for the request's lifetime).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}
