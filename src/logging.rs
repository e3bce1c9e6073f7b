//! Where log lines go. Warnings and errors reach stderr as they happen; info lines, among them
//! the access log's one line per request, are gathered and written in batches: when 64 KiB
//! have piled up, every 100 ms, and at exit. That is nginx's `access_log ... buffer=` and
//! what HAProxy gets from syslog: one write per batch instead of one system call per request.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

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
}
