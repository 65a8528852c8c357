//! Logging to journald through standard error (a systemd service's default): when
//! `JOURNAL_STREAM` names the file that standard error is, every line starts with its syslog
//! priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and carries no timestamp, level
//! or target of its own: journald strips the prefix, stores the priority (`journalctl -p warning`
//! shows alerts and refusals) and stamps the time itself.
//!
//! Anything else (a terminal, `-g FILE`, a pipe) keeps the plain format with timestamps.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether standard error is the journal's stream: `JOURNAL_STREAM` ("device:inode", set by
/// systemd) matches it. A stream passed on to a child whose stderr goes elsewhere does not.
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => names_stream(&var.to_string_lossy(), meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// Whether a `JOURNAL_STREAM` value names the file with this device and inode.
fn names_stream(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else { return false };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority of a level: errors 3, warnings 4, information 6, debugging 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The text format for the journal: message and fields only.
pub fn text_format() -> Prefixed<Format<Full, ()>> {
    Prefixed(format().without_time().with_level(false).with_target(false).with_ansi(false))
}

/// The JSON format for the journal (it keeps its own `timestamp` field for collectors).
pub fn json_format() -> Prefixed<Format<format::Json>> {
    Prefixed(format().json())
}

fn format() -> Format<Full> {
    format::Format::default()
}

/// An event format that puts the event's priority before each of its lines.
pub struct Prefixed<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let prio = priority(event.metadata().level());
        // journald reads the prefix on every line of the stream, so a multi-line message keeps
        // its priority on each.
        for line in text.lines() {
            writeln!(writer, "<{prio}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber with `format` writes for a few events.
    fn logged<F>(format: F) -> String
    where
        F: FormatEvent<tracing_subscriber::Registry, format::DefaultFields> + Send + Sync + 'static,
    {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(Arc::clone(&sink)))
            .with_max_level(Level::DEBUG)
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(door = "ssh", "door opened");
            tracing::warn!("replayed knock sequence");
            tracing::error!("door ssh refused: key file k.key is accessible by group or others\nFix: chmod 600 k.key");
            tracing::debug!("capture reopened");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_carries_its_priority_and_no_timestamp() {
        let text = logged(text_format());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<6>door opened door=\"ssh\"",
                "<4>replayed knock sequence",
                "<3>door ssh refused: key file k.key is accessible by group or others",
                "<3>Fix: chmod 600 k.key",
                "<7>capture reopened",
            ]
        );
    }

    #[test]
    fn json_lines_are_prefixed_too() {
        let text = logged(json_format());
        let first = text.lines().next().unwrap();
        let json = first.strip_prefix("<6>").unwrap_or_else(|| panic!("{first}"));
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["fields"]["message"], "door opened");
        assert!(text.lines().nth(1).unwrap().starts_with("<4>{"));
    }

    #[test]
    fn journal_stream_must_name_this_very_file() {
        assert!(names_stream("8:1234", 8, 1234));
        assert!(names_stream("8:1234\n", 8, 1234));
        assert!(!names_stream("8:1235", 8, 1234));
        assert!(!names_stream("9:1234", 8, 1234));
        assert!(!names_stream("8", 8, 1234));
        assert!(!names_stream("", 8, 1234));
        assert!(!names_stream("a:b", 8, 1234));
    }
}
