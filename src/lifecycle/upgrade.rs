//! The upgrade hand-over: SIGQUIT passes the listening sockets to a new
//! instance (`run -u`) only when one is really waiting on `upgrade_sock`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::drain::DRAIN_POLL;

/// How long SIGQUIT waits for a new instance (`run -u`) to open `upgrade_sock`.
pub(crate) const UPGRADE_SOCK_WAIT: Duration = Duration::from_secs(5);

/// Waits up to `within` for a new instance to listen on the upgrade socket.
pub(crate) async fn ready(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if listening(path) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Whether some process listens on the unix socket bound at `path`. A file
/// left behind by a `run -u` that died is not enough: Pingora would fail to
/// send the sockets and shut down anyway. Reads `/proc/net/unix` (connecting
/// to find out would use up the one connection the new instance accepts);
/// without it, the file existing has to do.
pub(crate) fn listening(path: &Path) -> bool {
    /// `__SO_ACCEPTCON` in the flags column: the socket listens.
    const ACCEPTING: u32 = 0x0001_0000;
    let (Ok(table), Some(name)) = (std::fs::read_to_string("/proc/net/unix"), path.to_str()) else {
        return path.exists();
    };
    let suffix = format!(" {name}");
    // Num RefCount Protocol Flags Type St Inode Path (the path may hold spaces)
    table.lines().skip(1).any(|line| {
        line.ends_with(&suffix)
            && line
                .split_whitespace()
                .nth(3)
                .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & ACCEPTING != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listening_upgrade_socket_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.sock");
        assert!(!listening(&path));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening(&path));
        drop(listener);
        assert!(path.exists(), "the socket file stays behind");
        assert!(!listening(&path));
    }
}
