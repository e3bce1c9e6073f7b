//! Where log lines go. Warnings and errors reach stderr as they happen; info lines, among them
//! the access log's one line per request, are gathered and written in batches: when 64 KiB
//! have piled up, every 100 ms, and at exit. That is nginx's `access_log ... buffer=` and
//! what HAProxy gets from syslog: one write per batch instead of one system call per request.
//! The plain line format ([`PlainLine`]) is written directly, without tracing-subscriber's
//! per-field formatting machinery, which cost more than the rest of a proxied request.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// A batch is written out once it holds this much.
const BATCH_BYTES: usize = 64 * 1024;
/// The longest an info line waits in a batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The log's output: stderr, with info lines batched. Clones share one batch.
#[derive(Clone, Default)]
pub struct LogSink {
    batch: Arc<Mutex<Vec<u8>>>,
}

impl LogSink {
    /// Writes out what is waiting.
    pub fn flush(&self) {
        write_out(&mut self.batch.lock());
    }

    /// Flushes every [`FLUSH_EVERY`] from a thread of its own, so that a quiet proxy's last
    /// lines do not wait for the next request.
    pub fn flush_periodically(&self) -> io::Result<()> {
        let sink = self.clone();
        std::thread::Builder::new()
            .name("corral-log".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                sink.flush();
            })
            .map(drop)
    }
}

/// One event's writer: tracing-subscriber formats an event into one buffer and writes it
/// with one `write_all`.
pub struct LineWriter<'a> {
    sink: &'a LogSink,
    /// Warnings and errors are not held back (and write out the batch before them, so the
    /// output stays in order).
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut batch = self.sink.batch.lock();
        batch.extend_from_slice(line);
        if self.urgent || batch.len() >= BATCH_BYTES {
            write_out(&mut batch);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            sink: self,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            sink: self,
            urgent: urgent(meta.level()),
        }
    }
}

/// Levels order by verbosity: WARN and ERROR are the ones at or below WARN.
fn urgent(level: &Level) -> bool {
    *level <= Level::WARN
}

/// A log line that cannot be written (stderr closed or full) is dropped: the proxy must not
/// stop or grow memory for it.
fn write_out(batch: &mut Vec<u8>) {
    if !batch.is_empty() {
        let _ = io::stderr().lock().write_all(batch);
        batch.clear();
    }
}

/// The plain log line, tracing-subscriber's default layout without colour or spans (corral
/// opens none): `2026-11-24T00:58:39.123456Z  INFO corral::access: client=… status=200 …`.
/// Numbers are written as they are, floats with three decimals (durations in milliseconds, to
/// the microsecond), strings quoted only when they hold a space, a quote, `=` or a control
/// character, so that the line splits on spaces and `=`.
#[derive(Default)]
pub struct PlainLine {
    /// `YYYY-MM-DDTHH:MM:SS` of the second last written: formatting a date costs more than
    /// the rest of an access line, and lines come thousands per second.
    second: Mutex<(u64, String)>,
}

impl PlainLine {
    fn write_timestamp(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let mut second = self.second.lock();
        if second.0 != secs || second.1.is_empty() {
            *second = (secs, crate::utc::date_time(secs as i64));
        }
        write!(writer, "{}.{:06}Z", second.1, now.subsec_micros())
    }
}

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        self.write_timestamp(&mut writer)?;
        let meta = event.metadata();
        write!(writer, " {:>5} {}:", meta.level(), meta.target())?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes an event's fields as ` name=value`, the message as ` text`.
struct Fields<'w, 'a> {
    writer: &'w mut Writer<'a>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result =
                write!(self.writer, " {}=", field.name()).and_then(|()| value(self.writer));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.result = self.result.and_then(|()| write!(self.writer, " {value}"));
        } else if needs_quotes(value) {
            self.put(field, |w| write!(w, "{value:?}"));
        } else {
            self.put(field, |w| w.write_str(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Integer thousandths: float formatting with a precision is the slow path of `fmt`.
        let thousandths = (value * 1000.0).round();
        if thousandths.is_finite() && (0.0..1e15).contains(&thousandths) {
            let n = thousandths as u64;
            self.put(field, |w| write!(w, "{}.{:03}", n / 1000, n % 1000));
        } else {
            self.put(field, |w| write!(w, "{value:.3}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.result = self.result.and_then(|()| write!(self.writer, " {value:?}"));
        } else {
            self.put(field, |w| write!(w, "{value:?}"));
        }
    }
}

fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value
            .bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\' || b == 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sink: &LogSink, level: Level, text: &[u8]) {
        LineWriter {
            sink,
            urgent: urgent(&level),
        }
        .write_all(text)
        .unwrap();
    }

    #[test]
    fn info_lines_wait_and_warnings_do_not() {
        let sink = LogSink::default();
        line(&sink, Level::INFO, b"access\n");
        assert_eq!(&*sink.batch.lock(), b"access\n");
        line(&sink, Level::WARN, b"warning\n");
        assert!(
            sink.batch.lock().is_empty(),
            "a warning writes the batch out"
        );
        line(&sink, Level::ERROR, b"error\n");
        assert!(sink.batch.lock().is_empty());
        line(&sink, Level::DEBUG, b"debug\n");
        assert!(!sink.batch.lock().is_empty());
    }

    #[test]
    fn a_full_batch_is_written_out() {
        let sink = LogSink::default();
        let text = vec![b'x'; 1000];
        for _ in 0..=(BATCH_BYTES / text.len()) {
            line(&sink, Level::INFO, &text);
        }
        assert!(sink.batch.lock().len() < BATCH_BYTES);
        sink.flush();
        assert!(sink.batch.lock().is_empty());
    }

    #[test]
    fn plain_lines_are_written_directly() {
        use tracing_subscriber::fmt::format::FmtSpan;
        let sink = LogSink::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_span_events(FmtSpan::NONE)
            .event_format(PlainLine::default())
            .with_writer(sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "corral::access",
                client = %"127.0.0.1:5000",
                listener = "80/http",
                rule = "",
                path = "/a b",
                status = 200u64,
                duration_ms = 1.23456,
                aborted = false,
            );
            tracing::info!(generation = 3, "reload applied");
        });
        let out = String::from_utf8(sink.batch.lock().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with(
                " INFO corral::access: client=127.0.0.1:5000 listener=80/http rule=\"\" \
                 path=\"/a b\" status=200 duration_ms=1.235 aborted=false"
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].starts_with("20"),
            "a timestamp first: {}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(" INFO corral::logging::tests: reload applied generation=3"),
            "{}",
            lines[1]
        );
    }
}
