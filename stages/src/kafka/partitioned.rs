//! The per-partition source: one sub-source per assigned partition.

use std::collections::HashMap;

use flowstage::{BoxSource, Item, Source, StreamError};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::consumer::{
    create_consumer, message_stream, AssignmentEvent, CommittableMessage, ConsumerControl,
    ConsumerSettings,
};
use super::error::KafkaStageError;
use super::tracker::TopicPartition;

/// The records of one assigned partition, in offset order. The source
/// completes when the partition is revoked (or the consumer stops).
pub struct PartitionSource {
    /// The partition.
    pub tp: TopicPartition,
    /// Its records.
    pub source: BoxSource<CommittableMessage>,
}

impl std::fmt::Debug for PartitionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionSource")
            .field("tp", &self.tp)
            .finish()
    }
}

/// Aborts the dispatcher task when the outer source is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A source of per-partition sources (Alpakka Kafka's
/// `committablePartitionedSource`): a new [`PartitionSource`] with the first
/// record of each partition assigned. Each keeps its partition's order, so partitions can
/// be processed concurrently (one stream each) while records of one
/// partition are processed in order. Commit through
/// [`ConsumerControl::committer`] as with [`committable_source`](super::committable_source).
///
/// One task reads the consumer and routes records into a bounded buffer of
/// `per_partition_buffer` records per partition. A sub-source that is not
/// consumed eventually stalls the others (its buffer fills), so run every
/// sub-source. Dropping the outer source stops the routing. A consumer
/// error is given to every sub-source and to the outer source, which then
/// ends.
///
/// A sub-source dropped while its partition is assigned loses the records
/// it held: they were not committed, so commits of that partition stop
/// before them, and they are consumed again after the next rebalance or
/// restart. The partition's next record starts a new sub-source (logged).
///
/// `per_partition_buffer` above 2^61 is a [`KafkaStageError::Config`].
pub fn partitioned_source(
    settings: ConsumerSettings,
    per_partition_buffer: usize,
) -> Result<BoxSource<PartitionSource, ConsumerControl>, KafkaStageError> {
    let control = create_consumer(&settings)?;
    let mut records = message_stream(&control);
    let mut events = control.shared.subscribe_events();
    let capacity = super::check_count("per_partition_buffer", per_partition_buffer)?.max(1);
    let outer = flowstage::async_stream::stream! {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Result<PartitionSource, StreamError>>();
        let dispatcher = tokio::spawn(async move {
            let mut routes: HashMap<TopicPartition, mpsc::Sender<Item<CommittableMessage>>> = HashMap::new();
            loop {
                let next = tokio::select! {
                    biased;
                    ev = events.recv() => {
                        if let Some(AssignmentEvent::Revoked(tps)) = ev {
                            for tp in tps {
                                routes.remove(&tp);
                            }
                        }
                        continue;
                    }
                    r = records.next() => r,
                };
                // Revocations signalled while the record was being read come first.
                while let Ok(AssignmentEvent::Revoked(tps)) = events.try_recv() {
                    for tp in tps {
                        routes.remove(&tp);
                    }
                }
                match next {
                    Some(Ok(m)) => {
                        let tp = m.offset.tp.clone();
                        let tx = match routes.get(&tp) {
                            Some(tx) if !tx.is_closed() => tx.clone(),
                            route => {
                                if route.is_some() {
                                    tracing::warn!(
                                        partition = %tp,
                                        "kafka: the sub-source of an assigned partition was dropped; \
                                         its records are consumed again after the next rebalance or \
                                         restart, and the partition's commits wait for them"
                                    );
                                }
                                let (tx, rx) = mpsc::channel(capacity);
                                let source = Source::from_items(
                                    futures::stream::unfold(rx, |mut rx| async move {
                                        rx.recv().await.map(|x| (x, rx))
                                    }),
                                )
                                .boxed();
                                routes.insert(tp.clone(), tx.clone());
                                if out_tx.send(Ok(PartitionSource { tp: tp.clone(), source })).is_err() {
                                    break;
                                }
                                tx
                            }
                        };
                        // A dropped sub-source only loses its own records
                        // (uncommitted: see above).
                        let _ = tx.send(Ok(m)).await;
                    }
                    Some(Err(e)) => {
                        for tx in routes.values() {
                            let _ = tx.send(Err(e.clone())).await;
                        }
                        let _ = out_tx.send(Err(e));
                        break;
                    }
                    None => break,
                }
            }
        });
        let _guard = AbortOnDrop(dispatcher);
        while let Some(ps) = out_rx.recv().await {
            let failed = ps.is_err();
            yield ps;
            if failed {
                break;
            }
        }
    };
    Ok(Source::from_parts(outer.boxed(), control))
}
