//! Paths in messages and same-file checks, shown and compared the same way on every platform.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A path for a message: in double quotes, as the user wrote it. `{:?}` would double every
/// backslash of a Windows path (`"C:\\Users\\..."`), which is not a path anyone can paste.
pub struct Shown<'a>(&'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.display())
    }
}

/// `path` ready for a message: `format!("cannot open {}", shown(path))`.
pub fn shown<P: AsRef<Path> + ?Sized>(path: &P) -> Shown<'_> {
    Shown(path.as_ref())
}

/// The absolute path with links resolved, in the form the user would write it: on Windows
/// without the `\\?\` prefix that `std::fs::canonicalize` adds (kept only where a path needs it).
pub fn canonical<P: AsRef<Path>>(path: P) -> io::Result<PathBuf> {
    dunce::canonicalize(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_path_is_shown_with_single_backslashes() {
        let p = r"C:\Users\ada\queue.db";
        assert_eq!(shown(p).to_string(), r#""C:\Users\ada\queue.db""#);
        assert_eq!(shown(Path::new("/srv/q.db")).to_string(), r#""/srv/q.db""#);
    }

    #[test]
    fn canonical_paths_have_no_verbatim_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.db");
        std::fs::write(&file, b"").unwrap();
        let c = canonical(&file).unwrap();
        assert!(!c.to_string_lossy().starts_with(r"\\?\"), "{}", c.display());
        assert!(c.is_absolute() && c.ends_with("q.db"));
        assert_eq!(c, canonical(dir.path().join(".").join("q.db")).unwrap());
    }
}
