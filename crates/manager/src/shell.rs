//! Shell completions and man pages of both binaries, generated from their
//! clap definitions, so that neither can drift from the flags. The binaries
//! print them (`completions SHELL`, the hidden `man`); `cargo xtask image`
//! ships them beside the binaries.

pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> String {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page (roff) of `cmd`, section 1, its subcommands listed.
pub fn man_page(cmd: clap::Command) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd).render(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("sample")
            .subcommand(clap::Command::new("alpha").about("first"))
            .arg(clap::Arg::new("vip").long("vip").help("the VIP"))
    }

    #[test]
    fn every_shell_gets_the_subcommands_and_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completions(sample(), shell);
            assert!(
                script.contains("alpha") && script.contains("vip"),
                "{shell}: {script}"
            );
        }
        let man = man_page(sample());
        assert!(man.contains(".TH sample 1"), "{man}");
        assert!(man.contains("\\-\\-vip"), "{man}");
    }
}
