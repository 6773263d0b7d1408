//! The expectations table (`tests/vm/expectations.tsv`) and how one VM run is judged against it.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::guest::Run;
use crate::json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Verdict(String),
    None,
    /// Seconds after the connect.
    Ladder(Vec<f64>),
    AllHooksActive,
    /// Every slow connect of the scenario was named with this verdict by a progress line at
    /// its first SYN retransmit, before the attempt ended.
    Early(String),
}

impl Expect {
    /// Rows override one another per scenario and kind: a scenario can be judged both for its
    /// final verdict and for how early it was named.
    fn kind(&self) -> u8 {
        match self {
            Expect::Verdict(_) | Expect::None => 0,
            Expect::Ladder(_) => 1,
            Expect::AllHooksActive => 2,
            Expect::Early(_) => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    Required,
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub expect: Expect,
    pub status: Status,
    pub note: String,
}

/// Parses the table; `kernel` picks the rows of one series (later rows override earlier ones).
pub fn rows_for(table: &str, kernel: &str) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    for (n, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<_> = line.split_whitespace().collect();
        if words.len() < 4 {
            bail!(
                "expectations line {}: want `scenario kernels expect status [note]`",
                n + 1
            );
        }
        let (scenario, kernels, expect, status) = (words[0], words[1], words[2], words[3]);
        let note = words[4..].join(" ");
        let expect = if expect == "none" {
            Expect::None
        } else if expect == "hooks:all-active" {
            Expect::AllHooksActive
        } else if let Some(ladder) = expect.strip_prefix("ladder:") {
            let secs = ladder
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<f64>, _>>()
                .map_err(|e| anyhow::anyhow!("expectations line {}: {e}", n + 1))?;
            Expect::Ladder(secs)
        } else if let Some(id) = expect.strip_prefix("early:") {
            Expect::Early(id.to_owned())
        } else if expect.contains(':') {
            bail!("expectations line {}: unknown expectation {expect}", n + 1);
        } else {
            Expect::Verdict(expect.to_owned())
        };
        let status = match status {
            "required" => Status::Required,
            "expected-unsupported" => Status::Unsupported,
            other => bail!(
                "expectations line {}: status {other} (want required or expected-unsupported)",
                n + 1
            ),
        };
        if kernels != "all" && !kernels.split(',').any(|k| k == kernel) {
            continue;
        }
        let row = Row {
            scenario: scenario.to_owned(),
            expect,
            status,
            note,
        };
        match rows
            .iter_mut()
            .find(|r| r.scenario == scenario && r.expect.kind() == row.expect.kind())
        {
            Some(r) => *r = row,
            None => rows.push(row),
        }
    }
    Ok(rows)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// Expected-unsupported and indeed not supported.
    KnownGap,
    /// Expected-unsupported but netlat now does it.
    NowPasses,
    /// The scenario was left out by `--only`.
    Skipped,
    Fail,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::KnownGap => "KNOWN GAP",
            Outcome::NowPasses => "NOW PASSES (flip to required)",
            Outcome::Skipped => "skipped",
            Outcome::Fail => "FAIL",
        }
    }
}

pub struct Judged {
    pub row: Row,
    pub outcome: Outcome,
    /// The guest's lab check ("PASS", "FAIL …", "-").
    pub lab: String,
    /// What netlat reported, in short.
    pub said: String,
    /// Why it does not match (empty when it does).
    pub why: String,
    /// netlat's lines for the scenario, verbatim (for the report of gaps and failures).
    pub lines: Vec<String>,
}

/// Judges every row against `run`. `partial`: scenarios may be missing (`--only`).
pub fn judge(rows: &[Row], run: &Run, partial: bool) -> Vec<Judged> {
    rows.iter()
        .map(|row| judge_row(row, run, partial))
        .collect()
}

