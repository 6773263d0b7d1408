//! Booting a kernel with its initramfs under QEMU's TCG (KVM here does not boot stock kernels)
//! and reading what the guest's init reported on the result port (the second serial port; the
//! first is the console, kept as a log).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::json::{self, Value};

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub work: &'a Path,
    pub timeout: Duration,
    /// Extra kernel command line words (`netlat.only=…`).
    pub append: &'a str,
}

/// What one VM run gave.
#[derive(Default)]
pub struct Run {
    pub wall: Duration,
    /// The guest reached `NETLAT-END` (else it crashed, hung or was killed).
    pub completed: bool,
    pub timed_out: bool,
    pub console: PathBuf,
    pub results: PathBuf,
    /// `NETLAT-VERDICT` from the guest: every lab worked and netlat exited cleanly.
    pub guest_verdict: Option<String>,
    /// `NETLAT-INFO key value…`
    pub info: BTreeMap<String, String>,
    /// Scenario name → the destinations (`ip:port`) of its connects.
    pub scenarios: BTreeMap<String, Vec<String>>,
    /// Scenario name → its client lines (`i=… connect_s=… sport=… backend=… err=…`).
    pub clients: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    /// Scenario name → (lab passed, why not).
    pub labs: BTreeMap<String, (bool, String)>,
    /// netlat's JSON lines, in order.
    pub netlat: Vec<Value>,
    /// netlat lines that did not parse (with the error).
    pub bad_lines: Vec<String>,
    pub stderr: Vec<String>,
    pub errors: Vec<String>,
}

impl Run {
    pub fn info_f64(&self, key: &str) -> Option<f64> {
        self.info.get(key)?.parse().ok()
    }

    pub fn capabilities(&self) -> Option<&Value> {
        self.netlat
            .iter()
            .find(|v| v["type"].str() == "capabilities")
    }

    /// netlat's connect lines to any destination of `scenario`.
    pub fn connects(&self, scenario: &str) -> Vec<&Value> {
        let dsts = self.scenarios.get(scenario).map_or(&[][..], Vec::as_slice);
        self.netlat
            .iter()
            .filter(|v| v["type"].str() == "connect" && dsts.iter().any(|d| d == v["dst"].str()))
            .collect()
    }

    /// netlat's progress lines (`type` retry) to any destination of `scenario`.
    pub fn retries(&self, scenario: &str) -> Vec<&Value> {
        let dsts = self.scenarios.get(scenario).map_or(&[][..], Vec::as_slice);
        self.netlat
            .iter()
            .filter(|v| v["type"].str() == "retry" && dsts.iter().any(|d| d == v["dst"].str()))
            .collect()
    }

    /// The last lines of the console log, for error messages.
    pub fn console_tail(&self, n: usize) -> String {
        let text = fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<_> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n    ")
    }
}

pub fn boot(b: &Boot) -> Result<Run> {
    let console = b.work.join("console.log");
    let results = b.work.join("results.log");
    let _ = fs::remove_file(&console);
    let _ = fs::remove_file(&results);
    let qemu_stderr = b.work.join("qemu.stderr");
    let append = format!("console=ttyS0 quiet panic=-1 {}", b.append);
    // `-M pc`: with `-M microvm` the 5.10 and 6.1 kernels printed nothing and hung here. The
    // console goes to a log; the result port (ttyS1) to the file the host parses.
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "pc",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
    ])
    .args([
        "-m", "512M", "-display", "none", "-vga", "none", "-nic", "none",
    ])
    .args(["-monitor", "none", "-no-reboot"])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", results.display()))
    .arg("-kernel")
    .arg(b.vmlinuz)
    .arg("-initrd")
    .arg(b.initramfs)
    .arg("-append")
    .arg(append)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    // A file, not a pipe: nothing reads a pipe while the VM runs.
    .stderr(
        fs::File::create(&qemu_stderr)
            .with_context(|| format!("creating {}", qemu_stderr.display()))?,
    );
    let shown = crate::display(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > b.timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let wall = start.elapsed();
    let mut run = parse(&fs::read(&results).unwrap_or_default());
    run.wall = wall;
    run.timed_out = timed_out;
    run.console = console;
    run.results = results;
    if timed_out {
        run.errors.push(format!(
            "the VM did not finish within {}s and was killed",
            b.timeout.as_secs()
        ));
    } else if let Some(status) = status.filter(|s| !s.success()) {
        let stderr = fs::read_to_string(&qemu_stderr).unwrap_or_default();
        let stderr = stderr.trim();
        run.errors
            .push(format!("qemu exited with {status}: {stderr}"));
    }
    Ok(run)
}

