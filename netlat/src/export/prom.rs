//! `--listen ADDR`: Prometheus metrics (OpenMetrics text, `prometheus-client`) on a minimal
//! HTTP/1.1 responder: `GET /metrics` (and `HEAD`) answer, every other path is 404. One
//! request per connection, bounded time and size, a few connections at once: enough for a
//! scraper, nothing for anyone else to lean on.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use netlat_core::report::Hook;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Histogram buckets (seconds) along the SYN retry ladder: sub-second for ordinary slowness,
/// then the moments a connect completes after 1, 2, 3 … lost SYNs (RTO 1 s doubling: 1, 3, 7,
/// 15, 31, 63 s; with a 200 ms floor or jitter around them) and the ~67 s of issue C on ≥ 6.5.
pub const BUCKETS: [f64; 20] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0,
    63.0, 67.0, 131.0,
];

/// Longest a scraper may take to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read; anything longer is answered 431.
const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 8;

/// Labels of the per-destination histograms: cause, `ip:port`, the Kubernetes Service (empty
/// when unknown) and the connecting pod's namespace (empty when not from a pod). The Service
/// follows from the destination, so it adds no series beyond the bounded destinations; the
/// namespace is bounded too, and there is no per-pod label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectLabels {
    cause: String,
    dst: String,
    service: String,
    namespace: String,
}

impl ConnectLabels {
    pub fn new(cause: &str, dst: &str, service: &str) -> Self {
        ConnectLabels {
            cause: cause.into(),
            dst: dst.into(),
            service: service.into(),
            namespace: String::new(),
        }
    }

    /// The same labels for a connect from a pod in `namespace`.
    #[must_use]
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    evidence: String,
    hook: String,
    active: String,
}

