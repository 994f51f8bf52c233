//! What property tests share: strategies for both binaries' command lines,
//! and for the parsers of kernel replies one configuration and one way of
//! damaging a golden capture. A parser given any of these inputs must return
//! a value or an error, never panic.

use proptest::prelude::*;

/// Words a command line is made of: our flags, the Go version's, values
/// that parse and values that do not, and printable garbage.
pub fn command_line_words() -> impl Strategy<Value = Vec<String>> {
    let word = prop_oneof![
        prop::sample::select(vec![
            "--vs",
            "--rs",
            "-vs",
            "-rs",
            "-cmd",
            "--cmd=reload",
            "-persistDir",
            "--state-dir",
            "--interface",
            "--vip-mode",
            "--health-interval",
            "--resync-interval",
            "-f",
            "--config",
            "--",
            "-",
            "=",
            "add",
            "init",
            "reload",
            "cleanup",
            "config",
            "check",
            "10.103.97.2:6443",
            "[fd00::1]:6443",
            "0s",
            "1h",
            "route",
            "address",
        ])
        .prop_map(String::from),
        "[ -~]{0,12}",
    ];
    prop::collection::vec(word, 0..8)
}

/// Cases per parser property (`default` unless `PROPTEST_CASES` says how
/// many).
pub fn parser_config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // A failure is a panic, reported with its input; nothing to keep in
        // the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `golden` with the byte at `at` (modulo its length) set to `byte`, then
/// cut to `cut` bytes (at least one): a kernel reply damaged in one place
/// and possibly truncated.
pub fn mutate(golden: &[u8], at: usize, byte: u8, cut: usize) -> Vec<u8> {
    let mut b = golden.to_vec();
    if !b.is_empty() {
        let i = at % b.len();
        b[i] = byte;
    }
    b.truncate(cut.max(1));
    b
}
