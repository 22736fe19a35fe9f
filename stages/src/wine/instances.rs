//! Which server instances serve a consumer group, and where their HTTP state
//! is — the analogue of Kafka Streams' metadata (`application.server`).
//!
//! Every instance publishes an [`InstanceInfo`] (JSON, keyed by instance id) to
//! a compacted topic when it starts, when its partition assignment or current
//! models change, on a heartbeat, and a last time (`stopped: true`) when it
//! stops. Every instance reads that topic from the beginning, so any one of them
//! answers `GET /state/instances` for the whole group. An instance killed
//! without a goodbye drops out of the list once its heartbeat is older than
//! [`InstanceDirectory::ttl`] (by the reader's clock).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The default topic of instance records.
pub const DEFAULT_INSTANCES_TOPIC: &str = "serving-instances";

/// What one server instance says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance id (unique in the group; default `host-pid`).
    pub id: String,
    /// The consumer group it belongs to.
    pub group: String,
    /// Its HTTP state address (`host:port`), if it serves one.
    pub http: Option<String>,
    /// The data partitions assigned to it now (`topic-partition`).
    pub partitions: Vec<String>,
    /// Its current model per dataType.
    pub models: BTreeMap<String, String>,
    /// When it started, epoch milliseconds.
    pub started_ms: u64,
    /// When this record was written, epoch milliseconds.
    pub updated_ms: u64,
    /// Records it received so far.
    pub records: u64,
    /// True in the last record of an instance that stopped cleanly.
    pub stopped: bool,
}

/// One entry of `GET /state/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    /// What the instance published last.
    #[serde(flatten)]
    pub info: InstanceInfo,
    /// Milliseconds since this reader received it.
    pub last_seen_ms_ago: u64,
    /// Whether this is the instance answering the request.
    pub this: bool,
}

#[derive(Debug)]
struct Seen {
    info: InstanceInfo,
    at: Instant,
}

/// The instances of a group as seen by one member. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InstanceDirectory {
    inner: Arc<Mutex<BTreeMap<String, Seen>>>,
    /// Bumped on every record observed.
    version: Arc<watch::Sender<u64>>,
    group: String,
    me: String,
    ttl: Duration,
    /// When this instance started (epoch ms; 0 until [`set_own_start`](Self::set_own_start)).
    own_start: Arc<std::sync::atomic::AtomicU64>,
    /// The first live record of another instance with this one's id.
    duplicate: Arc<Mutex<Option<InstanceInfo>>>,
}

impl InstanceDirectory {
    /// A directory of `group`, read by instance `me`; instances whose last
    /// record is older than `ttl` are not listed.
    pub fn new(group: impl Into<String>, me: impl Into<String>, ttl: Duration) -> Self {
        InstanceDirectory {
            inner: Arc::default(),
            version: Arc::new(watch::Sender::new(0)),
            group: group.into(),
            me: me.into(),
            ttl,
            own_start: Arc::default(),
            duplicate: Arc::default(),
        }
    }

