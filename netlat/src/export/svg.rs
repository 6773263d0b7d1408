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

/// Render the plot (a complete SVG document).
pub fn render(title: &str, series: &[Series]) -> String {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (mut lo, mut hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v.max(0.001)), hi.max(v))
    });
    if !lo.is_finite() {
        // Nothing recorded: an empty 1 ms … 100 s frame.
        (lo, hi) = (1.0, 100_000.0);
    }
    // Whole decades, at least one wide.
    let lo_exp = lo.log10().floor() as i32;
    let hi_exp = (hi.log10().ceil() as i32).max(lo_exp + 1);
    // 1-2-5 ticks over a few decades (slow connects often sit within 1 … 10 s), decades only
    // over a wide range.
    let steps: &[f64] = if hi_exp - lo_exp <= 3 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let ticks: Vec<f64> = (lo_exp..hi_exp)
        .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
        .chain(std::iter::once(10f64.powi(hi_exp)))
        .collect();
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ms: f64| {
        LEFT + (ms.max(0.001).log10() - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp) * plot_w
    };
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
        // 100 ms … 100 s on the axis, in 1-2-5 steps.
        for t in [
            "100 ms", "200 ms", "500 ms", "1 s", "2 s", "5 s", "10 s", "100 s",
        ] {
            assert!(doc.contains(&format!(">{t}</text>")), "tick {t}");
        }
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
