//! Export lab: the first-SYN-drop lab (an nftables rule drops the first SYN of each new flow to
//! port 8080, so each connect takes ~1 s) watched by `netlat watch --listen … --hlog …`, scraped
//! by a real Prometheus server on loopback. Prometheus's HTTP API must show the 3 slow connects
//! in the ≤ 1.5 s bucket and none ≤ 0.5 s; the interval log, read back with the hdrhistogram
//! crate's reader, must hold them under their (cause, destination) tag, also when the only
//! interval is the one written at SIGINT; `netlat report` must table and plot it.
//!
//! Also checked here, without root: bad export flags fail before eBPF loads, and
//! deploy/daemonset.yaml parses as a privileged DaemonSet.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hdrhistogram::{
    Histogram,
    serialization::{
        Deserializer,
        interval_log::{IntervalLogIterator, LogEntry},
    },
};
use netlat_tests::{
    ChildGuard, Netns, TempDir, Watch, connect_times, connects_to, first_syn_drop, free_port,
    http_get, is_root, netlat_bin, tcp_server, veth,
};
use serde::Deserialize as _;

/// The verdict of the first-SYN drop (a look-alike: a rule in a table dropped it).
const CAUSE: &str = "netfilter-rule-drop";

/// Client and server namespaces joined on `10.239.<net>.0/24`, the drop rule
/// ([`first_syn_drop`]: the first SYN of each new flow to 8080 is dropped), a server on 8080
/// and 8081. Interface names carry the PID so parallel runs never collide.
fn lab(tag: &str, net: u8) -> (Netns, Netns, ChildGuard) {
    let client = Netns::new(&format!("{tag}c"));
    let server = Netns::new(&format!("{tag}s"));
    let pid = std::process::id();
    veth(
        &client,
        &format!("{tag}{pid}a"),
        &format!("10.239.{net}.1/24"),
        &server,
        &format!("{tag}{pid}b"),
        &format!("10.239.{net}.2/24"),
    );
    server.nft(&first_syn_drop("labexp", 8080));
    let srv = tcp_server(&server, &[8080, 8081]);
    (client, server, srv)
}