    /// Tells the directory when this instance started, so that a record of
    /// another live instance with the same id can be told from its own (and
    /// from a previous run's, which started before it).
    pub fn set_own_start(&self, started_ms: u64) {
        self.own_start
            .store(started_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Another instance of the group that uses this one's id and was alive
    /// after this one started (a misconfiguration: the two overwrite each
    /// other's record), if one was seen; it is logged once.
    pub fn duplicate(&self) -> Option<InstanceInfo> {
        self.duplicate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes (and logs, the first time) `info` if it is another live
    /// instance with this one's id.
    fn check_duplicate(&self, info: &InstanceInfo) {
        let own = self.own_start.load(std::sync::atomic::Ordering::Relaxed);
        if own == 0
            || info.id != self.me
            || info.stopped
            || info.started_ms == own
            || info.updated_ms < own
        {
            return;
        }
        let mut seen = self
            .duplicate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.is_none() {
            tracing::warn!(
                id = %info.id,
                group = %info.group,
                other_http = ?info.http,
                other_started_ms = info.started_ms,
                "instances: another instance of the group uses this instance's id; give each \
                 its own --instance-id (they overwrite each other's record)"
            );
            *seen = Some(info.clone());
        }
    }

    /// How long an instance stays listed without a new record.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes in a record read from the instances topic (other groups' records
    /// and undecodable ones are ignored). A `None` payload (a tombstone)
    /// removes the instance named by `key`.
    pub fn observe(&self, key: Option<&[u8]>, payload: Option<&[u8]>) {
        self.update(key, payload);
        self.version.send_modify(|v| *v += 1);
    }

    fn update(&self, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match payload {
            None => {
                if let Some(id) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    map.remove(id);
                }
            }
            Some(p) => match serde_json::from_slice::<InstanceInfo>(p) {
                Ok(info) if info.group == self.group => {
                    self.check_duplicate(&info);
                    if info.stopped {
                        map.remove(&info.id);
                    } else {
                        map.insert(
                            info.id.clone(),
                            Seen {
                                info,
                                at: Instant::now(),
                            },
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "instances: undecodable record ignored"),
            },
        }
    }

    /// The live instances, by id.
    pub fn list(&self) -> Vec<InstanceView> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        map.values()
            .filter(|s| now.duration_since(s.at) <= self.ttl)
            .map(|s| InstanceView {
                info: s.info.clone(),
                last_seen_ms_ago: u64::try_from(now.duration_since(s.at).as_millis())
                    .unwrap_or(u64::MAX),
                this: s.info.id == self.me,
            })
            .collect()
    }

    /// Waits until the list satisfies `pred` (checked after every record
    /// observed), and returns it. Waits forever if it never does.
    pub async fn wait_for(&self, pred: impl Fn(&[InstanceView]) -> bool) -> Vec<InstanceView> {
        let mut rx = self.version.subscribe();
        loop {
            let list = self.list();
            if pred(&list) {
                return list;
            }
            if rx.changed().await.is_err() {
                return self.list();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, group: &str, stopped: bool) -> Vec<u8> {
        serde_json::to_vec(&InstanceInfo {
            id: id.into(),
            group: group.into(),
            http: Some("127.0.0.1:5500".into()),
            partitions: vec!["mdata-0".into()],
            models: BTreeMap::new(),
            started_ms: 1,
            updated_ms: 2,
            records: 0,
            stopped,
        })
        .unwrap_or_default()
    }

    #[test]
    fn lists_live_instances_of_its_group_only() {
        let d = InstanceDirectory::new("g", "a", Duration::from_secs(60));
        d.observe(Some(b"a"), Some(&info("a", "g", false)));
        d.observe(Some(b"b"), Some(&info("b", "g", false)));
        d.observe(Some(b"c"), Some(&info("c", "other", false)));
        d.observe(Some(b"x"), Some(b"not json"));
        let ids: Vec<_> = d.list().into_iter().map(|v| (v.info.id, v.this)).collect();
        assert_eq!(ids, [("a".to_string(), true), ("b".to_string(), false)]);
        d.observe(Some(b"b"), Some(&info("b", "g", true)));
        d.observe(Some(b"a"), None);
        assert!(d.list().is_empty());
    }

    #[test]
    fn another_live_instance_with_this_id_is_noted() {
        let record = |started_ms, updated_ms, stopped| {
            let mut i: InstanceInfo =
                serde_json::from_slice(&info("a", "g", stopped)).expect("decodes");
            i.started_ms = started_ms;
            i.updated_ms = updated_ms;
            serde_json::to_vec(&i).unwrap_or_default()
        };
        let d = InstanceDirectory::new("g", "a", Duration::from_secs(60));
        d.set_own_start(100);
        // A previous run of this instance (ended before it started), and its own record.
        d.observe(Some(b"a"), Some(&record(10, 90, false)));
        d.observe(Some(b"a"), Some(&record(100, 150, false)));
        assert_eq!(d.duplicate(), None);
        // Another process with the same id, alive now.
        d.observe(Some(b"a"), Some(&record(120, 160, false)));
        assert_eq!(d.duplicate().map(|i| i.started_ms), Some(120));
    }

    #[test]
    fn expired_instances_are_not_listed() {
        let d = InstanceDirectory::new("g", "a", Duration::ZERO);
        d.observe(Some(b"b"), Some(&info("b", "g", false)));
        std::thread::sleep(Duration::from_millis(2));
        assert!(d.list().is_empty());
    }
}
