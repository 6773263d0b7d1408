//! A hand-written SVG plot of connect-latency distributions: one step line per cause of the
//! cumulative distribution over a log-scaled latency axis, with a legend and axis labels. No
//! plotting dependency: the picture is a few dozen elements.

use std::fmt::Write as _;

/// One line of the plot: a name and its distribution as (latency ms, count) pairs, ascending.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, u64)>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 260.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// Line colours (colour-blind friendly, Okabe–Ito), reused in turn.
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Escape text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A latency tick label: ms below a second, s above.
fn tick_label(ms: f64) -> String {
    // Rounded so 10^-3 prints as 0.001, not 0.0010000000000000002.
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    if ms >= 1000.0 {
        format!("{} s", r(ms / 1000.0))
    } else {
        format!("{} ms", r(ms))
    }
}

/// When the kernel resends an unanswered SYN, in ms after the first: before 6.5 (and with
/// `tcp_syn_linear_timeouts=0`) the RTO doubles from 1 s.
pub const LADDER_MS: [f64; 7] = [
    1_000.0, 3_000.0, 7_000.0, 15_000.0, 31_000.0, 63_000.0, 127_000.0,
];
/// From 6.5 (`tcp_syn_linear_timeouts=4`): five resends 1 s apart, then doubling.
pub const LINEAR_LADDER_MS: [f64; 10] = [
    1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 7_000.0, 11_000.0, 19_000.0, 35_000.0, 67_000.0,
];

/// Room kept between the data and the frame, as a factor on the log axis.
const PAD: f64 = 1.1;

/// The axis: its ends and its ticks (1-2-5 over a few decades, decades over a wide range).
/// The ends are ticks or ladder steps beyond the data with room to spare, so a population
/// at one value (all 1 s connects) is drawn inside the frame, not on its edge.
fn axis(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let span = (hi / lo).log10();
    let steps: &[f64] = if span <= 2.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let lo_exp = (lo / PAD).log10().floor() as i32 - 1;
    let hi_exp = (hi * PAD).log10().ceil() as i32 + 1;
    let nice: Vec<f64> = (lo_exp..=hi_exp)
        .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
        .collect();
    let ends = nice.iter().chain(&LADDER_MS).copied();
    let start = ends
        .clone()
        .filter(|v| *v <= lo / PAD)
        .fold(f64::NEG_INFINITY, f64::max);
    let end = ends
        .filter(|v| *v >= hi * PAD)
        .fold(f64::INFINITY, f64::min);
    let mut ticks: Vec<f64> = nice
        .into_iter()
        .filter(|v| (start..=end).contains(v))
        .collect();
    for v in [start, end] {
        if !ticks.iter().any(|t| (t / v - 1.0).abs() < 1e-9) {
            ticks.push(v);
        }
    }
    ticks.sort_by(f64::total_cmp);
    (start, end, ticks)
}

/// The SYN ladder's times inside the axis: dashed (< 6.5) and dotted (≥ 6.5 only) lines
/// across the plot, each labelled above the frame, and a key under the legend, so a reader
/// sees which retry a cause costs.
fn ladder_marks(s: &mut String, start: f64, end: f64, x: &dyn Fn(f64) -> f64) {
    let inside = |ms: &f64| (start..=end).contains(ms);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let _ = writeln!(
        s,
        r##"<g stroke="#777777" stroke-width="1" fill="#555555" font-size="10" text-anchor="middle">"##
    );
    for (times, dash) in [(&LADDER_MS[..], "6 3"), (&LINEAR_LADDER_MS[..], "1 3")] {
        for ms in times.iter().filter(|m| inside(m)) {
            // A time both ladders share is drawn once, dashed.
            if dash == "1 3" && LADDER_MS.contains(ms) {
                continue;
            }
            let xv = x(*ms);
            let _ = writeln!(
                s,
                r#"<line class="ladder" x1="{xv:.1}" y1="{TOP}" x2="{xv:.1}" y2="{:.1}" stroke-dasharray="{dash}"><title>SYN retry at {}</title></line>"#,
                TOP + plot_h,
                escape(&tick_label(*ms))
            );
            let _ = writeln!(
                s,
                r#"<text x="{xv:.1}" y="{:.1}" stroke="none">{}</text>"#,
                TOP - 6.0,
                ms / 1000.0
            );
        }
    }
    let _ = writeln!(s, "</g>");
    let lx = WIDTH - RIGHT + 20.0;
    let ly = HEIGHT - BOTTOM - 40.0;
    let _ = writeln!(
        s,
        r##"<g font-size="10" fill="#333333" stroke="#777777"><line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" stroke="none">SYN retries: 1, 3, 7 … 63 s</text><line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke-dasharray="1 3"/><text x="{:.1}" y="{:.1}" stroke="none">from 6.5: 1, 2, 3 … 67 s</text></g>"##,
        lx + 24.0,
        lx + 30.0,
        ly + 4.0,
        ly + 16.0,
        lx + 24.0,
        ly + 16.0,
        lx + 30.0,
        ly + 20.0
    );
}

