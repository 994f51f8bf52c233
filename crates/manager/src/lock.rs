//! One writer per node: the daemon and apiserver-proxy-tools take the same
//! exclusive lock on the state folder before they change the kernel.
//!
//! An advisory `flock` on `STATE_DIR/lock`: the kernel releases it when the
//! holder exits, however it exits, so a SIGKILLed daemon never leaves a
//! stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Held while alive; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock, waiting up to `wait` for another holder to finish
    /// (the CLI waits a little for a daemon's pass; the daemon does not wait
    /// for another daemon).
    pub fn acquire(state_dir: &Path, wait: Duration) -> Result<StateLock> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::Io {
            op: "create the state folder",
            path: state_dir.display().to_string(),
            source,
        })?;
        let path = state_dir.join("lock");
        let deadline = Instant::now() + wait;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| Error::Io {
                    op: "open the lock file",
                    path: path.display().to_string(),
                    source,
                })?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(StateLock { _lock: lock, path }),
                Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(Error::Locked {
                        path: path.display().to_string(),
                    });
                }
                Err((_, errno)) => {
                    return Err(Error::Io {
                        op: "lock",
                        path: path.display().to_string(),
                        source: std::io::Error::from(errno),
                    });
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path(), Duration::ZERO).expect("first");
        let err = StateLock::acquire(dir.path(), Duration::from_millis(100)).expect_err("held");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("only one may change"), "{err}");
        drop(first);
        StateLock::acquire(dir.path(), Duration::ZERO).expect("free again");
    }
}
