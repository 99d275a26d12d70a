//! Which failures are worth retrying forever (Atlas unreachable, elections,
//! timeouts) and which belong to one document and end in dead letters.

use mongodb::error::{Error, ErrorKind};
use std::time::Duration;

/// Server codes that mean "try again later": network, elections, shutdowns,
/// timeouts, throttling and write conflicts.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    24,    // LockTimeout
    202,   // NetworkInterfaceExceededTimeLimit
    279,   // ClientDisconnect
    8000,  // AtlasError: quota, maintenance, cluster paused
    11601, // Interrupted
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    16500, // TooManyRequests (Cosmos-style throttling)
    462,   // IngressRequestRateLimitExceeded
];

/// How a failure should be handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry the whole batch with backoff, without limit.
    Transient,
    /// The command as a whole was refused for a reason that may belong to one
    /// of its documents: retry the documents one by one to find out.
    Isolate,
}

/// Is this server error code transient?
pub fn is_transient_code(code: i32) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Classifies a command-level error (the whole batch failed).
pub fn classify_command_error(err: &Error) -> FailureClass {
    if err.contains_label("RetryableWriteError")
        || err.contains_label("TransientTransactionError")
        || err.contains_label("SystemOverloadedError")
    {
        return FailureClass::Transient;
    }
    match err.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. }
        | ErrorKind::InvalidTlsConfig { .. } => FailureClass::Transient,
        ErrorKind::Command(c) if is_transient_code(c.code) => FailureClass::Transient,
        ErrorKind::Command(c) if c.code == 13 || c.code == 18 => FailureClass::Transient, // auth: fix config, keep data
        // WriteConcernFailed for the whole command: the server is failing
        // over or lagging, not refusing a document.
        ErrorKind::Command(c) if c.code == 64 => FailureClass::Transient,
        ErrorKind::Command(_)
        | ErrorKind::BsonSerialization(_)
        | ErrorKind::InvalidArgument { .. } => FailureClass::Isolate,
        _ => FailureClass::Transient,
    }
}

/// Exponential backoff with jitter, unbounded in count; one per failing lane.
pub struct Backoff {
    min: Duration,
    max: Duration,
    iter: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            iter: Self::fresh(min, max),
        }
    }

    fn fresh(min: Duration, max: Duration) -> Box<dyn Iterator<Item = Duration> + Send> {
        use backon::BackoffBuilder;
        Box::new(
            backon::ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        self.iter.next().unwrap_or(self.max)
    }

    /// Call after a success so the next failure starts small again.
    pub fn reset(&mut self) {
        self.iter = Self::fresh(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_recognised() {
        assert!(is_transient_code(10107));
        assert!(is_transient_code(91));
        assert!(!is_transient_code(11000)); // duplicate key belongs to a document
        assert!(!is_transient_code(121)); // validation failure
    }

    fn command_error(code: i32, name: &str) -> Error {
        let c: mongodb::error::CommandError = bson::from_document(bson::doc! {
            "code": code, "codeName": name, "errmsg": format!("{name} from the server"),
        })
        .expect("a command error document");
        Error::from(ErrorKind::Command(c))
    }

    #[test]
    fn atlas_busy_paused_or_failing_over_is_transient() {
        for (code, name) in [
            (8000, "AtlasError"),
            (24, "LockTimeout"),
            (202, "NetworkInterfaceExceededTimeLimit"),
            (279, "ClientDisconnect"),
            (11601, "Interrupted"),
            (64, "WriteConcernFailed"),
        ] {
            assert_eq!(
                classify_command_error(&command_error(code, name)),
                FailureClass::Transient,
                "{code} {name}"
            );
        }
        // A document's own refusal still isolates.
        assert_eq!(
            classify_command_error(&command_error(11000, "DuplicateKey")),
            FailureClass::Isolate
        );
        assert_eq!(
            classify_command_error(&command_error(121, "DocumentValidationFailure")),
            FailureClass::Isolate
        );
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        // jitter adds up to one extra delay on top of the exponential value
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(400)),
            "{delays:?}"
        );
        assert!(delays[10] >= Duration::from_millis(100), "{delays:?}");
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(40));
    }
}