fn judge_row(row: &Row, run: &Run, partial: bool) -> Judged {
    let mut j = Judged {
        row: row.clone(),
        outcome: Outcome::Ok,
        lab: "-".to_owned(),
        said: String::new(),
        why: String::new(),
        lines: Vec::new(),
    };
    let (matched, said, why) = if row.expect == Expect::AllHooksActive {
        match run.capabilities() {
            None => (
                false,
                "no capabilities line".to_owned(),
                "netlat printed no capabilities line".to_owned(),
            ),
            Some(caps) => hooks(caps),
        }
    } else {
        if !run.scenarios.contains_key(&row.scenario) {
            j.outcome = if partial {
                Outcome::Skipped
            } else {
                Outcome::Fail
            };
            "the scenario did not run".clone_into(&mut j.why);
            return j;
        }
        j.lab = match run.labs.get(&row.scenario) {
            Some((true, _)) => "PASS".to_owned(),
            Some((false, why)) => format!("FAIL {why}"),
            None => "missing".to_owned(),
        };
        let lines = run.connects(&row.scenario);
        j.lines = lines.iter().map(|l| to_json(l)).collect();
        let clients = run
            .clients
            .get(&row.scenario)
            .map_or(&[][..], Vec::as_slice);
        match &row.expect {
            Expect::Verdict(id) => verdict(id, &lines, clients),
            Expect::None => nothing(&lines),
            Expect::Ladder(secs) => ladder(secs, &lines),
            Expect::Early(id) => early(id, &lines, &run.retries(&row.scenario)),
            Expect::AllHooksActive => unreachable!(),
        }
    };
    j.said = said;
    j.outcome = match (matched, row.status) {
        (true, Status::Required) => Outcome::Ok,
        (true, Status::Unsupported) => Outcome::NowPasses,
        (false, Status::Required) => Outcome::Fail,
        (false, Status::Unsupported) => Outcome::KnownGap,
    };
    if !matched {
        j.why = why;
    }
    if j.lab != "PASS" && j.lab != "-" {
        j.outcome = Outcome::Fail;
        j.why = format!("lab: {}", j.lab);
    }
    j
}

