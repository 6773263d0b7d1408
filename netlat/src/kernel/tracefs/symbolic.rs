//! The parser of the `__print_symbolic(REC->field, { value, "NAME" }, ...)` calls in a
//! tracepoint's print fmt: the value → name tables (drop reasons, TCP states, families) the
//! kernel would print, read here because their numbering changes between kernels.
//!
//! A small C-expression scanner over untrusted text: it respects string and char literals and
//! bracket nesting, and anything it cannot read yields no entry rather than an error or a panic.

use std::collections::BTreeMap;

/// The value → name table of the first `__print_symbolic(REC-><field>, ...)` in `print_fmt`
/// (see [`super::EventFormat::symbols`]).
pub(super) fn symbols(print_fmt: &str, field: &str) -> Option<BTreeMap<u64, String>> {
    symbolic_calls(print_fmt)
        .into_iter()
        .find_map(|args| symbol_table(&args, field))
}

/// The top-level arguments of every `__print_symbolic(...)` call in a print fmt.
fn symbolic_calls(fmt: &str) -> Vec<Vec<&str>> {
    const NAME: &str = "__print_symbolic";
    let bytes = fmt.as_bytes();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // The format string itself may contain anything; never look inside literals.
            b'"' | b'\'' => i = skip_literal(bytes, i),
            _ if bytes[i..].starts_with(NAME.as_bytes())
                && (i == 0 || !is_ident_byte(bytes[i - 1]))
                && !bytes.get(i + NAME.len()).is_some_and(|&b| is_ident_byte(b)) =>
            {
                let mut open = i + NAME.len();
                while open < bytes.len() && bytes[open].is_ascii_whitespace() {
                    open += 1;
                }
                let args = (bytes.get(open) == Some(&b'('))
                    .then(|| matching_close(bytes, open))
                    .flatten()
                    .and_then(|close| split_top_level(&fmt[open + 1..close]));
                if let Some(args) = args {
                    calls.push(args);
                }
                // Continue inside the call too: a nested call is still a call.
                i += NAME.len();
            }
            _ => i += 1,
        }
    }
    calls
}

fn is_ident_byte(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Index just past the string or char literal starting at `start` (or the end of input).
fn skip_literal(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index of the bracket closing the one at `open`, respecting literals and nesting.
fn matching_close(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = skip_literal(bytes, i);
                continue;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Split on commas outside brackets and literals; `None` when brackets do not balance.
fn split_top_level(s: &str) -> Option<Vec<&str>> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = skip_literal(bytes, i);
                continue;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    parts.push(s[start..].trim());
    Some(parts)
}

/// The table of one `__print_symbolic` call if its value argument is `REC-><field>`.
fn symbol_table(args: &[&str], field: &str) -> Option<BTreeMap<u64, String>> {
    let (value, entries) = args.split_first()?;
    if !refers_to_field(value, field) {
        return None;
    }
    let mut table = BTreeMap::new();
    for entry in entries {
        let Some(inner) = entry
            .trim()
            .strip_prefix('{')
            .and_then(|e| e.strip_suffix('}'))
        else {
            continue;
        };
        let Some(parts) = split_top_level(inner) else {
            continue;
        };
        let [value, name] = parts.as_slice() else {
            continue;
        };
        if let (Some(v), Some(n)) = (parse_c_integer(value), parse_c_string(name)) {
            table.insert(v, n);
        }
    }
    Some(table)
}

/// Whether an argument is `REC->field`, possibly parenthesised or cast.
fn refers_to_field(expr: &str, field: &str) -> bool {
    let mut compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    while compact.starts_with('(') && compact.ends_with(')') {
        compact = compact[1..compact.len() - 1].to_string();
    }
    let target = format!("REC->{field}");
    compact == target || compact.ends_with(&format!("){target}"))
}

/// A C integer literal (decimal, hex, octal; optional sign, parentheses and `u`/`l` suffixes).
/// Negative values wrap to their two's-complement `u64`, as the kernel compares them.
fn parse_c_integer(s: &str) -> Option<u64> {
    let mut s = s.trim();
    while let Some(inner) = s.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        s = inner.trim();
    }
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s),
    };
    let digits = s.trim_end_matches(['u', 'U', 'l', 'L']);
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

/// The text of a C string literal (`"NAME"`), with simple escapes undone.
fn parse_c_string(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::format::EventFormat;
    use super::*;

    fn with_print_fmt(fmt: &str) -> EventFormat {
        parse(&format!(
            "name: t\nID: 1\nformat:\n\tfield:int x;\toffset:8;\tsize:4;\tsigned:1;\n\nprint fmt: {fmt}\n"
        ))
    }

    #[test]
    fn symbols_numeric_forms() {
        let f = with_print_fmt(
            "\"x=%s y=%s z=%s\", __print_symbolic(REC->x, { 0x10, \"HEX\" }, { 0X1f, \"HEX_UPPER\" }, \
             { 010, \"OCTAL\" }, { 0, \"ZERO\" }, { 3U, \"SUFFIXED\" }, { 4UL, \"LONG\" }, \
             { -1, \"MINUS_ONE\" }, { (5), \"PARENS\" }, { SOME_ENUM, \"SYMBOLIC\" }, \
             { 1 << 3, \"SHIFT\" }, { 7, \"ESC\\\"APED\" }), \
             __print_symbolic((int)REC->y, { 1, \"CAST\" }), \
             __print_symbolic(REC->xx, { 1, \"OTHER_FIELD\" })",
        );
        let x = f.symbols("x").expect("x table");
        let want: BTreeMap<u64, String> = [
            (0x10, "HEX"),
            (0x1f, "HEX_UPPER"),
            (8, "OCTAL"),
            (0, "ZERO"),
            (3, "SUFFIXED"),
            (4, "LONG"),
            (u64::MAX, "MINUS_ONE"),
            (5, "PARENS"),
            (7, "ESC\"APED"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        assert_eq!(x, want);
        assert_eq!(
            f.symbols("y").map(|t| t.into_iter().collect::<Vec<_>>()),
            Some(vec![(1, "CAST".to_string())])
        );
        assert_eq!(f.symbols("xx").map(|t| t.len()), Some(1));
        assert_eq!(f.symbols("z"), None);
        assert_eq!(f.symbols(""), None);
    }

    #[test]
    fn symbols_ignore_text_inside_the_format_string() {
        let f = with_print_fmt("\"__print_symbolic(REC->x, { 1, \\\"FAKE\\\" })\", REC->x");
        assert_eq!(f.symbols("x"), None);
        // Unbalanced or odd text yields nothing rather than a panic.
        for fmt in [
            "\"a\", __print_symbolic(REC->x, { 1, \"A\" }",
            "\"a\", __print_symbolic",
            "\"a\", __print_symbolic REC->x",
            "\"a\", __print_symbolic(",
            "\"a\", __print_symbolic(REC->x, { 1, \"A\" ) }",
            "\"unterminated",
            "__print_symbolic(REC->x, { 1 }, { \"A\" }, { 1, 2, \"B\" }, 1, \"C\")",
            "my__print_symbolic(REC->x, { 1, \"A\" })",
        ] {
            let table = with_print_fmt(fmt).symbols("x");
            assert!(
                table
                    .as_ref()
                    .is_none_or(std::collections::BTreeMap::is_empty),
                "{fmt}: {table:?}"
            );
        }
    }
}
