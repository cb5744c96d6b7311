//! Signing secrets: made with each level, sealed at rest, rotated with an overlap.
//!
//! A level's `whsec_` secret is sealed (ChaCha20-Poly1305) with a key that lives outside the
//! database (`TIDINGS_SECRET_KEY`, or a key file made on first start), so a dump of the
//! database alone does not reveal any secret. Never log a secret or put one in a payload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use tidings_verify::Secret;

use crate::domain::Millis;

/// How long the old secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// Seals and opens secrets with the instance key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    /// Secrets opened before, by their sealed text: every attempt signs with its level's
    /// secret, and opening one (base64, ChaCha20-Poly1305) cost more than the signature. A
    /// sealed text names one secret for good (a rotation stores a new text), so an entry
    /// is never stale.
    opened: Arc<Mutex<HashMap<String, Secret>>>,
}

/// Most opened secrets kept; past it the cache starts over.
const OPENED_KEPT: usize = 4096;

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "TIDINGS_SECRET_KEY must be 32 bytes in base64 (make one with `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error("key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("a stored secret cannot be opened with this instance's key (was the key changed?)")]
    CannotOpen,
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> Self {
        SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            opened: Arc::default(),
        }
    }

    /// The key from `TIDINGS_SECRET_KEY` (base64) if given, else from `file`, which is made
    /// (mode 0600) with a fresh random key when missing.
    pub fn load(key_b64: Option<&str>, file: &Path) -> Result<Self, SecretError> {
        if let Some(k) = key_b64 {
            let bytes = B64.decode(k.trim()).map_err(|_| SecretError::BadKey)?;
            return Ok(SecretBox::new(
                bytes.try_into().map_err(|_| SecretError::BadKey)?,
            ));
        }
        let io = |source| SecretError::KeyFile {
            path: file.display().to_string(),
            source,
        };
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let bytes = B64.decode(text.trim()).map_err(|_| SecretError::BadKey)?;
                Ok(SecretBox::new(
                    bytes.try_into().map_err(|_| SecretError::BadKey)?,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                write_private(file, &B64.encode(key)).map_err(io)?;
                tracing::info!(file = %file.display(), "made a new secret-sealing key; keep it with the database backups");
                Ok(SecretBox::new(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals a secret for storage: base64 of nonce and ciphertext.
    pub fn seal(&self, secret: &Secret) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let plain = secret.to_string();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("sealing cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Secret, SecretError> {
        if let Some(secret) = self.opened().get(sealed) {
            return Ok(secret.clone());
        }
        let secret = self.open_uncached(sealed)?;
        let mut opened = self.opened();
        if opened.len() >= OPENED_KEPT {
            opened.clear();
        }
        opened.insert(sealed.to_owned(), secret.clone());
        Ok(secret)
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<String, Secret>> {
        // A panic while the map was held leaves nothing half-done worth refusing.
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_uncached(&self, sealed: &str) -> Result<Secret, SecretError> {
        let bytes = B64.decode(sealed).map_err(|_| SecretError::CannotOpen)?;
        if bytes.len() < 12 {
            return Err(SecretError::CannotOpen);
        }
        let (nonce, ct) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::CannotOpen)?;
        let text = String::from_utf8(plain).map_err(|_| SecretError::CannotOpen)?;
        Secret::parse(&text).map_err(|_| SecretError::CannotOpen)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A new random secret: `whsec_` and the base64 of 24 random bytes.
pub fn generate() -> Secret {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::from_bytes(&bytes)
}

/// A level's secrets as stored (sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecrets {
    pub current: String,
    pub previous: Option<(String, Millis)>,
}

/// The secrets that sign an attempt made at `now`: the current one, and the previous one
/// while its overlap lasts.
pub struct Signer {
    secrets: Vec<Secret>,
}

impl Signer {
    pub fn open(
        sealed: &SealedSecrets,
        now: Millis,
        keys: &SecretBox,
    ) -> Result<Signer, SecretError> {
        let mut secrets = vec![keys.open(&sealed.current)?];
        if let Some((prev, until)) = &sealed.previous {
            if now < *until {
                secrets.push(keys.open(prev)?);
            }
        }
        Ok(Signer { secrets })
    }

    /// The `webhook-signature` header: one `v1,<sig>` per secret, space-separated.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let sigs: Vec<String> = self
            .secrets
            .iter()
            .map(|s| s.sign(id, timestamp, body))
            .collect();
        sigs.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_verify::Verifier;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key() {
        let a = SecretBox::new([7; 32]);
        let b = SecretBox::new([8; 32]);
        let s = generate();
        let sealed = a.seal(&s);
        assert!(
            !sealed.contains(&s.to_string()[6..]),
            "the sealed text must not contain the key"
        );
        assert_eq!(a.open(&sealed).unwrap().to_string(), s.to_string());
        assert!(matches!(b.open(&sealed), Err(SecretError::CannotOpen)));
        // Opened again (from the cache of opened secrets): the same; still not with `b`.
        assert_eq!(a.open(&sealed).unwrap().to_string(), s.to_string());
        assert!(matches!(
            b.clone().open(&sealed),
            Err(SecretError::CannotOpen)
        ));
    }

    #[test]
    fn during_the_overlap_both_secrets_sign_and_after_it_only_the_new_one() {
        let keys = SecretBox::new([1; 32]);
        let (old, new) = (generate(), generate());
        let sealed = SealedSecrets {
            current: keys.seal(&new),
            previous: Some((keys.seal(&old), Millis(1_000_000))),
        };
        let during = Signer::open(&sealed, Millis(999_999), &keys).unwrap();
        let header = during.signature("msg_1", 1_000, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for s in [&old, &new] {
            let v = Verifier::new(Secret::parse(&s.to_string()).unwrap());
            assert!(v.verify_at("msg_1", "1000", &header, b"{}", 1_000).is_ok());
        }
        let after = Signer::open(&sealed, Millis(1_000_000), &keys).unwrap();
        let header = after.signature("msg_1", 1_000, b"{}");
        let old_v = Verifier::new(Secret::parse(&old.to_string()).unwrap());
        assert!(old_v
            .verify_at("msg_1", "1000", &header, b"{}", 1_000)
            .is_err());
    }
}
