//! JSON key files: an ed25519 key pair, written with mode 0600 and never overwritten silently.
//!
//! ```json
//! { "type": "ed25519", "public_key": "<64 hex>", "secret_key": "<64 hex seed>" }
//! ```
//!
//! The same format holds consensus keys, network (libp2p) keys and account keys.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tetrad_consensus::{PublicKey, SecretKey};

use crate::durable::{self, Existing};

/// Key files are small; anything bigger is not one.
const KEY_FILE_BYTES_MAX: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: already exists; refusing to overwrite a key (remove it first if you mean to)")]
    Exists { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {field}: {message}")]
    Parse { path: PathBuf, field: String, message: String },
    #[error("{path}: public_key: does not match the secret key (expected {expected}, found {found})")]
    Mismatch { path: PathBuf, expected: PublicKey, found: PublicKey },
    #[error("{path}: readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: type: expected \"ed25519\", found {found:?}")]
    WrongType { path: PathBuf, found: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    #[serde(rename = "type")]
    kind: String,
    public_key: PublicKey,
    secret_key: String,
}

/// A key pair loaded from or written to a key file.
#[derive(Clone, Debug)]
pub struct KeyFile {
    pub secret: SecretKey,
}

impl KeyFile {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<KeyFile, std::io::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| std::io::Error::other(error.to_string()))?;
        Ok(KeyFile { secret: SecretKey::from_seed(seed) })
    }

    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }

    /// Writes the key with mode 0600. Fails if `path` exists. Durable and never torn: the key
    /// is written to a temporary file, synced, linked into place and the directory synced (see
    /// [`crate::durable`]), so a crash leaves either no key file or the whole one.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        self.write(path, Existing::Refuse)
    }

    /// Writes the key with mode 0600 over whatever `path` holds, atomically (temporary file,
    /// sync, rename, directory sync): a crash leaves the old file or the new one, whole.
    pub fn write_replacing(&self, path: &Path) -> Result<(), KeyFileError> {
        self.write(path, Existing::Replace)
    }

    fn write(&self, path: &Path, existing: Existing) -> Result<(), KeyFileError> {
        let write = |source| KeyFileError::Write { path: path.to_path_buf(), source };
        let json = KeyFileJson {
            kind: "ed25519".into(),
            public_key: self.public_key(),
            secret_key: hex::encode(self.secret.seed()),
        };
        let mut text =
            serde_json::to_string_pretty(&json).map_err(|error| write(std::io::Error::other(error)))?;
        text.push('\n');
        match durable::write_file(path, text.as_bytes(), 0o600, existing) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(KeyFileError::Exists { path: path.to_path_buf() })
            }
            Err(error) => Err(write(error)),
        }
    }

    /// Reads a key file, refusing files that group or others can read.
    pub fn read(path: &Path) -> Result<KeyFile, KeyFileError> {
        let read = |source| KeyFileError::Read { path: path.to_path_buf(), source };
        let metadata = std::fs::metadata(path).map_err(read)?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions { path: path.to_path_buf(), mode });
        }
        if metadata.len() > KEY_FILE_BYTES_MAX {
            return Err(KeyFileError::Parse {
                path: path.to_path_buf(),
                field: "(file)".into(),
                message: format!("{} bytes is too large for a key file", metadata.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let deserializer = &mut serde_json::Deserializer::from_str(&text);
        let json: KeyFileJson =
            serde_path_to_error::deserialize(deserializer).map_err(|error| KeyFileError::Parse {
                path: path.to_path_buf(),
                field: error.path().to_string(),
                message: error.into_inner().to_string(),
            })?;
        if json.kind != "ed25519" {
            return Err(KeyFileError::WrongType { path: path.to_path_buf(), found: json.kind });
        }
        let seed = tetrad_consensus::types::decode_hex_array::<32>(&json.secret_key).map_err(|error| {
            KeyFileError::Parse {
                path: path.to_path_buf(),
                field: "secret_key".into(),
                message: error.to_string(),
            }
        })?;
        let secret = SecretKey::from_seed(seed);
        if secret.public_key() != json.public_key {
            return Err(KeyFileError::Mismatch {
                path: path.to_path_buf(),
                expected: secret.public_key(),
                found: json.public_key,
            });
        }
        Ok(KeyFile { secret })
    }
}