/// Render the plot (a complete SVG document).
pub fn render(title: &str, series: &[Series]) -> String {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (mut lo, mut hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v.max(0.001)), hi.max(v.max(0.001)))
    });
    if !lo.is_finite() {
        // Nothing recorded: an empty 1 ms … 100 s frame.
        (lo, hi) = (1.1, 90_000.0);
    }
    let (start, end, ticks) = axis(lo, hi);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ms: f64| LEFT + (ms.max(0.001) / start).log10() / (end / start).log10() * plot_w;
    let y = |frac: f64| TOP + (1.0 - frac) * plot_h;

    let mut s = String::new();
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>
<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and ticks: 1-2-5 or decades on x, quarters on y.
    let _ = writeln!(s, r##"<g stroke="#dddddd" stroke-width="1">"##);
    for &ms in &ticks {
        let xv = x(ms);
        let _ = writeln!(
            s,
            r#"<line x1="{xv:.1}" y1="{TOP}" x2="{xv:.1}" y2="{:.1}"/>"#,
            TOP + plot_h
        );
    }
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let yv = y(q);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{yv:.1}" x2="{:.1}" y2="{yv:.1}"/>"#,
            LEFT + plot_w
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g fill="#333333">"##);
    for &ms in &ticks {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(ms),
            TOP + plot_h + 18.0,
            escape(&tick_label(ms))
        );
    }
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"#,
            LEFT - 8.0,
            y(q) + 4.0,
            q * 100.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">connect latency (log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">share of slow connects at most this slow</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333333"/>"##
    );

    ladder_marks(&mut s, start, end, &x);
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let total: u64 = ser.points.iter().map(|p| p.1).sum();
        let mut pts = Vec::with_capacity(ser.points.len() * 2);
        let mut cum = 0u64;
        for &(ms, n) in &ser.points {
            let before = cum as f64 / total.max(1) as f64;
            cum += n;
            let after = cum as f64 / total.max(1) as f64;
            // A step: the share jumps at each recorded latency.
            pts.push(format!("{:.1},{:.1}", x(ms), y(before)));
            pts.push(format!("{:.1},{:.1}", x(ms), y(after)));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            escape(&ser.name)
        );
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + plot_w + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} ({total})</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal XML well-formedness check: every tag closes in order, attributes are quoted,
    /// entities are known, and there is one root. Returns the element names in order.
    pub(crate) fn check_xml(doc: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = doc;
        let mut roots = 0;
        let check_text = |t: &str| -> Result<(), String> {
            if t.contains('<') {
                return Err(format!("raw < in {t:?}"));
            }
            let mut parts = t.split('&');
            parts.next();
            for p in parts {
                let ent = p.split(';').next().unwrap_or("");
                if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                    return Err(format!("unknown entity &{ent}; in {t:?}"));
                }
            }
            Ok(())
        };
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            check_text(text)?;
            let end = rest[start..].find('>').ok_or("unclosed tag")? + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(decl) = tag.strip_prefix('?') {
                if !decl.ends_with('?') || !names.is_empty() {
                    return Err(format!("bad declaration {tag:?}"));
                }
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("stray </{name}>"))?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body
                .split_whitespace()
                .next()
                .ok_or("empty tag")?
                .to_string();
            // Attributes: name="value" pairs with balanced quotes.
            let mut attrs = body[name.len()..].trim();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .ok_or(format!("attribute without = in <{name}>"))?;
                let after = &attrs[eq + 1..];
                let q = after.chars().next().ok_or("no value")?;
                if q != '"' && q != '\'' {
                    return Err(format!("unquoted attribute in <{name}>"));
                }
                let close = after[1..].find(q).ok_or("unclosed attribute")? + 1;
                check_text(&after[1..close])?;
                attrs = after[close + 1..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 || !rest.trim().is_empty() {
            return Err("not exactly one root element".into());
        }
        Ok(names)
    }

    #[test]
    fn plot_is_well_formed_svg_with_one_line_per_cause() {
        let series = vec![
            Series {
                name: "netfilter-rule-drop".into(),
                points: vec![(1015.0, 2), (1031.0, 1)],
            },
            Series {
                name: "none <odd & \"name\">".into(),
                points: vec![(250.0, 1), (3050.0, 1), (63_000.0, 1)],
            },
        ];
        let doc = render("latency & co", &series);
        let names = check_xml(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_eq!(names[0], "svg");
        assert!(doc.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 2);
        assert!(doc.contains("netfilter-rule-drop (3)"));
        assert!(doc.contains("none &lt;odd &amp; &quot;name&quot;&gt; (3)"));
        assert!(doc.contains("connect latency (log scale)"));
        // 200 ms … 100 s on the axis (a step beyond the data each side), in 1-2-5 steps.
        for t in [
            "200 ms", "500 ms", "1 s", "2 s", "5 s", "10 s", "20 s", "50 s", "100 s",
        ] {
            assert!(doc.contains(&format!(">{t}</text>")), "tick {t}");
        }
        assert!(!doc.contains(">100 ms</text>"));
        // The ladder up to 63 s (and 67 s from 6.5) is marked.
        let marks = doc.matches("class=\"ladder\"").count();
        // 1, 3, 7, 15, 31, 63 s and, from 6.5 only, 2, 4, 5, 11, 19, 35, 67 s.
        assert_eq!(marks, 6 + 7, "{doc}");
        assert!(doc.contains("<title>SYN retry at 63 s</title>"));
        assert!(doc.contains("<title>SYN retry at 67 s</title>"));
        // Every point lies inside the plot frame.
        for poly in doc.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = poly
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            for p in pts.split(' ') {
                let (px, py) = p.split_once(',').unwrap();
                let (px, py): (f64, f64) = (px.parse().unwrap(), py.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&px), "{p}");
                assert!((TOP..=HEIGHT - BOTTOM).contains(&py), "{p}");
            }
        }
        // The last point of each line is at 100 %.
        assert!(doc.contains(&format!(",{TOP:.1}\"")));
    }

    /// The points of each polyline, as (x, y).
    fn points(doc: &str) -> Vec<(f64, f64)> {
        doc.lines()
            .filter(|l| l.starts_with("<polyline"))
            .flat_map(|l| {
                let pts = l
                    .split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                pts.split(' ')
                    .map(|p| {
                        let (px, py) = p.split_once(',').unwrap();
                        (px.parse().unwrap(), py.parse().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Two IPv6 connects of 1.0 and 1.02 s once drew as a vertical line on the frame's left
    /// edge: the axis started exactly at the smallest value.
    #[test]
    fn a_population_of_one_second_connects_is_not_drawn_on_the_frame_edge() {
        let doc = render(
            "1 s",
            &[Series {
                name: "netfilter-rule-drop".into(),
                points: vec![(1000.0, 1), (1020.0, 1)],
            }],
        );
        check_xml(&doc).unwrap();
        let plot_w = WIDTH - LEFT - RIGHT;
        for (px, _) in points(&doc) {
            assert!(
                px > LEFT + plot_w * 0.2 && px < WIDTH - RIGHT - plot_w * 0.2,
                "{px}\n{doc}"
            );
        }
        // Padded to whole steps: 500 ms … 2 s, and the first retry marked at 1 s (the data).
        assert!(
            doc.contains(">500 ms</text>") && doc.contains(">2 s</text>"),
            "{doc}"
        );
        let one_s = doc
            .lines()
            .find(|l| l.contains("<title>SYN retry at 1 s</title>"))
            .unwrap();
        let x1: f64 = one_s
            .split("x1=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((points(&doc)[0].0 - x1).abs() < 0.2, "{one_s}");
        // One value only (a single connect) also stays inside.
        let doc = render(
            "one",
            &[Series {
                name: "x".into(),
                points: vec![(63_000.0, 1)],
            }],
        );
        for (px, _) in points(&doc) {
            assert!(px > LEFT + 1.0 && px < WIDTH - RIGHT - 1.0, "{px}");
        }
    }

    #[test]
    fn empty_plot_is_still_a_document() {
        let doc = render("nothing", &[]);
        check_xml(&doc).unwrap();
        assert!(!doc.contains("<polyline"));
        assert!(check_xml("<a><b></a></b>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>&bogus;</a>").is_err());
    }
}
