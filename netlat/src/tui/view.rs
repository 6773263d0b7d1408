//! Draws a [`Model`] at `now_ms` (ratatui): a status line, the attempts waiting now (counting
//! up), the last minute per cause and per destination, the latency distribution per cause over
//! the SYN ladder's buckets, hooks and keys. Nothing here reads a clock or the terminal.

use std::fmt::Write as _;

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph},
};

use super::model::{BUCKET_NAMES, Model};

/// A latency as a person reads it: ms below a second, s above.
fn ms_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// One bar character per bucket, scaled to the row's largest; `·` for none.
fn spark(buckets: &[u64; 8]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = buckets.iter().copied().max().unwrap_or(0).max(1);
    let mut s = String::new();
    for &n in buckets {
        if n == 0 {
            s.push_str("·   ");
        } else {
            let i = (n * 7).div_ceil(max) as usize;
            let _ = write!(s, "{}{n:<3}", BARS[i.min(7)]);
        }
    }
    s
}

fn status(m: &Model) -> String {
    let lost = m.lost_total();
    let mut s = format!(
        "netlat watch --tui  {} waiting  {} slow in the last minute  {} slow in all  lost events: {}",
        m.waiting().len(),
        m.recent_count(),
        m.slow_total,
        if lost == 0 {
            "0".to_string()
        } else {
            format!("{lost} LOST")
        }
    );
    if m.suppressed > 0 {
        s.push_str(&format!("  {} progress lines suppressed", m.suppressed));
    }
    s.push_str(&format!(
        "  cause: {}",
        m.filter.as_deref().unwrap_or("all")
    ));
    if m.paused {
        s.push_str("  PAUSED");
    }
    s
}

fn waiting_lines(m: &Model, now_ms: i64) -> Vec<Line<'static>> {
    let w = m.waiting();
    if w.is_empty() {
        return vec![Line::from("(no connect is waiting now)")];
    }
    w.iter()
        .map(|w| {
            let waited = (now_ms - w.start_ms).max(0) as f64 / 1000.0;
            let service = w
                .service
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            let was = w
                .changed_from
                .as_ref()
                .map(|c| format!(" (was {c})"))
                .unwrap_or_default();
            Line::from(format!(
                "{waited:>6.1} s  {} {} -> {}{service}  SYN retry {}  {} ({}){was}",
                w.who, w.src, w.dst, w.retries, w.cause, w.confidence
            ))
        })
        .collect()
}

fn rows_lines(rows: &[super::model::Row]) -> Vec<Line<'static>> {
    if rows.is_empty() {
        return vec![Line::from("(none)")];
    }
    rows.iter()
        .map(|r| {
            Line::from(format!(
                "{:>5}  max {:>8}  {}",
                r.count,
                ms_text(r.max_ms),
                r.key
            ))
        })
        .collect()
}

fn hooks_line(m: &Model) -> String {
    let active = m.hooks.iter().filter(|h| h.active).count();
    let missing: Vec<&str> = m
        .hooks
        .iter()
        .filter(|h| !h.active)
        .map(|h| h.evidence.as_str())
        .collect();
    let mut s = format!("hooks: {active} active");
    if !missing.is_empty() {
        s.push_str(&format!(", MISSING: {}", missing.join(", ")));
    }
    if let Some(k) = &m.kernel {
        s.push_str(&format!("  kernel {k}"));
    }
    if !m.exposed.is_empty() {
        s.push_str(&format!("  EXPOSED to {}", m.exposed.join(", ")));
    }
    if m.dropped_rows > 0 {
        s.push_str(&format!("  ({} view rows dropped)", m.dropped_rows));
    }
    s
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, m: &Model, now_ms: i64) {
    let dist = m.distribution();
    let waiting_rows = m.waiting().len().clamp(1, 12) as u16;
    let [head, waiting, tables, histo, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(waiting_rows + 2),
        Constraint::Min(5),
        Constraint::Length(dist.len().max(1) as u16 + 3),
        Constraint::Length(2),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(status(m)).style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );
    f.render_widget(
        Paragraph::new(waiting_lines(m, now_ms))
            .block(Block::bordered().title(" Waiting now (cause so far) ")),
        waiting,
    );
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(tables);
    f.render_widget(
        Paragraph::new(rows_lines(&m.by_cause()))
            .block(Block::bordered().title(" Slow, last minute, by cause ")),
        left,
    );
    f.render_widget(
        Paragraph::new(rows_lines(&m.by_dest()))
            .block(Block::bordered().title(" Slow, last minute, by destination/Service ")),
        right,
    );
    let mut lines = vec![Line::from(format!(
        "{:<26}{}",
        "",
        BUCKET_NAMES.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:<4}");
            s
        })
    ))];
    lines.extend(
        dist.iter()
            .map(|(cause, b)| Line::from(format!("{cause:<26}{}", spark(b)))),
    );
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Latency by cause (SYN ladder) ")),
        histo,
    );
    f.render_widget(
        Paragraph::new(vec![
            Line::from(hooks_line(m)),
            Line::from("keys: q quit  p pause  c next cause  a all causes"),
        ]),
        foot,
    );
}

#[cfg(test)]
mod tests {
    use netlat_core::report::Reports as _;
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::tui::model::tests::{T0, connect, retry};

    fn screen(m: &Model, now_ms: i64) -> String {
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, m, now_ms)).unwrap();
        let buf = t.backend().buffer();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_screen_shows_what_waits_and_what_was_slow() {
        let mut m = Model::default();
        m.retry(&retry(40000, "10.0.0.2:80", 1000, &[1000]))
            .unwrap();
        m.connect(&connect(40001, "10.0.0.3:80", 1020)).unwrap();
        let s = screen(&m, T0 + 2500);
        assert!(s.contains("1 waiting  1 slow in the last minute"), "{s}");
        assert!(
            s.contains(
                "2.5 s  curl[42] 10.0.0.1:40000 -> 10.0.0.2:80  SYN retry 1  unanswered-syn (low)"
            ),
            "{s}"
        );
        assert!(s.contains("max    1.0 s  10.0.0.3:80"), "{s}");
        assert!(s.contains("unanswered-syn            ·   █1"), "{s}");
        assert!(s.contains("keys: q quit"), "{s}");
        // Counting up: the same model a second later.
        assert!(screen(&m, T0 + 3500).contains("3.5 s  curl[42]"));
        m.paused = true;
        assert!(screen(&m, T0 + 3500).contains("PAUSED"));
    }
}