/// Percent-encode a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus server on loopback scraping `target_port` every second, killed (by PID) and its
/// storage removed on drop.
struct Prometheus {
    _child: ChildGuard,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target_port: u16) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: netlat\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("prometheus log");
        let err = out.try_clone().expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start prometheus (installed by `cargo xtask setup`)");
        let p = Prometheus {
            _child: ChildGuard(child),
            port,
            log,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            matches!(http_get(port, "/-/ready"), Ok((200, _))).then_some(())
        });
        assert!(ready.is_some(), "prometheus not ready:\n{}", p.log_text());
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The instant vector of `query` (the `data.result` array).
    fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let target = format!("/api/v1/query?query={}", encode(query));
        let (status, body) = http_get(self.port, &target).expect("query prometheus");
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The bucket series of (cause, dst) by `le`, as Prometheus reports them.
fn buckets(results: &[serde_json::Value], dst: &str) -> Vec<(String, String)> {
    results
        .iter()
        .filter(|r| r["metric"]["cause"] == CAUSE && r["metric"]["dst"] == dst)
        .filter_map(|r| {
            Some((
                r["metric"]["le"].as_str()?.to_string(),
                r["value"][1].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Every interval of an hlog file: (tag, histogram), read with the hdrhistogram crate.
fn read_hlog(path: &Path) -> Vec<(Option<String>, Histogram<u64>)> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).expect("read the hlog");
    let mut de = Deserializer::new();
    IntervalLogIterator::new(&bytes)
        .filter_map(|e| match e.expect("a parsable interval log") {
            LogEntry::Interval(i) => Some(i),
            _ => None,
        })
        .map(|i| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(i.encoded_histogram())
                .expect("base64 histogram");
            let h: Histogram<u64> = de.deserialize(&mut &raw[..]).expect("V2 histogram");
            (i.tag().map(|t| t.to_string()), h)
        })
        .collect()
}

/// Samples under `tag`, and each must be a ~1 s connect (µs).
fn tagged_samples(ivs: &[(Option<String>, Histogram<u64>)], tag: &str) -> u64 {
    let mut n = 0;
    for (_, h) in ivs.iter().filter(|(t, _)| t.as_deref() == Some(tag)) {
        for v in h.iter_recorded() {
            let us = v.value_iterated_to();
            assert!((900_000..1_500_000).contains(&us), "{tag}: {us} µs");
        }
        n += h.len();
    }
    n
}

/// Why the connects to `dst` were not all named [`CAUSE`]: their verdicts and the kernel's
/// lost-event counts (a ring-buffer overflow, e.g. from a drop-heavy test running beside this
/// one, hides the drops a verdict needs).
fn explain(lines: &[serde_json::Value], dst: &str) -> String {
    let verdicts: Vec<String> = connects_to(lines, dst)
        .iter()
        .map(|l| {
            format!(
                "{} ms {} ({} drops)",
                l["connect_ms"],
                l["verdict"]["issue"],
                l["drops"].as_array().map_or(0, Vec::len)
            )
        })
        .collect();
    let lost = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .map(|v| v["lost_events"].to_string())
        .unwrap_or_default();
    format!("connects to {dst}: {verdicts:?}; kernel events lost: {lost}")
}

/// Position of the first line matching `pred`.
fn position(lines: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    lines
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no such line in {lines:#?}"))
}

#[test]
fn lab_export_prometheus_scrapes_the_retry_ladder_buckets() {
    assert!(is_root(), "the lab tests need root");
    assert!(
        Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "prometheus is not installed: run `cargo xtask setup`"
    );
    let tmp = TempDir::new("export");
    let (client, _server, _srv) = lab("x", 0);
    let dst = "10.239.0.2:8080";

    let metrics_port = free_port();
    let hlog = tmp.0.join("run.hlog");
    let hlog_arg = hlog.display().to_string();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut watch = Watch::start(&[
        "--listen",
        &listen,
        "--hlog",
        &hlog_arg,
        "--summary-interval",
        "1",
    ]);
    let prom = Prometheus::start(&tmp.0, metrics_port);

    let times = connect_times(
        &client,
        &[
            ("10.239.0.2", 8080),
            ("10.239.0.2", 8081),
            ("10.239.0.2", 8080),
            ("10.239.0.2", 8080),
        ],
        10.0,
    );
    assert_eq!(times.len(), 4, "client output: {times:?}");
    for (i, t) in times.iter().enumerate() {
        let t = t.unwrap_or_else(|| panic!("connect {i} failed"));
        let want = if i == 1 { 0.0..0.2 } else { 0.9..1.5 };
        assert!(want.contains(&t), "connect {i} took {t} s");
    }

    // The periodic histogram line (every second) shows them per destination and cause.
    let hist = watch.wait_for(
        |v| v["type"] == "histogram" && v["by_dst"][dst]["count"] == 3,
        Duration::from_secs(15),
    );
    let Some(hist) = hist.filter(|h| h["by_cause"][CAUSE]["count"].as_u64() >= Some(3)) else {
        let (_, lines) = watch.stop();
        panic!(
            "no histogram line with 3 slow connects named {CAUSE}: {}",
            explain(&lines, dst)
        );
    };
    assert_eq!(hist["at_exit"], false);
    let p50 = hist["by_dst"][dst]["p50_ms"].as_f64().unwrap_or(0.0);
    assert!((900.0..1500.0).contains(&p50), "{hist}");
    assert!(hist["syn_retries"][1].as_u64() >= Some(3), "{hist}");

    // Prometheus scraped netlat: 3 in the 1.5 s bucket, none by 0.5 s.
    let series = wait_until(Duration::from_secs(30), || {
        let b = buckets(&prom.query("netlat_connect_duration_seconds_bucket"), dst);
        b.iter().any(|(le, v)| le == "1.5" && v == "3").then_some(b)
    });
    let series = series.unwrap_or_else(|| {
        panic!(
            "prometheus never saw 3 connects in le=1.5: {:#?}\nlog:\n{}",
            prom.query("netlat_connect_duration_seconds_bucket"),
            prom.log_text()
        )
    });
    let at = |le: &str| {
        series
            .iter()
            .find(|(l, _)| l == le)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(at("0.5"), Some("0"), "{series:?}");
    assert_eq!(at("0.2"), Some("0"), "{series:?}");
    assert_eq!(at("2.0"), Some("3"), "{series:?}");
    assert_eq!(at("+Inf"), Some("3"), "{series:?}");
    // The SYN-retry delay has its own histogram on the same buckets: each connect waited ~1 s
    // for its one retry, and the destination has no Service (empty label).
    let retry = wait_until(Duration::from_secs(30), || {
        let b = buckets(&prom.query("netlat_syn_retry_delay_seconds_bucket"), dst);
        b.iter().any(|(le, v)| le == "1.5" && v == "3").then_some(b)
    })
    .unwrap_or_else(|| {
        panic!(
            "prometheus never saw 3 retry delays in le=1.5: {:#?}",
            prom.query("netlat_syn_retry_delay_seconds_bucket")
        )
    });
    let retry_at = |le: &str| retry.iter().find(|(l, _)| l == le).map(|(_, v)| v.as_str());
    assert_eq!(retry_at("0.5"), Some("0"), "{retry:?}");
    assert_eq!(retry_at("+Inf"), Some("3"), "{retry:?}");
    let labels = prom.query("netlat_syn_retry_delay_seconds_count");
    assert!(
        labels
            .iter()
            .any(|r| r["metric"]["dst"] == dst && r["metric"]["service"].is_null()),
        "{labels:#?}"
    );
    let slow = prom.query(&format!("netlat_slow_connects_total{{cause=\"{CAUSE}\"}}"));
    let slow: f64 = slow
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0);
    assert!(slow >= 3.0, "netlat_slow_connects_total {slow}");
    let hooks = prom.query("netlat_hook_info");
    assert!(
        hooks.iter().any(|r| r["metric"]["active"] == "true"
            && r["metric"]["hook"]
                .as_str()
                .is_some_and(|h| h.contains("inet_sock_set_state"))),
        "{hooks:#?}"
    );
    let lost = prom.query("netlat_lost_events_total");
    assert!(
        lost.iter().any(|r| r["metric"]["kind"] == "drop"),
        "{lost:#?}"
    );
    // The endpoint itself: /metrics only.
    let (status, body) = http_get(metrics_port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "{body}");
    // The kernel's count of skipped runs (fdinfo `recursion_misses`, 5.12+) is read for each
    // attached program, the state-change one among them.
    assert!(
        body.lines()
            .any(|l| l.starts_with("netlat_skipped_runs_total{program=\"inet_sock_set_state")),
        "{body}"
    );
    assert_eq!(http_get(metrics_port, "/").map(|r| r.0).ok(), Some(404));

    std::thread::sleep(Duration::from_millis(200));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    assert_eq!(connects_to(&lines, dst).len(), 3);
    // The histogram at exit comes right before the final summary line, which is the last.
    let last_hist = position(&lines, |v| v["type"] == "histogram" && v["at_exit"] == true);
    let summary = position(&lines, |v| v["type"] == "summary");
    assert_eq!(summary, lines.len() - 1, "summary is the last line");
    assert_eq!(last_hist + 1, summary, "histogram right before the summary");
    assert_eq!(lines[last_hist]["by_dst"][dst]["count"], 3);

    // The interval log: the crate's reader finds the 3 under their tag.
    let ivs = read_hlog(&hlog);
    let tag = format!("{CAUSE}/{dst}");
    assert_eq!(tagged_samples(&ivs, &tag), 3, "{ivs:?}");
    let untagged: u64 = ivs
        .iter()
        .filter(|(t, _)| t.is_none())
        .map(|(_, h)| h.len())
        .sum();
    assert!(untagged >= 3, "untagged total {untagged}");
    assert!(
        ivs.iter().filter(|(t, _)| t.is_none()).count() >= 2,
        "one interval per second plus the last"
    );

    // `netlat report` tables and plots it.
    let svg = tmp.0.join("latency.svg");
    let out = Command::new(netlat_bin())
        .arg("report")
        .arg(&hlog)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run netlat report");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with(dst))
        .unwrap_or_else(|| panic!("no row for {dst}:\n{table}"));
    assert_eq!(row.split_whitespace().nth(1), Some("3"), "{table}");
    assert!(table.lines().any(|l| l.starts_with(CAUSE)), "{table}");
    let doc = std::fs::read_to_string(&svg).expect("the plot");
    assert!(doc.starts_with("<?xml") && doc.trim_end().ends_with("</svg>"));
    assert!(doc.contains("<polyline") && doc.contains(CAUSE));
}

#[test]
fn lab_export_hlog_is_flushed_on_sigint() {
    assert!(is_root(), "the lab tests need root");
    let tmp = TempDir::new("export-int");
    let (client, _server, _srv) = lab("y", 1);
    let dst = "10.239.1.2:8080";
    let hlog = tmp.0.join("exit.hlog");
    let hlog_arg = hlog.display().to_string();
    // No periodic intervals: only the flush at exit can put the connect in the log.
    let mut watch = Watch::start(&["--hlog", &hlog_arg, "--summary-interval", "0"]);
    let times = connect_times(&client, &[("10.239.1.2", 8080)], 10.0);
    assert!(
        times.first().copied().flatten().is_some_and(|t| t > 0.9),
        "{times:?}"
    );
    assert!(
        watch
            .wait_for(
                |v| v["type"] == "connect" && v["dst"] == dst,
                Duration::from_secs(10)
            )
            .is_some(),
        "no connect line"
    );
    let before = read_hlog(&hlog);
    assert!(before.is_empty(), "intervals before exit: {before:?}");
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    let hists: Vec<_> = lines.iter().filter(|v| v["type"] == "histogram").collect();
    assert_eq!(hists.len(), 1, "only the summary at exit: {hists:#?}");
    assert_eq!(hists[0]["at_exit"], true);
    assert_eq!(hists[0]["by_dst"][dst]["count"], 1);
    // The tag of the connect's verdict, whichever it is: this test is about the flush (the
    // other lab test checks the verdict).
    let verdict = connects_to(&lines, dst)
        .first()
        .and_then(|l| l["verdict"]["issue"].as_str().map(str::to_string))
        .unwrap_or_else(|| "none".into());
    let ivs = read_hlog(&hlog);
    assert_eq!(
        tagged_samples(&ivs, &format!("{verdict}/{dst}")),
        1,
        "{ivs:?}\n{}",
        explain(&lines, dst)
    );
    assert_eq!(ivs.iter().filter(|(t, _)| t.is_none()).count(), 1);
}

/// Run `netlat watch ARGS` expecting it to fail at once: (exit code, stderr lines).
fn failing_watch(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = Command::new(netlat_bin())
        .arg("watch")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run netlat");
    let err = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    (out.status.code(), err)
}

#[test]
fn export_flags_fail_before_loading() {
    // Not root-only: the flags are checked before anything needs privileges.
    let (code, err) = failing_watch(&["--hlog", "/nonexistent-netlat-dir/x.hlog"]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].starts_with(
            "netlat: error: cannot write the --hlog file /nonexistent-netlat-dir/x.hlog: "
        ),
        "{err:?}"
    );

    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (code, err) = failing_watch(&["--listen", &port.to_string()]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].starts_with(&format!(
            "netlat: error: cannot listen on 127.0.0.1:{port} (--listen): "
        )),
        "{err:?}"
    );

    for bad in ["localhost:9090", "1.2.3.4:99999", ":0"] {
        let (code, err) = failing_watch(&["--listen", bad]);
        assert_eq!(code, Some(2), "{bad}: {err:?}");
        assert_eq!(err.len(), 1, "one line: {err:?}");
        assert!(err[0].contains("--listen"), "{err:?}");
    }
}

#[test]
fn daemonset_manifest_is_a_privileged_daemonset() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/daemonset.yaml");
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("a YAML document"))
        .collect();
    for d in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{d}");
        assert!(d["metadata"]["name"].is_string(), "{d}");
    }
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let tpl = &ds["spec"]["template"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"],
        "the selector must match the Pod labels"
    );
    let ann = &tpl["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9090");
    let spec = &tpl["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostPID"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        args,
        ["watch", "--output", "json", "--listen", "0.0.0.0:9090"]
    );
    let volumes = spec["volumes"].as_array().expect("volumes");
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
    };
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    for (host, in_pod) in [
        ("/sys/kernel/tracing", "/sys/kernel/tracing"),
        ("/sys/fs/bpf", "/sys/fs/bpf"),
        ("/sys/kernel/btf", "/sys/kernel/btf"),
        ("/proc", "/host/proc"),
        ("/run/netns", "/run/netns"),
    ] {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == in_pod)
            .unwrap_or_else(|| panic!("no mount at {in_pod}"));
        let name = m["name"].as_str().expect("mount name");
        assert_eq!(host_path(name), Some(host), "volume {name}");
    }
}