/// Reads the result port's log.
pub fn parse(raw: &[u8]) -> Run {
    let text = String::from_utf8_lossy(raw);
    let mut run = Run::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((tag, rest)) = line.split_once(' ').or(Some((line, ""))) else {
            continue;
        };
        match tag {
            "NETLAT-END" => run.completed = true,
            "NETLAT-VERDICT" => run.guest_verdict = Some(rest.trim().to_owned()),
            "NETLAT-INFO" => {
                let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                run.info.insert(k.to_owned(), v.trim().to_owned());
            }
            "NETLAT-SCENARIO" => {
                let mut words = rest.split_whitespace();
                if let Some(name) = words.next() {
                    let dsts = run.scenarios.entry(name.to_owned()).or_default();
                    dsts.extend(
                        words
                            .filter_map(|w| w.strip_prefix("dst="))
                            .map(str::to_owned),
                    );
                }
            }
            "NETLAT-CLIENT" => {
                let mut words = rest.split_whitespace();
                if let Some(name) = words.next() {
                    let fields = words
                        .filter_map(|w| w.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    run.clients.entry(name.to_owned()).or_default().push(fields);
                }
            }
            "NETLAT-LAB" => {
                let mut words = rest.splitn(3, ' ');
                if let (Some(name), Some(verdict)) = (words.next(), words.next()) {
                    let why = words.next().unwrap_or("").trim().to_owned();
                    run.labs.insert(name.to_owned(), (verdict == "PASS", why));
                }
            }
            "NETLAT-JSON" => match json::parse(rest) {
                Ok(v) => run.netlat.push(v),
                Err(e) => run.bad_lines.push(format!("{e}: {rest}")),
            },
            "NETLAT-STDERR" => run.stderr.push(rest.to_owned()),
            "NETLAT-ERROR" => run.errors.push(rest.to_owned()),
            _ => {}
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_result_port() {
        let log = "NETLAT-BEGIN\r\nNETLAT-INFO kernel 6.1.0-56-amd64\r\n\
                   NETLAT-SCENARIO first-syn dst=10.231.0.2:8080\n\
                   NETLAT-CLIENT first-syn i=0 connect_s=1.0193 sport=47414 backend=- err=0\n\
                   NETLAT-LAB first-syn PASS\nNETLAT-LAB ipvs-stale FAIL the reconnect took 0.01 s;\n\
                   NETLAT-JSON {\"type\":\"connect\",\"dst\":\"10.231.0.2:8080\"}\n\
                   NETLAT-JSON {\"type\":\"connect\",\"dst\":\"10.9.9.9:1\"}\n\
                   NETLAT-JSON {broken\nNETLAT-VERDICT PASS\nNETLAT-END\n";
        let run = parse(log.as_bytes());
        assert!(run.completed);
        assert_eq!(run.guest_verdict.as_deref(), Some("PASS"));
        assert_eq!(run.info["kernel"], "6.1.0-56-amd64");
        assert_eq!(run.clients["first-syn"][0]["connect_s"], "1.0193");
        assert_eq!(run.labs["first-syn"], (true, String::new()));
        assert_eq!(
            run.labs["ipvs-stale"],
            (false, "the reconnect took 0.01 s;".to_owned())
        );
        assert_eq!(run.connects("first-syn").len(), 1);
        assert_eq!(run.bad_lines.len(), 1);
    }
}
