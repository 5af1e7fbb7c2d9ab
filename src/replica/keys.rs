//! Who can read an encrypted replica (docs/encryption.md): the user's secret (a key
//! file's first line, or an environment variable), the key slots under `keys/` that
//! each wrap the replica's data key, and `encryption.json`, which names the data key.
//! Like restic's repository keys: changing who can read never rewrites data.
use super::seal::{self, DataKey};
use super::Bucket;
use crate::config::KeySource;
use crate::error::{Error, Result};
use crate::secret::{hex, unhex};
use futures_util::StreamExt;
use object_store::{PutMode, PutPayload};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};

pub const ENCRYPTION: &str = "encryption.json";
const KEYS: &str = "keys";
/// How a generated key's line starts; anything else is a passphrase.
const GENERATED: &str = "cascade-key-v1:";
const MIN_PASSPHRASE: usize = 12;
const SLOT_AAD: &[u8] = b"cascade key slot v1";
const SLOT_INFO: &[u8] = b"cascade key slot v1";
/// RFC 9106's second recommended setting with one lane (the `argon2` crate runs lanes
/// one after another): 64 MiB, 3 passes.
const ARGON2: Argon2Params = Argon2Params {
    m_kib: 65536,
    t: 3,
    p: 1,
};

/// The most a slot may ask of an unlock: 4 GiB, 64 passes, 64 lanes.
const MAX_ARGON2: Argon2Params = Argon2Params {
    m_kib: 4 << 20,
    t: 64,
    p: 64,
};

/// The secret a user reads a replica with. Its Debug never shows it.
pub enum UserSecret {
    Passphrase(String),
    Key([u8; 32]),
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<replica secret>")
    }
}

impl UserSecret {
    /// Reads the secret from where `src` says; the error says why it cannot be used,
    /// never what it is.
    pub fn load(src: &KeySource) -> std::result::Result<UserSecret, String> {
        let line = match src {
            KeySource::File(p) => {
                crate::secret::private_line(p, &format!("key file {}", p.display()))?
            }
            KeySource::Env(v) => std::env::var(v)
                .map_err(|_| format!("environment variable {v} is not set (or not UTF-8)"))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        };
        UserSecret::parse(&line)
    }

    /// A generated key (`cascade-key-v1:` and 64 hex digits), or a passphrase.
    pub fn parse(line: &str) -> std::result::Result<UserSecret, String> {
        if let Some(h) = line.strip_prefix(GENERATED) {
            return unhex::<32>(h).map(UserSecret::Key).ok_or_else(|| {
                format!("a `{GENERATED}` key has 64 hex digits; this one is damaged")
            });
        }
        let n = line.chars().count();
        if n < MIN_PASSPHRASE {
            return Err(format!(
                "the passphrase has {n} characters; it needs at least {MIN_PASSPHRASE} \
                 (or use a key made by `cascade key generate`)"
            ));
        }
        Ok(UserSecret::Passphrase(line.to_string()))
    }

    /// A fresh generated key's line.
    pub fn generate() -> String {
        format!("{GENERATED}{}", hex(&seal::random::<32>()))
    }

    fn kdf(&self) -> &'static str {
        match self {
            UserSecret::Passphrase(_) => "argon2id",
            UserSecret::Key(_) => "hkdf-sha256",
        }
    }

    /// The key-encryption key of a slot with `salt` (and, for a passphrase, `params`).
    fn kek(&self, salt: &[u8; 32], params: Option<&Argon2Params>) -> Result<LessSafeKey> {
        let bytes = match self {
            UserSecret::Key(k) => {
                let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(k);
                let okm = prk
                    .expand(&[SLOT_INFO], &AES_256_GCM)
                    .expect("32 bytes is within HKDF's limit");
                return Ok(LessSafeKey::new(UnboundKey::from(okm)));
            }
            UserSecret::Passphrase(p) => {
                let a = params.ok_or_else(|| {
                    Error::InvalidArgument("an argon2id key slot without its parameters".into())
                })?;
                // A slot is read from the store: parameters past these would let it
                // make an unlock allocate terabytes or run for days.
                if a.m_kib > MAX_ARGON2.m_kib || a.t > MAX_ARGON2.t || a.p > MAX_ARGON2.p {
                    return Err(Error::InvalidArgument(format!(
                        "a key slot's argon2 parameters (m {} KiB, t {}, p {}) are past the limits (m {} KiB, t {}, p {})",
                        a.m_kib, a.t, a.p, MAX_ARGON2.m_kib, MAX_ARGON2.t, MAX_ARGON2.p
                    )));
                }
                let params = argon2::Params::new(a.m_kib, a.t, a.p, Some(32)).map_err(|e| {
                    Error::InvalidArgument(format!("a key slot's argon2 parameters: {e}"))
                })?;
                let mut out = [0u8; 32];
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(p.as_bytes(), salt, &mut out)
                    .map_err(|e| Error::InvalidArgument(format!("argon2: {e}")))?;
                out
            }
        };
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes"));
        Ok(key)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// `encryption.json`: the replica is encrypted, under which data key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct EncryptionInfo {
    pub format: u32,
    pub cipher: String,
    pub data_key: String,
    pub frame: u64,
}

