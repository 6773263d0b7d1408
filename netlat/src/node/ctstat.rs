//! Parser for /proc/net/stat/nf_conntrack: a header naming the columns, then one row of
//! `%08x` values per possible CPU (net/netfilter/nf_conntrack_standalone.c, ct_cpu_seq_show).
//!
//! The column set changed over time, so values are mapped by name, never by position:
//! 5.9 renamed `searched` to `clashres` (clash_resolve), 5.17 filled the always-zero
//! `delete_list` slot with `chainlength` (chaintoolong), and `icmp_error` prints `st->error`.

use netlat_core::facts::CtCpuStats;

use super::NodeError;

/// Parses the text of /proc/net/stat/nf_conntrack into one entry per CPU row.
pub fn parse_ct_stats(text: &str) -> Result<Vec<CtCpuStats>, NodeError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or(NodeError::CtStatsEmpty)?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    let find = |name: &str| columns.iter().position(|c| *c == name);
    let require = |name: &'static str| find(name).ok_or(NodeError::CtStatsColumn { column: name });

    let found = require("found")?;
    let invalid = require("invalid")?;
    let insert = require("insert")?;
    let insert_failed = require("insert_failed")?;
    let drop = require("drop")?;
    let early_drop = require("early_drop")?;
    let error = require("icmp_error")?;
    let search_restart = find("search_restart");
    let clash_resolve = find("clashres");
    let chaintoolong = find("chainlength");

    let mut stats = Vec::new();
    for (cpu, (index, line)) in lines.enumerate() {
        let line_no = index + 1;
        let values = line
            .split_whitespace()
            .map(|v| {
                u64::from_str_radix(v, 16).map_err(|_| NodeError::CtStatsValue {
                    line: line_no,
                    value: v.to_string(),
                })
            })
            .collect::<Result<Vec<u64>, _>>()?;
        if values.len() != columns.len() {
            return Err(NodeError::CtStatsWidth {
                line: line_no,
                expected: columns.len(),
                found: values.len(),
            });
        }
        stats.push(CtCpuStats {
            cpu: u32::try_from(cpu).unwrap_or(u32::MAX),
            found: values[found],
            invalid: values[invalid],
            insert: values[insert],
            insert_failed: values[insert_failed],
            drop: values[drop],
            early_drop: values[early_drop],
            error: values[error],
            search_restart: search_restart.map_or(0, |i| values[i]),
            clash_resolve: clash_resolve.map(|i| values[i]),
            chaintoolong: chaintoolong.map(|i| values[i]),
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// v5.10: `clashres` but no `chainlength` (its slot prints a constant 0 as `delete_list`).
    const V5_10: &str = "\
entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000002a  00000003 00000010 00000000 00000005 00000000 00000000 00000000 00000000 00000007 00000007 00000000 00000001  00000000 00000000 00000000 00000002
0000002a  00000000 00000020 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000004 00000000  00000000 00000000 00000000 00000000
";

    /// v6.1: `chainlength` (st->chaintoolong) in the old `delete_list` slot.
    const V6_1: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000100  00000001 000000ff 00000000 00000002 00000000 00000000 00000009 00000000 0000000b 0000000c 0000000d 0000000e  00000000 00000000 00000000 0000000f
";

    /// The header of this 6.18 machine's file, with made-up values on four CPUs.
    const V6_18: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000001c 0000001c 00000000 00000000  00000000 00000000 00000000 00000000
00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 ffffffff
";

    /// Before 5.9 (4.x): `searched`, no `clashres`, no `chainlength`.
    const V4_19: &str = "\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000005  00000000 00000001 00000000 00000002 00000000 00000000 00000000 00000000 00000003 00000004 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn v5_10() {
        let s = parse_ct_stats(V5_10).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            CtCpuStats {
                cpu: 0,
                found: 0x10,
                invalid: 5,
                insert: 0,
                insert_failed: 7,
                drop: 7,
                early_drop: 0,
                error: 1,
                search_restart: 2,
                clash_resolve: Some(3),
                chaintoolong: None,
            }
        );
        assert_eq!((s[1].cpu, s[1].found, s[1].early_drop), (1, 0x20, 4));
    }

    #[test]
    fn v6_1() {
        let s = parse_ct_stats(V6_1).unwrap();
        assert_eq!(
            s,
            [CtCpuStats {
                cpu: 0,
                found: 0xff,
                invalid: 2,
                insert: 0,
                insert_failed: 0xb,
                drop: 0xc,
                early_drop: 0xd,
                error: 0xe,
                search_restart: 0xf,
                clash_resolve: Some(1),
                chaintoolong: Some(9),
            }]
        );
    }

    #[test]
    fn v6_18() {
        let s = parse_ct_stats(V6_18).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s[1].insert_failed, s[1].drop), (0x1c, 0x1c));
        assert_eq!(s[3].search_restart, 0xffff_ffff);
        assert_eq!(s[3].cpu, 3);
        assert!(
            s.iter()
                .all(|c| c.clash_resolve == Some(0) && c.chaintoolong == Some(0))
        );
    }

    #[test]
    fn v4_19_has_no_new_columns() {
        let s = parse_ct_stats(V4_19).unwrap();
        assert_eq!(s[0].clash_resolve, None);
        assert_eq!(s[0].chaintoolong, None);
        assert_eq!((s[0].insert_failed, s[0].drop), (3, 4));
    }

    #[test]
    fn this_machine() {
        // Whatever this kernel prints must parse (absent when nf_conntrack is not loaded).
        if let Ok(text) = std::fs::read_to_string("/proc/net/stat/nf_conntrack") {
            let s = parse_ct_stats(&text).unwrap();
            assert!(!s.is_empty());
        }
    }

    #[test]
    fn bad_input() {
        assert_eq!(parse_ct_stats(""), Err(NodeError::CtStatsEmpty));
        assert_eq!(
            parse_ct_stats("entries found\n1 2\n"),
            Err(NodeError::CtStatsColumn { column: "invalid" })
        );
        let header = V6_1.lines().next().unwrap();
        assert_eq!(
            parse_ct_stats(&format!("{header}\n00000001 00000002\n")),
            Err(NodeError::CtStatsWidth {
                line: 2,
                expected: 17,
                found: 2
            })
        );
        let row = "0000000g ".repeat(17);
        assert_eq!(
            parse_ct_stats(&format!("{header}\n{row}\n")),
            Err(NodeError::CtStatsValue {
                line: 2,
                value: "0000000g".into()
            })
        );
    }
}
