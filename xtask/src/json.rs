//! A small JSON reader for what xtask reads: netlat's `--output json` lines (benchmarks and
//! the VM guests), `bpftool --json` and `nft -j`. xtask keeps its dependencies to anyhow and
//! clap, so this is hand-written: values are parsed whole, numbers as `f64`, objects keep their
//! order, and lookups of anything missing yield `Null`.

use std::ops::Index;

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

static NULL: Value = Value::Null;

impl Value {
    /// Member `key` of an object (`Null` when absent or not an object); also `v["key"]`.
    pub fn get(&self, key: &str) -> &Value {
        match self {
            Value::Obj(members) => members
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    /// Follows a `.`-separated path of object keys.
    pub fn at(&self, path: &str) -> &Value {
        path.split('.').fold(self, |v, k| v.get(k))
    }

    pub fn num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub fn u64(&self) -> Option<u64> {
        self.num()
            .filter(|n| *n >= 0.0 && n.fract() == 0.0)
            .map(|n| n as u64)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The string, or "" when this is not a string.
    pub fn str(&self) -> &str {
        self.as_str().unwrap_or("")
    }

    pub fn arr(&self) -> &[Value] {
        match self {
            Value::Arr(v) => v,
            _ => &[],
        }
    }

    pub fn members(&self) -> &[(String, Value)] {
        match self {
            Value::Obj(m) => m,
            _ => &[],
        }
    }
}

impl Index<&str> for Value {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        self.get(key)
    }
}

impl Index<usize> for Value {
    type Output = Value;

    fn index(&self, i: usize) -> &Value {
        self.arr().get(i).unwrap_or(&NULL)
    }
}

/// Parses one JSON document; trailing whitespace is allowed, anything else after it is not.
pub fn parse(text: &str) -> Result<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        bail!("trailing characters at byte {} of a JSON document", p.i);
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T> {
        bail!("{what} at byte {} of a JSON document", self.i)
    }

    fn eat(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected `{}`", c as char))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > 64 {
            return self.err("nested too deeply");
        }
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Obj(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    fields.push((key, self.value(depth + 1)?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Obj(fields));
                        }
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Arr(items));
                        }
                        _ => return self.err("expected `,` or `]`"),
                    }
                }
            }
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            self.err("bad literal")
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.i;
        while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        text.parse()
            .map(Value::Num)
            .or_else(|_| self.err("bad number"))
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.s.get(self.i..self.i + 4).unwrap_or(b"");
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match n {
            Some(n) if digits.len() == 4 => {
                self.i += 4;
                Ok(n)
            }
            _ => self.err("bad \\u escape"),
        }
    }

    fn string(&mut self) -> Result<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(out).or_else(|_| self.err("invalid UTF-8"));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&c) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    let ch = match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff)
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        _ => return self.err("bad escape"),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                Some(&c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_connect_line() {
        let v = parse(
            r#"{"type":"connect","connect_ms":1030.3,"retransmit_at_ms":[1030.1, 3e3],
               "drops":[{"reason":"NETFILTER_DROP","ok":true,"x":null}],
               "verdict":{"issue":"netfilter-rule-drop","evidence":["a \"b\" \u00e9\n"]}}"#,
        )
        .unwrap();
        assert_eq!(v["type"].str(), "connect");
        assert_eq!(v["connect_ms"].num(), Some(1030.3));
        assert_eq!(v["retransmit_at_ms"][1].num(), Some(3000.0));
        assert_eq!(v["drops"][0]["reason"].str(), "NETFILTER_DROP");
        assert_eq!(v["drops"][0]["ok"].as_bool(), Some(true));
        assert_eq!(v["drops"][0]["x"], Value::Null);
        assert_eq!(v["verdict"]["issue"].str(), "netfilter-rule-drop");
        assert_eq!(v["verdict"]["evidence"][0].str(), "a \"b\" é\n");
        assert_eq!(v["nope"]["deeper"][3], Value::Null);
    }

    #[test]
    fn rejects_broken_lines() {
        assert!(parse(r#"{"a":1"#).is_err());
        assert!(parse(r#"{"a":1} x"#).is_err());
        assert!(parse("").is_err());
        assert!(parse(r#"["\ud83d\ude00"]"#).is_ok());
    }

    #[test]
    fn parses_a_summary_line() {
        let v = parse(
            r#"{"type":"summary","duration_s":3.5,"lost_events":{"connect":0,"drop":12},
               "tracker":{"drops_seen":99},"by_issue":{},"ok":true,"x":null,"s":"a\"b\u00e9"}"#,
        )
        .unwrap();
        assert_eq!(v.get("type").as_str(), Some("summary"));
        assert_eq!(v.at("lost_events.drop").u64(), Some(12));
        assert_eq!(v.at("tracker.drops_seen").u64(), Some(99));
        assert_eq!(v.get("duration_s").num(), Some(3.5));
        assert_eq!(v.get("s").as_str(), Some("a\"bé"));
        assert_eq!(v.get("missing"), &Value::Null);
        assert!(v.get("by_issue").members().is_empty());
    }

    #[test]
    fn parses_arrays_and_rejects_garbage() {
        let v = parse(r#"[{"id":7,"run_time_ns":1e3},[],-2]"#).unwrap();
        assert_eq!(v.arr()[0].get("run_time_ns").num(), Some(1000.0));
        assert_eq!(v.arr()[2].num(), Some(-2.0));
        assert!(parse("{\"a\":1").is_err());
        assert!(parse("[1,]x").is_err());
        assert!(parse("{} {}").is_err());
    }
}
