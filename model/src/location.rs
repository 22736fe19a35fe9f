//! Resolution of `ModelDescriptor.location` inside a configured models directory.

use std::path::{Component, Path, PathBuf};

use crate::error::ModelError;

/// The directory that `location` references are confined to. A location is a relative path
/// without `..`; after following symlinks it must still lie inside the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelsDir {
    root: PathBuf,
}

impl ModelsDir {
    /// Uses `root` (which must exist and be a directory) as the models directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, ModelError> {
        let root = root.as_ref();
        let canonical = root.canonicalize().map_err(|e| ModelError::io(root, e))?;
        if !canonical.is_dir() {
            return Err(ModelError::io(
                root,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        Ok(ModelsDir { root: canonical })
    }

    /// The directory (canonical path).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `location` to an existing path inside the directory.
    pub fn resolve(&self, location: &str) -> Result<PathBuf, ModelError> {
        let refuse = |reason: &str| ModelError::InvalidLocation {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        if location.is_empty() {
            return Err(refuse("empty"));
        }
        if location.contains('\0') {
            return Err(refuse("contains a NUL byte"));
        }
        let rel = Path::new(location);
        for c in rel.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(refuse("contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse("absolute paths are not allowed"))
                }
            }
        }
        let joined = self.root.join(rel);
        let canonical = joined
            .canonicalize()
            .map_err(|e| ModelError::io(&joined, e))?;
        if !canonical.starts_with(&self.root) {
            return Err(refuse("resolves outside the models directory"));
        }
        Ok(canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, ModelsDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let models = tmp.path().join("models");
        std::fs::create_dir_all(models.join("wine/saved")).expect("mkdir");
        std::fs::write(models.join("wine/m.onnx"), b"x").expect("write");
        std::fs::write(tmp.path().join("secret.onnx"), b"s").expect("write");
        let dir = ModelsDir::new(&models).expect("models dir");
        (tmp, dir)
    }

    #[test]
    fn resolves_inside() {
        let (_tmp, dir) = setup();
        let p = dir.resolve("wine/m.onnx").expect("resolve");
        assert!(p.starts_with(dir.root()));
        assert!(dir.resolve("./wine/saved").expect("dir").is_dir());
    }

    #[test]
    fn refuses_escapes() {
        let (tmp, dir) = setup();
        for bad in ["../secret.onnx", "wine/../../secret.onnx", "wine/.."] {
            assert!(
                matches!(dir.resolve(bad), Err(ModelError::InvalidLocation { .. })),
                "{bad}"
            );
        }
        let abs = tmp.path().join("secret.onnx");
        assert!(matches!(
            dir.resolve(&abs.to_string_lossy()),
            Err(ModelError::InvalidLocation { .. })
        ));
        assert!(matches!(
            dir.resolve(""),
            Err(ModelError::InvalidLocation { .. })
        ));
        assert!(matches!(
            dir.resolve("missing.onnx"),
            Err(ModelError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlink_escape() {
        let (tmp, dir) = setup();
        std::os::unix::fs::symlink(tmp.path().join("secret.onnx"), dir.root().join("link.onnx"))
            .expect("symlink");
        std::os::unix::fs::symlink(tmp.path(), dir.root().join("up")).expect("symlink");
        assert!(matches!(
            dir.resolve("link.onnx"),
            Err(ModelError::InvalidLocation { .. })
        ));
        assert!(matches!(
            dir.resolve("up/secret.onnx"),
            Err(ModelError::InvalidLocation { .. })
        ));
        // A symlink that stays inside is fine.
        std::os::unix::fs::symlink(dir.root().join("wine/m.onnx"), dir.root().join("in.onnx"))
            .expect("symlink");
        assert!(dir.resolve("in.onnx").is_ok());
    }
}