/// `keys/SLOT.json`: one secret's wrapping of the data key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Slot {
    pub format: u32,
    pub id: String,
    pub data_key: String,
    pub kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2: Option<Argon2Params>,
    pub salt: String,
    pub wrapped: String,
    pub created: String,
    pub host: String,
}

impl Slot {
    fn aad(&self) -> Vec<u8> {
        [
            SLOT_AAD,
            b"\0",
            self.data_key.as_bytes(),
            self.id.as_bytes(),
        ]
        .concat()
    }

    /// A new slot wrapping `data` under `secret`.
    fn wrap(data: &DataKey, secret: &UserSecret) -> Result<Slot> {
        let salt: [u8; 32] = seal::random();
        let mut slot = Slot {
            format: 1,
            id: hex(&seal::random::<16>()),
            data_key: data.id.clone(),
            kdf: secret.kdf().to_string(),
            argon2: matches!(secret, UserSecret::Passphrase(_)).then_some(ARGON2),
            salt: hex(&salt),
            wrapped: String::new(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        let kek = secret.kek(&salt, slot.argon2.as_ref())?;
        let mut buf = data.bytes().to_vec();
        // The KEK is this slot's alone (its salt is fresh), so its one nonce is used once.
        kek.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(slot.aad()),
            &mut buf,
        )
        .expect("32 bytes seal");
        slot.wrapped = hex(&buf);
        Ok(slot)
    }

    /// The data key, if `secret` is this slot's.
    fn unwrap(&self, secret: &UserSecret) -> Result<Option<DataKey>> {
        if self.kdf != secret.kdf() {
            return Ok(None);
        }
        let (Some(salt), Some(mut wrapped)) = (unhex::<32>(&self.salt), unhex::<48>(&self.wrapped))
        else {
            return Ok(None);
        };
        let kek = secret.kek(&salt, self.argon2.as_ref())?;
        let Ok(key) = kek.open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(self.aad()),
            &mut wrapped,
        ) else {
            return Ok(None);
        };
        let bytes: [u8; 32] = key.try_into().expect("a 48-byte slot holds 32 bytes");
        Ok(Some(DataKey::new(self.data_key.clone(), bytes)))
    }
}

/// A slot as `cascade key list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SlotInfo {
    pub id: String,
    pub kind: String,
    pub created: String,
    pub host: String,
    /// Whether the secret given opened this slot.
    pub current: bool,
}