fn ladder_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The metrics netlat exports; cheap handles onto the registry the server encodes.
pub struct Metrics {
    registry: Arc<Registry>,
    connect: Family<ConnectLabels, Histogram, fn() -> Histogram>,
    retry_delay: Family<ConnectLabels, Histogram, fn() -> Histogram>,
    slow: Family<CauseLabels, Counter>,
    drops: Family<CauseLabels, Counter>,
    lost: Family<KindLabels, Counter>,
    skipped: Family<ProgramLabels, Counter>,
    /// Kernel totals already added to `lost` (the kernel counts; Prometheus counters only rise).
    lost_seen: BTreeMap<String, u64>,
    hooks: Family<HookLabels, Gauge>,
    ends_missed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let connect = Family::<ConnectLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            ladder_histogram,
        );
        let retry_delay =
            Family::<ConnectLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                ladder_histogram,
            );
        let slow = Family::<CauseLabels, Counter>::default();
        let drops = Family::<CauseLabels, Counter>::default();
        let lost = Family::<KindLabels, Counter>::default();
        let skipped = Family::<ProgramLabels, Counter>::default();
        let hooks = Family::<HookLabels, Gauge>::default();
        let ends_missed = Counter::default();
        let mut r = Registry::default();
        r.register(
            "netlat_connect_duration_seconds",
            "Duration of slow TCP connection attempts by cause (verdict id, none when no known \
             issue fits), destination ip:port and Kubernetes Service (empty when unknown)",
            connect.clone(),
        );
        r.register(
            "netlat_syn_retry_delay_seconds",
            "Delay SYN retransmits added to slow TCP connection attempts (first SYN to the last \
             retransmitted SYN), by cause, destination ip:port and Kubernetes Service",
            retry_delay.clone(),
        );
        r.register(
            "netlat_slow_connects",
            "Slow TCP connection attempts by cause",
            slow.clone(),
        );
        r.register(
            "netlat_drops",
            "Packet drops reported on their own (no local connect claimed them) by cause",
            drops.clone(),
        );
        r.register(
            "netlat_lost_events",
            "Kernel events lost because the ring buffer was full, by kind",
            lost.clone(),
        );
        r.register(
            "netlat_skipped_runs",
            "Runs of netlat's eBPF programs the kernel skipped because a run of the same \
             program was in progress on that CPU (its event reached no program), by program",
            skipped.clone(),
        );
        r.register(
            "netlat_kernel_ends_missed",
            "Connection attempts whose end no eBPF program saw (their socket left SYN_SENT \
             unseen): freed from the kernel's attempt table by its sweep, or found at stop; \
             never reported as pending",
            ends_missed.clone(),
        );
        r.register(
            "netlat_hook_info",
            "Evidence sources (kernel hooks) and whether each is active on this kernel",
            hooks.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            connect,
            retry_delay,
            slow,
            drops,
            lost,
            skipped,
            lost_seen: BTreeMap::new(),
            hooks,
            ends_missed,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    pub fn observe_connect(&self, labels: &ConnectLabels, seconds: f64) {
        self.connect.get_or_create(labels).observe(seconds);
        self.slow
            .get_or_create(&CauseLabels {
                cause: labels.cause.clone(),
            })
            .inc();
    }

    pub fn observe_retry_delay(&self, labels: &ConnectLabels, seconds: f64) {
        self.retry_delay.get_or_create(labels).observe(seconds);
    }

    pub fn count_drop(&self, cause: &str) {
        self.drops
            .get_or_create(&CauseLabels {
                cause: cause.into(),
            })
            .inc();
    }

    /// Bring `netlat_lost_events_total` up to the kernel's totals.
    pub fn set_lost(&mut self, totals: &[(&str, u64)]) {
        for (kind, total) in totals {
            let seen = self.lost_seen.entry((*kind).to_string()).or_default();
            let c = self.lost.get_or_create(&KindLabels {
                kind: (*kind).into(),
            });
            c.inc_by(total.saturating_sub(*seen));
            *seen = (*seen).max(*total);
        }
    }

    /// Bring `netlat_skipped_runs_total` up to the kernel's totals (monotonic per program).
    pub fn set_skipped_runs(&self, totals: &[(String, u64)]) {
        for (program, total) in totals {
            let c = self.skipped.get_or_create(&ProgramLabels {
                program: program.clone(),
            });
            c.inc_by(total.saturating_sub(c.get()));
        }
    }

    /// Bring `netlat_kernel_ends_missed_total` up to the run's total.
    pub fn set_ends_missed(&self, total: u64) {
        self.ends_missed
            .inc_by(total.saturating_sub(self.ends_missed.get()));
    }

    pub fn set_hooks(&self, hooks: &[Hook]) {
        self.hooks.clear();
        for h in hooks {
            self.hooks
                .get_or_create(&HookLabels {
                    evidence: h.evidence.clone(),
                    hook: h.hook.clone(),
                    active: h.active.to_string(),
                })
                .set(1);
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        encode(&self.registry)
    }
}

fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry)?;
    Ok(s)
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The whole HTTP response to request head `head` (pure: the server and the tests share it).
pub fn respond(head: &[u8], metrics: impl FnOnce() -> Result<String, std::fmt::Error>) -> Vec<u8> {
    let reply = |status: &str, extra: &str, ctype: &str, body: &str, with_body: bool| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Connection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        if with_body {
            r.extend_from_slice(body.as_bytes());
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    if head.len() > MAX_HEAD {
        return reply(
            "431 Request Header Fields Too Large",
            "",
            text,
            "request too large\n",
            true,
        );
    }
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return reply("400 Bad Request", "", text, "bad request\n", true);
    };
    if !version.starts_with("HTTP/1.") {
        return reply("400 Bad Request", "", text, "bad request\n", true);
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return reply("404 Not Found", "", text, "not found: try /metrics\n", true);
    }
    let with_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => {
            return reply(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                text,
                "method not allowed\n",
                true,
            );
        }
    };
    match metrics() {
        Ok(body) => reply("200 OK", "", CONTENT_TYPE, &body, with_body),
        Err(_) => reply(
            "500 Internal Server Error",
            "",
            text,
            "encoding failed\n",
            true,
        ),
    }
}

/// Read one request head and answer it.
async fn handle(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if head.is_empty() {
                return Ok(());
            }
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_HEAD {
            break;
        }
    }
    let resp = respond(&head, || encode(registry));
    stream.write_all(&resp).await?;
    stream.shutdown().await
}

