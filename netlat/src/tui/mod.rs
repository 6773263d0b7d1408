//! `netlat watch --tui`: the same run as `watch` (same engine, same lines) printed into a live
//! terminal view instead of lines. The [`model::Model`] is the printer; a redraw every 250 ms
//! counts the waiting attempts up; keys pause, filter by cause and quit. It stops on `q`
//! (or Ctrl-C), SIGINT, SIGTERM and a closed terminal (SIGHUP, or the terminal unreadable) and
//! always gives the terminal back as it found it, then prints the run's summary.

pub mod model;
pub mod view;

use std::{
    cell::RefCell,
    fs::File,
    io::{self, IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::ExitCode,
    rc::Rc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use netlat_core::{
    exposure::Exposure,
    facts::NodeFacts,
    report::{ConnectReport, DropReport, Hook, Reports, RetryReport, Summary},
};
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};
use tokio::{signal::unix::SignalKind, sync::mpsc};

use self::model::Model;
use crate::{
    cmd::watch::{self, WatchConfig},
    export::{Exports, HistogramSummary},
    limits::LossLine,
    output::{HumanPrinter, Printer},
};

/// The model, shared by the printer (the engine's side) and the screen (the keys' side); one
/// thread, so a `RefCell` borrowed only inside each call.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Model>>);

impl Reports for Shared {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        self.0.borrow_mut().connect(line)
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        self.0.borrow_mut().drop_line(line)
    }
    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        self.0.borrow_mut().retry(line)
    }
}

impl Printer for Shared {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        self.0.borrow_mut().hooks(hooks)
    }
    fn node(&mut self, facts: &NodeFacts, exposure: &[Exposure]) -> io::Result<()> {
        self.0.borrow_mut().node(facts, exposure)
    }
    fn histogram(&mut self, h: &HistogramSummary) -> io::Result<()> {
        self.0.borrow_mut().histogram(h)
    }
    fn loss(&mut self, l: &LossLine) -> io::Result<()> {
        self.0.borrow_mut().loss(l)
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.0.borrow_mut().summary(s)
    }
}

/// Raw mode and the alternate screen for as long as it lives; restored on drop (also when the
/// run fails or panics).
struct Screen(Terminal<CrosstermBackend<io::Stdout>>);

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
            let _ = terminal::disable_raw_mode();
            return Err(e).context("switching to the alternate screen");
        }
        let t = Terminal::new(CrosstermBackend::new(out)).context("opening the terminal")?;
        Ok(Self(t))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Best effort: a terminal that is gone cannot be restored, and nothing else can be done.
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// fd 2 set aside in an anonymous file while the screen is up (a log line would tear the
/// view), put back on drop; what was written meanwhile is printed after the view.
struct StderrAside {
    saved: OwnedFd,
    file: File,
}

/// At most this much of what was set aside is printed afterwards (its end).
const ASIDE_SHOWN: u64 = 64 * 1024;

impl StderrAside {
    fn new() -> io::Result<Self> {
        // SAFETY: a NUL-terminated name; memfd_create returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"netlat-tui-stderr".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: F_DUPFD_CLOEXEC on fd 2 returns a new descriptor or -1.
        let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both descriptors are open.
        if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { saved, file })
    }

    /// Put fd 2 back; the end of what was written meanwhile.
    fn restore(mut self) -> String {
        self.put_back();
        let len = self.file.metadata().map_or(0, |m| m.len());
        let mut text = String::new();
        if self
            .file
            .seek(SeekFrom::Start(len.saturating_sub(ASIDE_SHOWN)))
            .is_ok()
        {
            let _ = self.file.read_to_string(&mut text);
        }
        text
    }

    fn put_back(&self) {
        // SAFETY: both descriptors are open; on failure fd 2 stays the file, nothing worse.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
    }
}

impl Drop for StderrAside {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// What the keyboard asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Quit,
    Pause,
    NextCause,
    AllCauses,
    Resize,
    /// The terminal cannot be read any more (closed).
    Gone,
}

/// Reads keys on a thread of its own (crossterm's reads block) until the terminal is gone or
/// nobody listens.
fn read_keys(tx: &mpsc::UnboundedSender<Key>) {
    loop {
        let key = match event::read() {
            Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                KeyCode::Char('p' | ' ') => Key::Pause,
                KeyCode::Char('c') => Key::NextCause,
                KeyCode::Char('a') => Key::AllCauses,
                _ => continue,
            },
            Ok(Event::Resize(..)) => Key::Resize,
            Ok(_) => continue,
            Err(_) => Key::Gone,
        };
        if tx.send(key).is_err() || key == Key::Gone {
            return;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Redraw every 250 ms (unless paused) and on each key, until a key or the terminal ends it.
async fn screen_loop(model: Shared, mut screen: Screen, mut keys: mpsc::UnboundedReceiver<Key>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let key = tokio::select! {
            _ = every.tick() => None,
            k = keys.recv() => Some(k.unwrap_or(Key::Gone)),
        };
        {
            let mut m = model.0.borrow_mut();
            match key {
                Some(Key::Quit | Key::Gone) => return,
                Some(Key::Pause) => m.paused = !m.paused,
                Some(Key::NextCause) => m.next_filter(),
                Some(Key::AllCauses) => m.filter = None,
                Some(Key::Resize) => {
                    let _ = screen.0.autoresize();
                }
                None if m.paused => continue,
                None => {}
            }
            let now = now_ms();
            if !m.paused {
                m.prune(now);
            }
            // A terminal that cannot be drawn on is gone: end the run.
            if screen.0.draw(|f| view::draw(f, &m, now)).is_err() {
                return;
            }
        }
    }
}

/// `netlat watch --tui`.
pub fn main(cfg: &WatchConfig) -> anyhow::Result<ExitCode> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        anyhow::bail!(
            "--tui needs a terminal on stdin and stdout; use `--output json` to pipe the lines"
        );
    }
    let exports = Exports::open(&cfg.exports, SystemTime::now())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let model = Shared::default();
    let aside = StderrAside::new().context("setting stderr aside for the view")?;
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(SignalKind::terminate()).ok();
        let mut int = tokio::signal::unix::signal(SignalKind::interrupt()).ok();
        let mut hup = tokio::signal::unix::signal(SignalKind::hangup()).ok();
        let mut screen = Screen::enter()?;
        // Loading takes a few seconds: say so rather than show a blank screen.
        screen
            .0
            .draw(|f| view::draw(f, &model.0.borrow(), now_ms()))
            .context("drawing the screen")?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || read_keys(&tx));
        let ui = screen_loop(model.clone(), screen, rx);
        let shutdown = async move {
            tokio::select! {
                () = watch::recv(term.as_mut()) => {},
                () = watch::recv(int.as_mut()) => {},
                () = watch::recv(hup.as_mut()) => {},
                () = ui => {},
            }
        };
        let mut printer = model.clone();
        watch::run(cfg, &mut printer, exports, shutdown).await
    });
    // The screen is restored by now (dropped with the shutdown future): what was logged, then
    // the run's summary go to the normal terminal, as `watch` prints them.
    let logged = aside.restore();
    if !logged.is_empty() {
        let _ = io::stderr().write_all(logged.as_bytes());
    }
    let m = model.0.borrow();
    if let Some(s) = &m.summary {
        let mut p = HumanPrinter::new(io::sink(), io::stderr().lock());
        p.summary(s).context("writing the summary")?;
    }
    result
}
