//! Per-engine logging: `tracing` events from the engine's own threads are
//! formatted and handed to a sink (the binding forwards them to the app's
//! logger). Each engine has its own dispatcher, so two engines in one process
//! (tests, PM2 fork mode) never mix their logs.

use std::fmt::Write as _;
use std::sync::Arc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Receives formatted log lines. Must not block.
pub trait LogSink: Send + Sync {
    fn log(&self, level: Level, message: &str);
}

/// Writes to stderr; used when the app gives no logger.
pub struct StderrSink;

impl LogSink for StderrSink {
    fn log(&self, level: Level, message: &str) {
        eprintln!("[dualsync] {level} {message}");
    }
}

struct SinkLayer {
    sink: Arc<dyn LogSink>,
    secrets: Vec<String>,
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let mut line = v.message;
        line.push_str(&v.fields);
        // Last line of defence: nothing that looks like a credential leaves.
        let uris: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let line = crate::redact::scrub(&line, &uris);
        self.sink.log(*event.metadata().level(), &line);
    }
}

/// Builds the dispatcher an engine installs on its runtime threads.
pub fn dispatcher(sink: Arc<dyn LogSink>, level: Level, secrets: Vec<String>) -> tracing::Dispatch {
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    let subscriber =
        tracing_subscriber::registry().with(SinkLayer { sink, secrets }.with_filter(filter));
    tracing::Dispatch::new(subscriber)
}

/// Parses `debug|info|warn|error` (case-insensitive).
pub fn parse_level(s: &str) -> Option<Level> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Some(Level::TRACE),
        "debug" => Some(Level::DEBUG),
        "info" => Some(Level::INFO),
        "warn" | "warning" => Some(Level::WARN),
        "error" => Some(Level::ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Capture(Mutex<Vec<(Level, String)>>);
    impl LogSink for Capture {
        fn log(&self, level: Level, message: &str) {
            self.0.lock().unwrap().push((level, message.to_owned()));
        }
    }

    #[test]
    fn forwards_filtered_and_scrubbed_events() {
        let cap = Arc::new(Capture(Mutex::new(Vec::new())));
        let uri = "mongodb://user:hunter2@h:1/db".to_string();
        let d = dispatcher(cap.clone(), Level::INFO, vec![uri.clone()]);
        tracing::dispatcher::with_default(&d, || {
            tracing::debug!("hidden");
            tracing::info!(batch = 3, "connected to {uri}");
            tracing::error!("boom");
        });
        let got = cap.0.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, Level::INFO);
        assert!(got[0].1.contains("batch=3"));
        assert!(!got[0].1.contains("hunter2"), "{}", got[0].1);
        assert_eq!(got[1], (Level::ERROR, "boom".to_string()));
    }
}