/// Serve `/metrics` from `registry` until the task is dropped (the runtime ends with netlat,
/// so the last values are served until exit).
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Closed only if the semaphore is dropped, which cannot happen while we hold it.
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning; the scraper retries.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &registry)).await {
                Ok(Err(e)) => tracing::debug!("metrics request: {e}"),
                Err(_) => tracing::debug!("metrics request timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        let mut m = Metrics::new();
        let nf = ConnectLabels::new("netfilter-rule-drop", "10.0.0.2:8080", "default/web:http");
        for s in [1.02, 1.03, 1.04] {
            m.observe_connect(&nf, s);
            m.observe_retry_delay(&nf, s - 0.01);
        }
        m.observe_connect(&ConnectLabels::new("none", "10.0.0.3:80", ""), 0.3);
        m.observe_connect(
            &ConnectLabels::new("none", "10.0.0.3:80", "").in_namespace("shop"),
            0.3,
        );
        m.count_drop("vxlan-csum-offload");
        m.set_lost(&[("drop", 5), ("connect", 0)]);
        m.set_lost(&[("drop", 7), ("connect", 0)]);
        m.set_ends_missed(2);
        m.set_ends_missed(3);
        // Totals, as the kernel counts them: a later read never lowers a counter.
        m.set_skipped_runs(&[
            ("inet_sock_set_state_btf".into(), 4),
            ("kfree_skb_btf".into(), 0),
        ]);
        m.set_skipped_runs(&[("inet_sock_set_state_btf".into(), 6)]);
        m.set_skipped_runs(&[("inet_sock_set_state_btf".into(), 5)]);
        m.set_hooks(&[Hook {
            evidence: "packet drops".into(),
            hook: "tracepoint skb:kfree_skb".into(),
            active: true,
            detail: String::new(),
        }]);
        m
    }

    #[test]
    fn exposition_has_every_family() {
        let text = metrics().encode().unwrap();
        for want in [
            "# TYPE netlat_connect_duration_seconds histogram",
            r#"netlat_connect_duration_seconds_bucket{le="1.0",cause="netfilter-rule-drop",dst="10.0.0.2:8080",service="default/web:http",namespace=""} 0"#,
            r#"netlat_connect_duration_seconds_bucket{le="1.5",cause="netfilter-rule-drop",dst="10.0.0.2:8080",service="default/web:http",namespace=""} 3"#,
            r#"netlat_connect_duration_seconds_bucket{le="131.0",cause="none",dst="10.0.0.3:80",service="",namespace=""} 1"#,
            r#"netlat_connect_duration_seconds_count{cause="netfilter-rule-drop",dst="10.0.0.2:8080",service="default/web:http",namespace=""} 3"#,
            "# TYPE netlat_syn_retry_delay_seconds histogram",
            r#"netlat_syn_retry_delay_seconds_bucket{le="1.0",cause="netfilter-rule-drop",dst="10.0.0.2:8080",service="default/web:http",namespace=""} 0"#,
            r#"netlat_syn_retry_delay_seconds_bucket{le="1.5",cause="netfilter-rule-drop",dst="10.0.0.2:8080",service="default/web:http",namespace=""} 3"#,
            r#"netlat_syn_retry_delay_seconds_count{cause="netfilter-rule-drop",dst="10.0.0.2:8080",service="default/web:http",namespace=""} 3"#,
            r#"netlat_slow_connects_total{cause="netfilter-rule-drop"} 3"#,
            r#"netlat_drops_total{cause="vxlan-csum-offload"} 1"#,
            r#"netlat_lost_events_total{kind="drop"} 7"#,
            r#"netlat_lost_events_total{kind="connect"} 0"#,
            "netlat_kernel_ends_missed_total 3",
            r#"netlat_skipped_runs_total{program="inet_sock_set_state_btf"} 6"#,
            r#"netlat_skipped_runs_total{program="kfree_skb_btf"} 0"#,
            r#"netlat_hook_info{evidence="packet drops",hook="tracepoint skb:kfree_skb",active="true"} 1"#,
            r#"netlat_connect_duration_seconds_count{cause="none",dst="10.0.0.3:80",service="",namespace="shop"} 1"#,
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // A connect without retries has no retry delay.
        assert!(!text.contains(r#"netlat_syn_retry_delay_seconds_count{cause="none""#));
    }

    fn status(resp: &[u8]) -> String {
        String::from_utf8_lossy(resp)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn routes() {
        let ok = || Ok("m 1\n".to_string());
        let r = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ok);
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert!(String::from_utf8_lossy(&r).ends_with("\r\n\r\nm 1\n"));
        assert!(String::from_utf8_lossy(&r).contains("Content-Length: 4\r\n"));
        let r = respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", ok);
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        let r = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", ok);
        assert!(String::from_utf8_lossy(&r).ends_with("\r\n\r\n"));
        assert_eq!(
            status(&respond(b"GET / HTTP/1.1\r\n\r\n", ok)),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(&respond(b"POST /metrics HTTP/1.1\r\n\r\n", ok)),
            "HTTP/1.1 405 Method Not Allowed"
        );
        for bad in [
            &b""[..],
            b"GET\r\n\r\n",
            b"\xff\xfe",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            assert_eq!(status(&respond(bad, ok)), "HTTP/1.1 400 Bad Request");
        }
        assert!(status(&respond(&vec![b'a'; MAX_HEAD + 1], ok)).contains("431"));
        assert!(
            status(&respond(b"GET /metrics HTTP/1.1\r\n\r\n", || Err(
                std::fmt::Error
            )))
            .contains("500")
        );
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let m = metrics();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(serve(l, m.registry()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.contains("netlat_slow_connects_total"), "{body}");
        // A client that connects and says nothing does not block the next one.
        let _idle = TcpStream::connect(addr).await.unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 404"), "{body}");
        server.abort();
    }
}