impl Bucket {
    /// `encryption.json`, if the replica is encrypted.
    pub async fn encryption_info(&self) -> Result<Option<EncryptionInfo>> {
        let key = self.key(ENCRYPTION);
        let bytes = match self.store.get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.err("cannot read encryption.json", e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("cannot read encryption.json", e)),
        };
        let info: EncryptionInfo =
            serde_json::from_slice(&bytes).map_err(|e| Error::CorruptObject {
                url: self.url.clone(),
                object: key.to_string(),
                delta: None,
                offset: 0,
                reason: format!("encryption.json does not parse: {e}"),
            })?;
        if info.format != 1 || info.cipher != "aes-256-gcm" || info.frame != seal::FRAME {
            return Err(self.key_error(format!(
                "encryption.json says format {}, cipher {}, frames of {} bytes; this cascade \
                 reads format 1, aes-256-gcm, {}",
                info.format,
                info.cipher,
                info.frame,
                seal::FRAME
            )));
        }
        Ok(Some(info))
    }

    pub(super) fn key_error(&self, reason: String) -> Error {
        Error::Key {
            url: self.url.clone(),
            reason,
        }
    }

    /// Every key slot of the replica, oldest first.
    pub async fn slots(&self) -> Result<Vec<Slot>> {
        let mut list = self.store.list(Some(&self.key(KEYS)));
        let mut slots = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| self.err("cannot list key slots", e))?;
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(|e| self.err("cannot read a key slot", e))?
                .bytes()
                .await
                .map_err(|e| self.err("cannot read a key slot", e))?;
            // A slot that does not parse is nobody's: skipped, so a damaged one does not
            // lock out the others (`key list` shows only those that parse).
            // So is one stored under a name other than its id's: `key remove` deletes
            // by that name, and must not report a slot removed that still opens.
            match serde_json::from_slice::<Slot>(&bytes) {
                Ok(slot) if meta.location.filename() == Some(&format!("{}.json", slot.id)) => {
                    slots.push(slot)
                }
                _ => {}
            }
        }
        slots.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(slots)
    }

    /// The data key `secret` opens, and the slot that opened it.
    pub async fn unlock(&self, secret: &UserSecret) -> Result<(DataKey, String)> {
        let Some(info) = self.encryption_info().await? else {
            return Err(self.key_error(
                "it has no encryption.json: it is not an encrypted replica, or nothing was exported there yet".into(),
            ));
        };
        let slots = self.slots().await?;
        let mine: Vec<&Slot> = slots
            .iter()
            .filter(|s| s.data_key == info.data_key)
            .collect();
        for slot in &mine {
            // A slot whose parameters cannot be used is skipped like a wrong one: one
            // damaged slot must not lock out the holders of the others.
            if let Ok(Some(key)) = slot.unwrap(secret) {
                return Ok((key, slot.id.clone()));
            }
        }
        Err(self.key_error(format!(
            "the {} given opens none of its {} key slots (a wrong secret, or its slot was removed); nothing was read or written",
            match secret {
                UserSecret::Passphrase(_) => "passphrase",
                UserSecret::Key(_) => "key",
            },
            mine.len()
        )))
    }

    /// Makes a fresh replica encrypted: a random data key, wrapped by `secret` in a first
    /// slot, and `encryption.json`, created conditionally. Another writer that got there
    /// first wins: its data key is unlocked instead (and this one's slot removed).
    pub(super) async fn create_encryption(&self, secret: &UserSecret) -> Result<(DataKey, String)> {
        let data = DataKey::new(hex(&seal::random::<16>()), seal::random());
        let slot = self.put_slot(&data, secret).await?;
        let info = EncryptionInfo {
            format: 1,
            cipher: "aes-256-gcm".into(),
            data_key: data.id.clone(),
            frame: seal::FRAME,
        };
        let bytes = serde_json::to_vec_pretty(&info).expect("encryption.json serialises");
        match self
            .store
            .put_opts(
                &self.key(ENCRYPTION),
                PutPayload::from(bytes),
                PutMode::Create.into(),
            )
            .await
        {
            Ok(_) => {
                self.sync(ENCRYPTION)?;
                Ok((data, slot.id))
            }
            // Ours, landed behind a retry whose answer was lost; or another writer's:
            // then this one's slot goes, and the winner's data key is unlocked.
            Err(object_store::Error::AlreadyExists { .. }) => {
                if self
                    .encryption_info()
                    .await?
                    .is_some_and(|i| i.data_key == data.id)
                {
                    self.sync(ENCRYPTION)?;
                    return Ok((data, slot.id));
                }
                let _ = self.store.delete(&self.key(&slot_name(&slot.id))).await;
                self.unlock(secret).await
            }
            Err(e) => Err(self.err("cannot write encryption.json", e)),
        }
    }

    async fn put_slot(&self, data: &DataKey, secret: &UserSecret) -> Result<Slot> {
        let slot = Slot::wrap(data, secret)?;
        let name = slot_name(&slot.id);
        let bytes = serde_json::to_vec_pretty(&slot).expect("a slot serialises");
        match self
            .store
            .put_opts(
                &self.key(&name),
                PutPayload::from(bytes),
                PutMode::Create.into(),
            )
            .await
        {
            // The id is fresh and random: a slot already there is this write, landed
            // behind a retry.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(self.err("cannot write a key slot", e)),
        }
        self.sync(&name)?;
        Ok(slot)
    }

    /// Adds a slot for `new`, opened with this bucket's secret; returns its id.
    pub async fn add_key(&self, new: &UserSecret) -> Result<String> {
        let (data, _) = self.opened().await?;
        Ok(self.put_slot(data, new).await?.id)
    }

    /// The replica's slots, the one this bucket's secret opened marked.
    pub async fn list_keys(&self) -> Result<Vec<SlotInfo>> {
        let (data, current) = self.opened().await?;
        Ok(self
            .slots()
            .await?
            .into_iter()
            .filter(|s| s.data_key == data.id)
            .map(|s| SlotInfo {
                current: s.id == current,
                kind: match s.kdf.as_str() {
                    "argon2id" => "passphrase".into(),
                    "hkdf-sha256" => "key".into(),
                    other => other.into(),
                },
                id: s.id,
                created: s.created,
                host: s.host,
            })
            .collect())
    }

    /// Removes slot `id` (a unique prefix of it will do). Refused for the slot this
    /// bucket's secret opened (whoever removes a slot proves another still reads) and
    /// for an id that names no slot, or several.
    pub async fn remove_key(&self, id: &str) -> Result<String> {
        let keys = self.list_keys().await?;
        let matching: Vec<&SlotInfo> = keys.iter().filter(|s| s.id.starts_with(id)).collect();
        let slot = match matching[..] {
            [one] => one,
            [] => return Err(self.key_error(format!("no key slot {id}"))),
            _ => {
                return Err(self.key_error(format!(
                    "{id} names {} key slots; give more of it",
                    matching.len()
                )))
            }
        };
        if slot.current {
            return Err(self.key_error(format!(
                "slot {} is the one the secret given opens; remove it with another slot's secret, so that one is known to read the replica",
                slot.id
            )));
        }
        let name = slot_name(&slot.id);
        self.store
            .delete(&self.key(&name))
            .await
            .map_err(|e| self.err("cannot delete the key slot", e))?;
        if let Some(dir) = &self.local {
            crate::fsutil::sync_dir(&dir.join(KEYS))?;
        }
        Ok(slot.id.clone())
    }
}

