//! How librdkafka's log lines and error events reach `tracing`.
//!
//! librdkafka reports a lost broker connection twice, as a log line (facility
//! `FAIL`, level error) and as a global error event (`BrokerTransportFailure`),
//! and then reconnects by itself. rdkafka's default context logs both at
//! ERROR, so a broker restart fills an operator's log with errors about a
//! condition nobody has to act on. flowstage's clients log it once, at WARN,
//! as Kafka's Java clients do ("Connection to node … could not be
//! established"); the event is still there at DEBUG. What librdkafka cannot
//! recover from (a fatal error) stays ERROR.
//!
//! Every client flowstage creates uses these rules: the contexts with
//! callbacks of their own forward to [`log`] and [`error`]
//! (`forward_client_log!`), the others are created with [`ClientLog`].

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::Level;

/// The level of a librdkafka log line of `level` from facility `fac`.
pub(crate) fn log_level(level: RDKafkaLogLevel, fac: &str) -> Level {
    use RDKafkaLogLevel as L;
    match level {
        // A broker connection failed; librdkafka connects again by itself.
        L::Emerg | L::Alert | L::Critical | L::Error if fac == "FAIL" => Level::WARN,
        L::Emerg | L::Alert | L::Critical | L::Error => Level::ERROR,
        L::Warning => Level::WARN,
        L::Notice | L::Info => Level::INFO,
        L::Debug => Level::DEBUG,
    }
}

/// The level of a librdkafka error event, and of an error a consumer returns
/// instead of a message (librdkafka reads on after it).
pub(crate) fn error_level(error: &KafkaError) -> Level {
    // A consumer returns the end of a partition as its own variant (no error
    // code); the client's error callback gets it as a code (below).
    if matches!(error, KafkaError::PartitionEOF(_)) {
        return Level::DEBUG;
    }
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Fatal) => Level::ERROR,
        // Said by the `FAIL` log line of the same connection (a failed
        // connection, or a broker name that does not resolve).
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => Level::DEBUG,
        // A reader that asked for end-of-partition events got one.
        Some(RDKafkaErrorCode::PartitionEOF) => Level::DEBUG,
        _ => Level::WARN,
    }
}

/// `tracing::event!` at a level known only at run time (the macros want a
/// constant one).
macro_rules! at_level {
    ($level:expr, $($arg:tt)+) => {
        match $level {
            tracing::Level::ERROR => tracing::error!($($arg)+),
            tracing::Level::WARN => tracing::warn!($($arg)+),
            tracing::Level::INFO => tracing::info!($($arg)+),
            tracing::Level::DEBUG => tracing::debug!($($arg)+),
            tracing::Level::TRACE => tracing::trace!($($arg)+),
        }
    };
}
pub(crate) use at_level;

/// Logs a librdkafka log line (target `librdkafka`).
pub(crate) fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    at_level!(log_level(level, fac), target: "librdkafka", "{fac} {message}");
}

/// Logs a librdkafka error event (target `librdkafka`).
pub(crate) fn error(error: &KafkaError, reason: &str) {
    at_level!(error_level(error), target: "librdkafka", "{error}: {reason}");
}

/// Implements `ClientContext::log` and `ClientContext::error` with
/// [`log`] and [`error`], inside an `impl ClientContext for …` block.
macro_rules! forward_client_log {
    () => {
        fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
            $crate::kafka::client_log::log(level, fac, message);
        }

        fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
            $crate::kafka::client_log::error(&error, reason);
        }
    };
}
pub(crate) use forward_client_log;

/// The context of a Kafka client without callbacks of its own: librdkafka's
/// log lines and error events logged by flowstage's rules (module docs).
///
/// ```no_run
/// use flowstage_stages::kafka::ClientLog;
/// use rdkafka::consumer::StreamConsumer;
/// use rdkafka::ClientConfig;
/// # fn f() -> Result<(), rdkafka::error::KafkaError> {
/// let consumer: StreamConsumer<ClientLog> = ClientConfig::new()
///     .set("bootstrap.servers", "localhost:9092")
///     .set("group.id", "readers")
///     .create_with_context(ClientLog)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientLog;

impl rdkafka::ClientContext for ClientLog {
    forward_client_log!();
}

/// A producer with this context ignores its delivery reports (for one that
/// sends none, or reads only metadata).
impl rdkafka::producer::ProducerContext for ClientLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A group consumer with this context answers its rebalance events as
/// rdkafka's default does, except that its (un)assign call cannot hang the
/// consumer's close: librdkafka never answers a call made as the group
/// terminates (confluentinc/librdkafka#4884), so the call runs on a thread of
/// its own and the close goes on 2 s after the group terminated.
impl rdkafka::consumer::ConsumerContext for ClientLog {
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut rdkafka::TopicPartitionList,
    ) {
        super::rebalance::rebalance(self, consumer, err, tpl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_a_warning_once_and_a_fatal_error_stays_an_error() {
        // The log line of a failed connection: a warning, not an error.
        assert_eq!(log_level(RDKafkaLogLevel::Error, "FAIL"), Level::WARN);
        // Its error event: only at debug (the line said it).
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(error_level(&transport), Level::DEBUG);
        let unresolved = KafkaError::Global(RDKafkaErrorCode::Resolve);
        assert_eq!(error_level(&unresolved), Level::DEBUG);
        // Other error lines and events keep their weight.
        assert_eq!(log_level(RDKafkaLogLevel::Error, "TXNERR"), Level::ERROR);
        assert_eq!(
            log_level(RDKafkaLogLevel::Warning, "SESSTMOUT"),
            Level::WARN
        );
        assert_eq!(log_level(RDKafkaLogLevel::Debug, "FETCH"), Level::DEBUG);
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(error_level(&down), Level::WARN);
        let fatal = KafkaError::Global(RDKafkaErrorCode::Fatal);
        assert_eq!(error_level(&fatal), Level::ERROR);
    }
}
