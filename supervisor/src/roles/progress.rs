//! Progress of long operations: the bytes of a checkpoint's images as they
//! are written, reported to the coordinator (protocol 2.2 `Progress`, shown
//! by `dmtcp-command -s` and `-bc`), and a progress bar for `dmtcp-restart`
//! on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dmtcp_coordinator::client::Connection;
use dmtcp_protocol::ToCoordinator;

/// How often the coordinator hears how far the images got.
const EVERY: Duration = Duration::from_millis(250);

/// Sends `Progress` for checkpoint `id` every 250 ms from a thread of its
/// own (on its own handle of the coordinator socket; the session sends
/// nothing meanwhile), until [`stop`](Reporter::stop).
pub struct Reporter {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

/// Bytes on disk of the images being written: the temp file while it is
/// written, the final name once renamed.
fn bytes_of(images: &[PathBuf]) -> u64 {
    let tmp_suffix = format!(".tmp.{}", std::process::id());
    images
        .iter()
        .map(|p| {
            let mut tmp = p.clone().into_os_string();
            tmp.push(&tmp_suffix);
            std::fs::metadata(&tmp)
                .or_else(|_| std::fs::metadata(p))
                .map_or(0, |m| m.len())
        })
        .sum()
}

impl Reporter {
    pub fn start(mut conn: Connection, id: u64, images: Vec<PathBuf>) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU32::new(0));
        let processes = images.len() as u32;
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut waited = Duration::ZERO;
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(25));
                    waited += Duration::from_millis(25);
                    if waited < EVERY {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let msg = ToCoordinator::Progress {
                        id,
                        bytes: bytes_of(&images),
                        done: d.load(Ordering::Relaxed),
                        processes,
                    };
                    if conn.send(&msg).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Reporter { stop, done, thread }
    }

    /// One more image is complete.
    pub fn image_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the thread; the session may use the connection again after.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `dmtcp-restart`'s progress bar: processes restored and bytes of their
/// images, on stderr when it is a terminal; nothing otherwise.
pub struct RestartBar(Option<indicatif::ProgressBar>);

impl RestartBar {
    /// A bar over `total` bytes of images of `processes` processes.
    pub fn new(total: u64, processes: usize) -> RestartBar {
        if !std::io::stderr().is_terminal() {
            return RestartBar(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "restart [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("0/{processes} processes"));
        bar.enable_steady_tick(Duration::from_millis(200));
        RestartBar(Some(bar))
    }

    /// One more process restored, whose images hold `bytes`.
    pub fn process_done(&self, done: usize, processes: usize, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
            b.set_message(format!("{done}/{processes} processes"));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
