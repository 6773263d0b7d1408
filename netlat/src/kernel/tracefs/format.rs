//! The parser of tracepoint `format` files (`events/<system>/<event>/format`): the event's
//! name, id, fields (offset, size, signedness) and print fmt, plus [`FormatError`], which also
//! carries the layout checks of [`super::layout`].
//!
//! Pure text in, [`EventFormat`] out, no I/O: the kernel's output is untrusted input (it is
//! fuzzed), so every shape it could take is an error with a line number, never a panic.

use std::collections::BTreeMap;

use super::symbolic;

/// A tracepoint `format` file that cannot be parsed, or lacks what netlat needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file has no content at all.
    #[error("the format file is empty")]
    Empty,
    /// The file stops before a required part (`name:`, `ID:`, `format:`, fields, `print fmt:`).
    #[error("the format file is truncated: it has no {missing} line")]
    Truncated { missing: &'static str },
    /// A line that does not have the shape the kernel writes.
    #[error("line {line}: {reason}: {text:?}")]
    Malformed {
        line: usize,
        reason: &'static str,
        text: String,
    },
    /// The same field name appears twice.
    #[error("line {line}: field `{name}` is declared twice")]
    DuplicateField { line: usize, name: String },
    /// A field the eBPF programs read is not in this kernel's event.
    #[error("tracepoint {event} has no field `{field}`, which netlat reads")]
    MissingField { event: String, field: &'static str },
    /// A field the eBPF programs read has a size other than the one they read.
    #[error(
        "tracepoint {event}: field `{field}` is {found} bytes on this kernel, netlat reads {expected}"
    )]
    FieldSize {
        event: String,
        field: &'static str,
        expected: u32,
        found: u32,
    },
}

/// One field of a tracepoint record, as declared in its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    /// Field name without array brackets (`__u8 saddr[4]` → `saddr`).
    pub name: String,
    /// C type as the kernel records it, array suffix included (`__u8[4]`, `void *`,
    /// `__data_loc char[]`).
    pub c_type: String,
    /// Byte offset in the record (the tracepoint context the programs get).
    pub offset: u32,
    /// Size in bytes (for arrays, the whole array).
    pub size: u32,
    /// Whether the kernel marks the type as signed.
    pub signed: bool,
}

/// A parsed `events/<system>/<event>/format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    /// Event name (`kfree_skb`).
    pub name: String,
    /// Event id (the `common_type` of its records).
    pub id: u32,
    /// All fields, the `common_*` header fields included, in file order.
    pub fields: Vec<FormatField>,
    /// The `print fmt:` text: a C string literal followed by its arguments.
    pub print_fmt: String,
}

impl EventFormat {
    /// Parse the text of a format file. Fails on an empty or truncated file and on any line that
    /// does not have the kernel's shape (errors carry 1-based line numbers).
    pub fn parse(text: &str) -> Result<EventFormat, FormatError> {
        if text.trim().is_empty() {
            return Err(FormatError::Empty);
        }
        let mut name: Option<String> = None;
        let mut id: Option<u32> = None;
        let mut in_format = false;
        let mut fields: Vec<FormatField> = Vec::new();
        let mut print_fmt: Option<String> = None;

        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let line = raw.trim();
            let malformed = |reason| FormatError::Malformed {
                line: line_no,
                reason,
                text: raw.to_string(),
            };
            if line.is_empty() {
                continue;
            }
            if print_fmt.is_some() {
                // The kernel writes the print fmt on one line and stops there.
                return Err(malformed("unexpected text after the print fmt"));
            }
            if !in_format {
                if let Some(v) = line.strip_prefix("name:") {
                    let v = v.trim();
                    if v.is_empty() || name.is_some() {
                        return Err(malformed("empty or repeated event name"));
                    }
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("ID:") {
                    if id.is_some() {
                        return Err(malformed("repeated ID"));
                    }
                    id = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| malformed("ID is not a number"))?,
                    );
                } else if line == "format:" {
                    if name.is_none() || id.is_none() {
                        return Err(malformed("`format:` before the name and ID lines"));
                    }
                    in_format = true;
                } else {
                    return Err(malformed("expected `name:`, `ID:` or `format:`"));
                }
                continue;
            }
            if let Some(fmt) = line.strip_prefix("print fmt:") {
                print_fmt = Some(fmt.trim().to_string());
            } else if line.starts_with("field:") {
                let field = parse_field(line).map_err(malformed)?;
                if fields.iter().any(|f| f.name == field.name) {
                    return Err(FormatError::DuplicateField {
                        line: line_no,
                        name: field.name,
                    });
                }
                fields.push(field);
            } else {
                return Err(malformed("expected a `field:` or `print fmt:` line"));
            }
        }

        let name = name.ok_or(FormatError::Truncated { missing: "name:" })?;
        let id = id.ok_or(FormatError::Truncated { missing: "ID:" })?;
        if !in_format {
            return Err(FormatError::Truncated { missing: "format:" });
        }
        if fields.is_empty() {
            return Err(FormatError::Truncated { missing: "field:" });
        }
        let print_fmt = print_fmt.ok_or(FormatError::Truncated {
            missing: "print fmt:",
        })?;
        Ok(EventFormat {
            name,
            id,
            fields,
            print_fmt,
        })
    }

    /// The field called `name`, if this kernel's event has it.
    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The value → name table of the first `__print_symbolic(REC-><field>, ...)` in the print
    /// fmt, or `None` when the field is not printed symbolically. Entries whose value is not a
    /// numeric literal (an enum name the kernel did not resolve, such as `TCP_ESTABLISHED` in the
    /// `tcp` system) are skipped, so the table can be empty.
    pub fn symbols(&self, field: &str) -> Option<BTreeMap<u64, String>> {
        symbolic::symbols(&self.print_fmt, field)
    }
}

