//! Bad input never panics: each case gives one clear error line and a non-zero exit.

use std::process::{Command, Output};

use netlat_tests::{is_root, netlat_bin, netlat_unprivileged};

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_one_error_line(o: &Output, needle: &str) {
    assert!(!o.status.success(), "must fail: {o:?}");
    let lines = stderr_lines(o);
    assert_eq!(lines.len(), 1, "exactly one error line, got {lines:#?}");
    assert!(lines[0].starts_with("netlat: "), "{lines:?}");
    assert!(
        lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        lines[0]
    );
    assert!(!lines[0].contains("panicked"), "{lines:?}");
}

#[test]
fn unknown_flag_and_bad_values() {
    for (args, needle) in [
        (vec!["watch", "--bogus"], "--bogus"),
        (vec!["watch", "--threshold", "fast"], "fast"),
        (vec!["watch", "--duration", "-3"], "-3"),
        (vec!["watch", "--output", "xml"], "xml"),
        (vec!["frobnicate"], "frobnicate"),
    ] {
        let o = Command::new(netlat_bin())
            .args(&args)
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_one_error_line(&o, needle);
    }
}

#[test]
fn not_root_says_which_privilege_is_missing() {
    assert!(
        is_root(),
        "this test drops privileges and needs to start as root"
    );
    let o = netlat_unprivileged(&["watch", "--duration", "1"]);
    assert_one_error_line(&o, "CAP_BPF");
    assert!(stderr_lines(&o)[0].contains("root"));
}

#[test]
fn tracefs_missing_and_unmountable() {
    assert!(is_root());
    // A private mount namespace where /sys/kernel is an empty tmpfs: no tracefs, and no
    // mount point to mount one on.
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         mount -t tmpfs none /sys/kernel && exec {} watch --duration 1",
        netlat_bin().display()
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    assert_one_error_line(&o, "tracefs");
}

#[test]
fn unreadable_format_file() {
    assert!(is_root());
    let dir = std::env::temp_dir().join(format!("netlat-fake-tracefs-{}", std::process::id()));
    let ev = dir.join("events/sock/inet_sock_set_state");
    std::fs::create_dir_all(&ev).expect("mkdir");
    std::fs::write(
        ev.join("format"),
        "name: inet_sock_set_state\nID: x\ngarbage\n",
    )
    .expect("write");
    let o = Command::new(netlat_bin())
        .args(["watch", "--duration", "1"])
        .env("NETLAT_TRACEFS", &dir)
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert_one_error_line(&o, "inet_sock_set_state");
}
