//! Log output: lines are formatted on the task that logs them, appended to an
//! in-memory buffer, and written to stderr by a thread every 50 ms. A delivery
//! never waits on a `write` to a slow pipe or terminal, and a busy service
//! makes one `write` per batch of lines, not one per line.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// An error with its whole cause chain, `top: cause: cause`, for log lines:
/// `tracing::warn!(error = %Chain(&e), "...")`. The one way errors are
/// logged, so the Redis or lapin error underneath is never lost.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            // Some wrappers repeat their cause's text: say it once.
            let text = cause.to_string();
            if !text.is_empty() && text != last {
                write!(f, ": {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}

const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Past this many unwritten bytes (the reader of stderr is stuck), new lines
/// are dropped rather than growing memory or stalling deliveries.
const MAX_PENDING: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

/// Flushes what is left when dropped; keep it until the end of `main`.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the global subscriber (`RUST_LOG`, default `info,lapin=warn`).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let shared = Arc::new(Shared::default());
    let writer = BufferedStderr(shared.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
    let flusher = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || flush_loop(&flusher))
        .expect("spawn the log writer thread");
    LogGuard {
        shared,
        thread: Some(thread),
    }
}

fn flush_loop(shared: &Shared) {
    let mut stderr = std::io::stderr();
    let mut out = Vec::new();
    loop {
        let (closed, dropped) = {
            let mut p = lock(shared);
            if !p.closed {
                p = shared
                    .wake
                    .wait_timeout(p, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut p.bytes, &mut out);
            (p.closed, std::mem::take(&mut p.dropped))
        };
        if dropped > 0 {
            let _ = writeln!(
                out,
                "webhook-fanout: {dropped} log lines dropped (stderr was not being read)"
            );
        }
        if !out.is_empty() {
            let _ = stderr.write_all(&out);
            out.clear();
        }
        if closed {
            return;
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    shared.pending.lock().unwrap_or_else(|e| e.into_inner())
}

struct BufferedStderr(Arc<Shared>);

/// One log line, appended to the shared buffer whole when dropped.
pub(crate) struct Line<'a> {
    shared: &'a Shared,
    bytes: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        let mut p = lock(self.shared);
        if p.bytes.len() + self.bytes.len() > MAX_PENDING {
            p.dropped += 1;
        } else {
            p.bytes.extend_from_slice(&self.bytes);
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.0,
            bytes: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_prints_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read webhook")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(
            Chain(&e).to_string(),
            "cannot read webhook: connection reset"
        );
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let shared = Shared::default();
        let big = vec![b'x'; MAX_PENDING - 10];
        for chunk in [&big[..], b"0123456789", b"one too many"] {
            let mut line = Line {
                shared: &shared,
                bytes: Vec::new(),
            };
            line.write_all(chunk).unwrap();
        }
        let p = lock(&shared);
        assert_eq!(p.bytes.len(), MAX_PENDING);
        assert_eq!(p.dropped, 1);
    }
}
