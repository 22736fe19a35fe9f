//! Keeps a Kafka client from losing every broker for good.
//!
//! librdkafka drops the brokers it knows that a metadata response does not
//! list. A broker that is shutting down (or still starting) can answer with no
//! broker at all: the client then has none left, sends no more metadata
//! request, and so never starts its re-bootstrap timer either (librdkafka
//! 2.12). It stays without a connection until it is recreated — seen as a
//! server that did nothing for minutes after an Apache Kafka restart, its
//! producer waiting for a partition leader and its consumer for a group
//! coordinator.
//!
//! Where (librdkafka 2.12.1, `src/rdkafka_metadata.c`): the parser rejects a
//! response only when it has neither brokers nor topics (`broker_cnt == 0 &&
//! topic_cnt == 0`, "should retry"); one with topics and no broker goes on to
//! `rd_kafka_metadata_decommission_unavailable_brokers`, which removes every
//! broker, learned or bootstrap, whose id the response does not list: all of
//! them. Worth reporting upstream (skip the decommission when `broker_cnt` is
//! 0); this module is the workaround until then.
//!
//! [`watch`] watches a client: when it has known brokers and then has
//! none for a few seconds, it adds `bootstrap.servers` again, which makes the
//! client connect and fetch metadata as at start-up.

use std::ffi::CString;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::AsyncRuntime;
use rdkafka::ClientContext;

/// How often a client's brokers are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a client may know no broker before `bootstrap.servers` is added.
const NO_BROKER_FOR: Duration = Duration::from_secs(4);
/// At most one re-bootstrap in this interval (the cluster may be down).
const READD_EVERY: Duration = Duration::from_secs(30);

/// A Kafka client whose librdkafka handle can be watched.
pub(crate) trait NativeHandle: Send + Sync + 'static {
    /// The librdkafka handle, valid while `self` lives.
    fn native_ptr(&self) -> *mut rd::rd_kafka_t;
}

impl<C: ConsumerContext + 'static, R: AsyncRuntime + Send + Sync + 'static> NativeHandle
    for StreamConsumer<C, R>
{
    fn native_ptr(&self) -> *mut rd::rd_kafka_t {
        self.client().native_ptr()
    }
}

impl<C: ProducerContext + 'static> NativeHandle for ThreadedProducer<C> {
    fn native_ptr(&self) -> *mut rd::rd_kafka_t {
        self.client().native_ptr()
    }
}

impl<C: ClientContext + 'static, R: AsyncRuntime + Send + Sync + 'static> NativeHandle
    for FutureProducer<C, R>
{
    fn native_ptr(&self) -> *mut rd::rd_kafka_t {
        self.client().native_ptr()
    }
}

/// How many brokers learned from metadata `client` knows now.
fn learned_brokers(client: &dyn NativeHandle) -> usize {
    let mut n = 0usize;
    // SAFETY: the handle is live while `client` is borrowed; librdkafka
    // returns an allocated array (possibly empty) that we free at once.
    unsafe {
        let rk = client.native_ptr();
        let ids = rd::rd_kafka_brokers_learned_ids(rk, &mut n);
        if !ids.is_null() {
            rd::rd_kafka_mem_free(rk, ids.cast());
        }
    }
    n
}

/// Watches `client` (until it is dropped) and adds `bootstrap` to it again
/// when it lost every broker it knew. Does nothing outside a tokio runtime.
pub(crate) fn watch<T: NativeHandle>(client: &Arc<T>, bootstrap: &str) {
    let dynamic: Arc<dyn NativeHandle> = client.clone();
    let client: Weak<dyn NativeHandle> = Arc::downgrade(&dynamic);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Ok(list) = CString::new(bootstrap) else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut had_brokers = false;
        let mut none_since: Option<Instant> = None;
        let mut last_readd: Option<Instant> = None;
        loop {
            tick.tick().await;
            let Some(c) = client.upgrade() else { break };
            let n = learned_brokers(c.as_ref());
            if n > 0 {
                had_brokers = true;
                none_since = None;
                continue;
            }
            if !had_brokers {
                continue; // still starting
            }
            let since = *none_since.get_or_insert_with(Instant::now);
            if since.elapsed() < NO_BROKER_FOR
                || last_readd.is_some_and(|t| t.elapsed() < READD_EVERY)
            {
                continue;
            }
            last_readd = Some(Instant::now());
            tracing::warn!(
                bootstrap = %list.to_string_lossy(),
                "kafka: the client knows no broker any more (one answered a metadata request \
                 with none); bootstrapping again"
            );
            // SAFETY: the handle is live while `c` is held; the list is a
            // valid C string that librdkafka copies.
            unsafe {
                rd::rd_kafka_brokers_add(c.native_ptr(), list.as_ptr());
            }
        }
    });
}