/// Parse `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`. Returns the reason on failure.
fn parse_field(line: &str) -> Result<FormatField, &'static str> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once(':').ok_or("expected `key:value` parts")?;
        let value = value.trim();
        match key.trim() {
            "field" => decl = Some(value),
            "offset" => offset = Some(value.parse().map_err(|_| "offset is not a number")?),
            "size" => size = Some(value.parse().map_err(|_| "size is not a number")?),
            "signed" => {
                signed = Some(match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err("signed is neither 0 nor 1"),
                });
            }
            // Attributes a newer kernel may add do not change what netlat reads.
            _ => {}
        }
    }
    let decl = decl.ok_or("no field declaration")?;
    let (name, c_type) = split_declaration(decl).ok_or("cannot find the field name")?;
    Ok(FormatField {
        name,
        c_type,
        offset: offset.ok_or("field has no offset")?,
        size: size.ok_or("field has no size")?,
        // Very old kernels did not print `signed`; nothing netlat reads depends on it.
        signed: signed.unwrap_or(false),
    })
}

/// Split `TYPE NAME` (`__u8 saddr[4]`, `void * skbaddr`, `__data_loc char[] name`) into the name
/// and the type, the array suffix moved onto the type as the kernel stores it.
fn split_declaration(decl: &str) -> Option<(String, String)> {
    let decl = decl.trim();
    let split = decl.rfind(char::is_whitespace)?;
    let ty = decl[..split].trim_end();
    let last = decl[split..].trim_start();
    // `char *name` style: the stars belong to the type.
    let name_and_array = last.trim_start_matches('*');
    let stars = &last[..last.len() - name_and_array.len()];
    let (name, array) = match name_and_array.find('[') {
        Some(i) => name_and_array.split_at(i),
        None => (name_and_array, ""),
    };
    if ty.is_empty() || !is_identifier(name) || !(array.is_empty() || array.ends_with(']')) {
        return None;
    }
    let mut c_type = ty.to_string();
    if !stars.is_empty() {
        c_type.push(' ');
        c_type.push_str(stars);
    }
    c_type.push_str(array);
    Some((name.to_string(), c_type))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn common_header_fields_on_every_kernel() {
        for text in ALL {
            let f = parse(text);
            assert_field(&f, "common_type", 0, 2, false);
            assert_field(&f, "common_flags", 2, 1, false);
            assert_field(&f, "common_preempt_count", 3, 1, false);
            assert_field(&f, "common_pid", 4, 4, true);
        }
    }

    #[test]
    fn field_declarations() {
        let text = "name: demo\nID: 7\nformat:\n\
            \tfield:__u8 saddr[4];\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:__data_loc char[] name;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:void * skbaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:char *comm;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:unsigned long flags;\toffset:32;\tsize:8;\n\
            \nprint fmt: \"x\"\n";
        let f = parse(text);
        let decl = |n: &str| {
            let x = f.field(n).unwrap_or_else(|| panic!("no {n}"));
            (x.c_type.clone(), x.offset, x.size, x.signed)
        };
        assert_eq!(decl("saddr"), ("__u8[4]".into(), 8, 4, false));
        assert_eq!(decl("name"), ("__data_loc char[]".into(), 12, 4, true));
        assert_eq!(decl("skbaddr"), ("void *".into(), 16, 8, false));
        assert_eq!(decl("comm"), ("char *".into(), 24, 8, false));
        assert_eq!(decl("flags"), ("unsigned long".into(), 32, 8, false));
        assert_eq!(f.print_fmt, "\"x\"");
        assert_eq!(f.fields.len(), 5);
    }

    #[test]
    fn empty_and_garbage_input() {
        assert_eq!(EventFormat::parse(""), Err(FormatError::Empty));
        assert_eq!(EventFormat::parse(" \n\n\t\n"), Err(FormatError::Empty));
        assert!(matches!(
            EventFormat::parse("hello world"),
            Err(FormatError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            EventFormat::parse("\n\n<html>404</html>\n"),
            Err(FormatError::Malformed { line: 3, .. })
        ));
        let binary = String::from_utf8_lossy(&[0u8, 159, 146, 150, 10, 255, 1, 2]).into_owned();
        assert!(EventFormat::parse(&binary).is_err());
        assert!(matches!(
            EventFormat::parse("name: x\nID: twelve\nformat:\n"),
            Err(FormatError::Malformed {
                line: 2,
                reason: "ID is not a number",
                ..
            })
        ));
        assert!(matches!(
            EventFormat::parse("format:\n\tfield:int a;\toffset:0;\tsize:4;\n"),
            Err(FormatError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn truncated_files_are_errors() {
        assert_eq!(
            EventFormat::parse("name: kfree_skb\n"),
            Err(FormatError::Truncated { missing: "ID:" })
        );
        assert_eq!(
            EventFormat::parse("name: kfree_skb\nID: 5\n"),
            Err(FormatError::Truncated { missing: "format:" })
        );
        assert_eq!(
            EventFormat::parse("name: kfree_skb\nID: 5\nformat:\n"),
            Err(FormatError::Truncated { missing: "field:" })
        );
        let before_print = K618_KFREE.find("print fmt:").expect("print fmt");
        assert_eq!(
            EventFormat::parse(&K618_KFREE[..before_print]),
            Err(FormatError::Truncated {
                missing: "print fmt:"
            })
        );
        // Every cut before the print fmt fails, none panics.
        for text in ALL {
            let end = text.find("print fmt:").expect("print fmt");
            for cut in (0..end).filter(|&i| text.is_char_boundary(i)) {
                assert!(
                    EventFormat::parse(&text[..cut]).is_err(),
                    "cut at {cut}: {:?}",
                    &text[..cut]
                );
            }
        }
    }

    #[test]
    fn malformed_field_lines_report_their_line() {
        let header = "name: e\nID: 1\nformat:\n";
        let cases = [
            (
                "\tfield:int a;\tsize:4;\tsigned:1;\n",
                "field has no offset",
            ),
            ("\tfield:int a;\toffset:8;\n", "field has no size"),
            (
                "\tfield:int a;\toffset:8;\tsi",
                "expected `key:value` parts",
            ),
            (
                "\tfield:int a;\toffset:x;\tsize:4;\n",
                "offset is not a number",
            ),
            (
                "\tfield:int a;\toffset:8;\tsize:-4;\n",
                "size is not a number",
            ),
            (
                "\tfield:int a;\toffset:8;\tsize:4;\tsigned:2;\n",
                "signed is neither 0 nor 1",
            ),
            (
                "\tfield:a;\toffset:8;\tsize:4;\n",
                "cannot find the field name",
            ),
            (
                "\tfield:int 9a;\toffset:8;\tsize:4;\n",
                "cannot find the field name",
            ),
            ("\tjunk here\n", "expected a `field:` or `print fmt:` line"),
        ];
        for (body, want) in cases {
            let text =
                format!("{header}\tfield:int ok;\toffset:0;\tsize:4;\n{body}\nprint fmt: \"\"\n");
            match EventFormat::parse(&text) {
                Err(FormatError::Malformed { line, reason, .. }) => {
                    assert_eq!((line, reason), (5, want), "{body:?}");
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let dup = format!(
            "{header}\tfield:int a;\toffset:0;\tsize:4;\n\tfield:int a;\toffset:4;\tsize:4;\nprint fmt: \"\"\n"
        );
        assert_eq!(
            EventFormat::parse(&dup),
            Err(FormatError::DuplicateField {
                line: 5,
                name: "a".into()
            })
        );
        let trailing = format!("{K61_SOCK}more\n");
        assert!(matches!(
            EventFormat::parse(&trailing),
            Err(FormatError::Malformed {
                reason: "unexpected text after the print fmt",
                ..
            })
        ));
        let err = EventFormat::parse(&format!("{header}\tfield:int a;\toffset:8;\n"))
            .expect_err("no size");
        assert!(
            err.to_string().starts_with("line 4: field has no size"),
            "{err}"
        );
    }
}
