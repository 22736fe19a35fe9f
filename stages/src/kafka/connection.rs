//! Where a Kafka cluster is and how every client connects to it.

use std::fmt;

use rdkafka::ClientConfig;

/// A cluster's bootstrap servers and the librdkafka properties every client
/// of it gets: what a secured cluster needs (`security.protocol` `SSL` or
/// `SASL_SSL`, `sasl.mechanism` `PLAIN` or `SCRAM-SHA-256`/`-512`,
/// `sasl.username`, `sasl.password`, `ssl.ca.location` and, for client
/// certificates, `ssl.certificate.location` / `ssl.key.location`: this crate
/// builds librdkafka with OpenSSL) and other connection-wide settings
/// (`client.rack`, `socket.*`, `debug`).
///
/// [`client_config`](Self::client_config) starts a client's configuration
/// from it; a client then sets its own properties, which override these.
///
/// ```
/// use flowstage_stages::kafka::KafkaConnection;
///
/// let kafka = KafkaConnection::new("kafka-1:9093")
///     .property("security.protocol", "SASL_PLAINTEXT")
///     .property("sasl.mechanism", "PLAIN");
/// let mut config = kafka.client_config();
/// config.set("group.id", "readers");
/// assert_eq!(config.get("bootstrap.servers"), Some("kafka-1:9093"));
/// assert_eq!(config.get("security.protocol"), Some("SASL_PLAINTEXT"));
/// ```
///
/// `Debug` hides the values of properties that look secret (names with
/// `password`, `secret` or `.pem`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConnection {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// librdkafka properties of every client, in order (a later one wins).
    pub properties: Vec<(String, String)>,
}

impl KafkaConnection {
    /// The cluster at `brokers`, with no extra property.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConnection {
            brokers: brokers.into(),
            properties: Vec::new(),
        }
    }

    /// Adds a property of every client.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Adds properties of every client, in order.
    pub fn with_properties<I, K, V>(mut self, properties: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.properties
            .extend(properties.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A client configuration with `bootstrap.servers` and then
    /// [`properties`](Self::properties) set; what the caller sets afterwards
    /// overrides them.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = super::base_client_config(&self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Whether a property's value should not appear in logs.
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.ends_with(".pem")
}

/// Property pairs whose `Debug` hides secret values (see [`is_secret`]).
pub(crate) struct Redacted<'a>(pub(crate) &'a [(String, String)]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            }))
            .finish()
    }
}

impl fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties = Redacted(&self.properties);
        f.debug_struct("KafkaConnection")
            .field("brokers", &self.brokers)
            .field("properties", &properties)
            .finish()
    }
}

impl From<&str> for KafkaConnection {
    fn from(brokers: &str) -> Self {
        KafkaConnection::new(brokers)
    }
}

impl From<String> for KafkaConnection {
    fn from(brokers: String) -> Self {
        KafkaConnection::new(brokers)
    }
}

impl From<&String> for KafkaConnection {
    fn from(brokers: &String) -> Self {
        KafkaConnection::new(brokers.as_str())
    }
}

impl From<&KafkaConnection> for KafkaConnection {
    fn from(kafka: &KafkaConnection) -> Self {
        kafka.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_properties_come_first_and_a_client_overrides_them() {
        let kafka = KafkaConnection::new("k:9092")
            .property("security.protocol", "SASL_PLAINTEXT")
            .with_properties([("socket.timeout.ms", "1000"), ("socket.timeout.ms", "2000")]);
        let mut c = kafka.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(c.get("security.protocol"), Some("SASL_PLAINTEXT"));
        // A later property of the connection wins over an earlier one.
        assert_eq!(c.get("socket.timeout.ms"), Some("2000"));
        // The client's own setting wins over the connection's.
        c.set("socket.timeout.ms", "3000");
        assert_eq!(c.get("socket.timeout.ms"), Some("3000"));
        assert_eq!(c.get("security.protocol"), Some("SASL_PLAINTEXT"));
    }

    #[test]
    fn debug_hides_secrets() {
        let kafka = KafkaConnection::from("k:9092")
            .property("sasl.username", "alice")
            .property("sasl.password", "hunter2")
            .property("ssl.key.pem", "-----BEGIN PRIVATE KEY-----")
            .property("sasl.oauthbearer.client.secret", "s3cr3t");
        let shown = format!("{kafka:?}");
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["hunter2", "BEGIN PRIVATE KEY", "s3cr3t"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn conversions_keep_the_brokers() {
        let b = String::from("a:1,b:2");
        assert_eq!(KafkaConnection::from(&b).brokers, "a:1,b:2");
        assert_eq!(KafkaConnection::from(b.clone()).brokers, "a:1,b:2");
        let k = KafkaConnection::new("x:1").property("client.rack", "r1");
        assert_eq!(KafkaConnection::from(&k), k);
    }
}