fn slot_name(id: &str) -> String {
    format!("{KEYS}/{id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_as_keys_or_long_enough_passphrases_and_never_show() {
        let line = UserSecret::generate();
        assert!(matches!(UserSecret::parse(&line), Ok(UserSecret::Key(_))));
        let e = UserSecret::parse("cascade-key-v1:12").unwrap_err();
        assert!(e.contains("damaged") && !e.contains("12"), "{e}");
        let e = UserSecret::parse("short pass").unwrap_err();
        assert!(e.contains("at least 12") && !e.contains("short"), "{e}");
        let p = UserSecret::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "<replica secret>");
    }

    #[test]
    fn a_slot_asking_too_much_of_an_unlock_or_without_parameters_is_refused() {
        let data = DataKey::new("d".into(), [3; 32]);
        let pass = UserSecret::parse("correct horse battery").unwrap();
        let mut slot = Slot::wrap(&data, &pass).unwrap();
        assert_eq!(slot.unwrap(&pass).unwrap().unwrap().bytes(), &[3; 32]);
        slot.argon2 = Some(Argon2Params {
            m_kib: u32::MAX,
            ..ARGON2
        });
        let e = slot.unwrap(&pass).unwrap_err().to_string();
        assert!(e.contains("past the limits"), "{e}");
        slot.argon2 = None;
        let e = slot.unwrap(&pass).unwrap_err().to_string();
        assert!(e.contains("without its parameters"), "{e}");
    }

    #[test]
    fn a_slot_opens_with_its_secret_only() {
        let data = DataKey::new("d".into(), [3; 32]);
        let key = UserSecret::parse(&UserSecret::generate()).unwrap();
        let other = UserSecret::parse(&UserSecret::generate()).unwrap();
        let slot = Slot::wrap(&data, &key).unwrap();
        assert_eq!(slot.unwrap(&key).unwrap().unwrap().bytes(), &[3; 32]);
        assert!(slot.unwrap(&other).unwrap().is_none());
        // Moved to another data key's id, the slot no longer authenticates.
        let mut moved = slot.clone();
        moved.data_key = "e".into();
        assert!(moved.unwrap(&key).unwrap().is_none());
    }
}