/// "3× netfilter-rule-drop/high" for a list of connect lines.
fn tally(lines: &[&Value]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        let issue = l["verdict"]["issue"].as_str().unwrap_or("no verdict");
        let conf = l["verdict"]["confidence"].as_str().unwrap_or("-");
        *counts.entry(format!("{issue}/{conf}")).or_default() += 1;
    }
    if counts.is_empty() {
        return "no connect line".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(
    id: &str,
    lines: &[&Value],
    clients: &[BTreeMap<String, String>],
) -> (bool, String, String) {
    let said = tally(lines);
    let mut why = Vec::new();
    // Every connect the client saw as slow must be reported.
    let mut slow: BTreeMap<&str, usize> = BTreeMap::new();
    for c in clients {
        let secs = c.get("connect_s").map_or("fail", String::as_str);
        if secs.parse::<f64>().is_ok_and(|s| s < 0.9) {
            continue;
        }
        *slow
            .entry(c.get("sport").map_or("?", String::as_str))
            .or_default() += 1;
    }
    for (sport, n) in &slow {
        let reported = lines
            .iter()
            .filter(|l| l["src"].str().rsplit(':').next() == Some(sport))
            .count();
        if reported < *n {
            why.push(format!(
                "{n} slow connect(s) from port {sport}, netlat reported {reported}"
            ));
        }
    }
    if lines.is_empty() {
        why.push("netlat reported no connect".to_owned());
    }
    let wrong = lines
        .iter()
        .filter(|l| l["verdict"]["issue"].str() != id)
        .count();
    if wrong > 0 {
        why.push(format!("{wrong} of {} line(s) not `{id}`", lines.len()));
    }
    (why.is_empty(), said, why.join("; "))
}

fn nothing(lines: &[&Value]) -> (bool, String, String) {
    let attributed: Vec<_> = lines
        .iter()
        .filter(|l| {
            let issue = l["verdict"]["issue"].str();
            !issue.is_empty() && issue != "slow-handshake"
        })
        .collect();
    let said = tally(lines);
    if attributed.is_empty() {
        (true, said, String::new())
    } else {
        (
            false,
            said,
            format!("{} connect(s) attributed to an issue", attributed.len()),
        )
    }
}

fn ladder(secs: &[f64], lines: &[&Value]) -> (bool, String, String) {
    let [line] = lines else {
        return (
            false,
            tally(lines),
            format!("want exactly one connect line, got {}", lines.len()),
        );
    };
    let got: Vec<f64> = line["retransmit_at_ms"]
        .arr()
        .iter()
        .filter_map(super::super::json::Value::num)
        .map(|ms| ms / 1000.0)
        .collect();
    let said = format!(
        "retransmit_at_ms [{}] ({}, {})",
        got.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        line["outcome"].str(),
        line["verdict"]["issue"].as_str().unwrap_or("no verdict"),
    );
    let fits = got.len() == secs.len()
        && got
            .iter()
            .zip(secs)
            .all(|(g, e)| (g - e).abs() <= 0.3 + 0.05 * e);
    let why = if fits {
        String::new()
    } else {
        format!(
            "want [{}] s",
            secs.iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    (fits, said, why)
}

/// Each connect line with a SYN retransmit had, before it, a progress line of the same flow at
/// its first retransmit naming `id`.
fn early(id: &str, lines: &[&Value], retries: &[&Value]) -> (bool, String, String) {
    let slow: Vec<&&Value> = lines
        .iter()
        .filter(|l| !l["retransmit_at_ms"].arr().is_empty())
        .collect();
    let mut said = Vec::new();
    let mut why = Vec::new();
    if slow.is_empty() {
        why.push("no connect line with a SYN retransmit".to_owned());
    }
    for l in &slow {
        let first = retries.iter().find(|r| {
            r["src"].str() == l["src"].str()
                && r["dst"].str() == l["dst"].str()
                && r["syn_retransmits"].num() == Some(1.0)
        });
        let Some(r) = first else {
            said.push("no progress line at retry 1".to_owned());
            why.push(format!(
                "{} had no progress line at its first retry",
                l["src"].str()
            ));
            continue;
        };
        let issue = r["verdict"]["issue"].as_str().unwrap_or("no verdict");
        said.push(format!(
            "retry 1 at {:.2} s: {issue}/{}",
            r["waiting_ms"].num().unwrap_or(f64::NAN) / 1000.0,
            r["verdict"]["confidence"].str()
        ));
        if issue != id {
            why.push(format!(
                "{} named {issue} at its first retry",
                l["src"].str()
            ));
        }
    }
    (why.is_empty(), said.join(", "), why.join("; "))
}

fn hooks(caps: &Value) -> (bool, String, String) {
    let all = caps["hooks"].arr();
    let inactive: Vec<String> = all
        .iter()
        .filter(|h| h["active"].as_bool() != Some(true))
        .map(|h| format!("{} ({})", h["hook"].str(), h["detail"].str()))
        .collect();
    let said = format!(
        "{} of {} hooks active{}",
        all.len() - inactive.len(),
        all.len(),
        if inactive.is_empty() {
            String::new()
        } else {
            format!("; inactive: {}", inactive.join(", "))
        }
    );
    let ok = inactive.is_empty() && !all.is_empty();
    (
        ok,
        said,
        if ok {
            String::new()
        } else {
            "not every hook is active".to_owned()
        },
    )
}

/// Back to one JSON line, for the report.
pub fn to_json(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Num(n) => {
            if n.fract() == 0.0 && n.abs() < 1e15 {
                format!("{}", *n as i64)
            } else {
                n.to_string()
            }
        }
        Value::Str(s) => {
            let mut out = String::from('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Arr(items) => format!(
            "[{}]",
            items.iter().map(to_json).collect::<Vec<_>>().join(",")
        ),
        Value::Obj(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}:{}", to_json(&Value::Str(k.clone())), to_json(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::guest;
    use super::*;

    const TABLE: &str = "# c\n\
        first-syn all netfilter-rule-drop required\n\
        ladder all ladder:1,3,7 required\n\
        ladder 6.12 ladder:1,2,3 required linear\n\
        ipvs-reuse all ipvs-conn-reuse expected-unsupported needs IPVS evidence\n\
        ipvs-control all none required\n";

    #[test]
    fn rows_override_per_kernel() {
        let rows = rows_for(TABLE, "6.12").unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].expect, Expect::Ladder(vec![1.0, 2.0, 3.0]));
        assert_eq!(rows[1].note, "linear");
        let rows = rows_for(TABLE, "6.1").unwrap();
        assert_eq!(rows[1].expect, Expect::Ladder(vec![1.0, 3.0, 7.0]));
        assert_eq!(rows[2].status, Status::Unsupported);
        assert!(rows_for("x all y:z required", "6.1").is_err());
        assert!(rows_for("x all y maybe", "6.1").is_err());
    }

    #[test]
    fn judges_a_run() {
        let log = r#"NETLAT-SCENARIO first-syn dst=10.0.0.2:8080
NETLAT-CLIENT first-syn i=0 connect_s=1.02 sport=100 backend=- err=0
NETLAT-LAB first-syn PASS
NETLAT-SCENARIO ladder dst=10.0.0.2:9000
NETLAT-LAB ladder PASS
NETLAT-SCENARIO ipvs-reuse dst=10.1.0.1:80
NETLAT-CLIENT ipvs-reuse i=0 connect_s=0.01 sport=41001 backend=1 err=0
NETLAT-CLIENT ipvs-reuse i=1 connect_s=1.03 sport=41001 backend=2 err=0
NETLAT-LAB ipvs-reuse PASS
NETLAT-SCENARIO ipvs-control dst=10.1.0.4:80
NETLAT-LAB ipvs-control PASS
NETLAT-JSON {"type":"connect","src":"10.0.0.1:100","dst":"10.0.0.2:8080","verdict":{"issue":"netfilter-rule-drop","confidence":"high"}}
NETLAT-JSON {"type":"connect","src":"10.0.0.1:5","dst":"10.0.0.2:9000","outcome":"timeout","retransmit_at_ms":[1010,3050,7300]}
NETLAT-JSON {"type":"connect","src":"10.1.0.2:41001","dst":"10.1.0.1:80","verdict":{"issue":"netfilter-drop","confidence":"medium"}}
NETLAT-END
"#;
        let run = guest::parse(log.as_bytes());
        let judged = judge(&rows_for(TABLE, "6.1").unwrap(), &run, false);
        let outcomes: Vec<_> = judged.iter().map(|j| j.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Ok, Outcome::Ok, Outcome::KnownGap, Outcome::Ok],
            "{:?}",
            judged.iter().map(|j| &j.why).collect::<Vec<_>>()
        );
        assert_eq!(judged[2].said, "1× netfilter-drop/medium");
        // On 6.12 the same ladder does not fit.
        let judged = judge(&rows_for(TABLE, "6.12").unwrap(), &run, false);
        assert_eq!(judged[1].outcome, Outcome::Fail);
    }

    #[test]
    fn early_naming_is_judged_from_the_progress_line_at_the_first_retry() {
        let table = "first-syn all netfilter-rule-drop required\n\
            first-syn all early:netfilter-rule-drop required\n";
        let rows = rows_for(table, "6.1").unwrap();
        assert_eq!(
            rows.len(),
            2,
            "a verdict row and an early row for one scenario"
        );
        let connect = r#"NETLAT-JSON {"type":"connect","src":"10.0.0.1:100","dst":"10.0.0.2:8080","retransmit_at_ms":[1010],"verdict":{"issue":"netfilter-rule-drop","confidence":"high"}}"#;
        let retry = |issue: &str, n: u32| {
            format!(
                r#"NETLAT-JSON {{"type":"retry","src":"10.0.0.1:100","dst":"10.0.0.2:8080","waiting_ms":1010,"syn_retransmits":{n},"verdict":{{"issue":"{issue}","confidence":"high"}}}}"#
            )
        };
        let log = |body: &str| {
            format!(
                "NETLAT-SCENARIO first-syn dst=10.0.0.2:8080\nNETLAT-LAB first-syn PASS\n{body}\nNETLAT-END\n"
            )
        };
        let outcomes = |body: String| -> Vec<Outcome> {
            let run = guest::parse(log(&body).as_bytes());
            judge(&rows, &run, false)
                .iter()
                .map(|j| j.outcome)
                .collect()
        };
        let named = format!("{}\n{connect}", retry("netfilter-rule-drop", 1));
        assert_eq!(outcomes(named), [Outcome::Ok, Outcome::Ok]);
        // Named only at the second retry, or something else at the first: not early.
        let late = format!(
            "{}\n{}\n{connect}",
            retry("unanswered-syn", 1),
            retry("netfilter-rule-drop", 2)
        );
        assert_eq!(outcomes(late), [Outcome::Ok, Outcome::Fail]);
        assert_eq!(outcomes(connect.to_owned()), [Outcome::Ok, Outcome::Fail]);
    }

    #[test]
    fn the_repository_table_parses_for_every_kernel() {
        let table = include_str!("../../../tests/vm/expectations.tsv");
        for series in super::super::kernel::SERIES {
            let rows = rows_for(table, series.name).unwrap();
            assert!(
                rows.iter().any(|r| r.scenario == "capabilities"),
                "{}",
                series.name
            );
        }
    }

    #[test]
    fn json_round_trip() {
        let text = r#"{"a":[1,2.5,"x\"y"],"b":null,"c":true}"#;
        assert_eq!(to_json(&crate::json::parse(text).unwrap()), text);
    }
}
