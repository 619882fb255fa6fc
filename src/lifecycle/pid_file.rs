//! The pid file: written atomically once SIGHUP is handled (so `gatehouse
//! reload` never signals a process that would die of it), removed on exit only
//! while it still names this process (after an upgrade it names the new one).

use std::path::{Path, PathBuf};

/// Writes our pid, atomically (a reader never sees a half-written file).
pub(crate) fn write(path: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{pid}.tmp"));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the pid file if it still names this process: after an upgrade it
/// names the new instance, which keeps it.
pub(crate) fn remove_if_ours(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|s| s.trim().parse::<u32>() == Ok(std::process::id()));
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn!("cannot remove the pid file {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_removed_only_while_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.pid");
        write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        std::fs::write(&path, "999999999\n").unwrap();
        remove_if_ours(&path);
        assert!(path.exists(), "a successor's pid file stays");
        write(&path).unwrap();
        remove_if_ours(&path);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temp file left"
        );
    }
}
