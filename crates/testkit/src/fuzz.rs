//! Strategies shared by the property tests of both binaries.

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
