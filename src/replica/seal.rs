//! Sealed objects (docs/encryption.md): an object's bytes encrypted and authenticated
//! under a key of its own, derived from the replica's data key, a fresh salt and the
//! object's name, in frames of [`FRAME`] bytes, so a multi-gigabyte delta streams
//! through in bounded memory and a ranged read of whole frames decrypts on its own.
//! Pure: bytes in, bytes out; where objects come from is `transfer.rs`'s business.
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

/// The first bytes of every sealed object.
pub const MAGIC: &[u8; 8] = b"CASCENC1";
/// The magic and the salt.
pub const HEADER: u64 = 40;
/// An AES-GCM tag, after every frame.
pub const TAG: u64 = 16;
/// Plaintext bytes per frame.
pub const FRAME: u64 = 1 << 20;

/// A frame is refused, or the object is not sealed at all: why, for the caller to say
/// with the object's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The replica's data key. Its bytes never leave this module but wrapped in a slot
/// (`keys.rs`). Its own copy is wiped when it is dropped, a best effort: the key
/// schedules ring derives from it, and the buffers a slot was unwrapped in, are not.
pub struct DataKey {
    pub id: String,
    bytes: [u8; 32],
}

impl DataKey {
    pub fn new(id: String, bytes: [u8; 32]) -> DataKey {
        DataKey { id, bytes }
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The key of the object named `name` sealed with `salt`.
    fn object_key(&self, salt: &[u8], name: &str) -> LessSafeKey {
        let okm_info = [b"cascade object v1".as_slice(), &[0], name.as_bytes()];
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(&self.bytes);
        let okm = prk
            .expand(&okm_info, &AES_256_GCM)
            .expect("32 bytes is within HKDF's limit");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.bytes.fill(0);
        // Keeps the wipe from being optimised away as a store nothing reads.
        std::hint::black_box(&self.bytes);
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

/// `n` bytes from the operating system's random source.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random source fails only if it is absent");
    b
}

/// How many frames an object of `plain` plaintext bytes has: at least one.
pub fn frames(plain: u64) -> u64 {
    plain.div_ceil(FRAME).max(1)
}

/// The stored size of a sealed object of `plain` plaintext bytes.
pub fn sealed_size(plain: u64) -> u64 {
    HEADER + plain + TAG * frames(plain)
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[8..].copy_from_slice(&u32::from(last).to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals an object as its plaintext arrives: whole frames go out as soon as more
/// data follows them (only then is it known they are not the last).
pub struct Sealer {
    key: LessSafeKey,
    index: u64,
    /// Plaintext not yet sealed: at most one frame once `push` returns.
    pending: Vec<u8>,
}

impl Sealer {
    /// A sealer for object `name`, and the header the object starts with.
    pub fn new(data: &DataKey, name: &str) -> (Sealer, Vec<u8>) {
        let salt: [u8; 32] = random();
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&salt);
        let sealer = Sealer {
            key: data.object_key(&salt, name),
            index: 0,
            pending: Vec::with_capacity(FRAME as usize),
        };
        (sealer, header)
    }

    /// Takes `data`; appends to `out` every frame it completes.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.pending.len() == FRAME as usize {
                self.seal_pending(false, out);
            }
            let n = (FRAME as usize - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Seals what is left as the last frame.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.seal_pending(true, out);
    }

    fn seal_pending(&mut self, last: bool, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.pending);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.index, last), Aad::empty(), &mut out[at..])
            .expect("a frame is far below AES-GCM's message limit");
        out.extend_from_slice(tag.as_ref());
        self.pending.clear();
        self.index += 1;
    }
}

/// Opens a sealed object's frames in order, as its bytes arrive in pieces of whole
/// frames (the header with the first).
pub struct Opener {
    key: LessSafeKey,
    index: u64,
    frames: u64,
    plain: u64,
}

impl Opener {
    /// An opener for object `name` of `plain` plaintext bytes, from its header.
    pub fn new(data: &DataKey, name: &str, header: &[u8], plain: u64) -> Result<Opener, Refused> {
        if header.len() < HEADER as usize || &header[..8] != MAGIC {
            return Err(Refused(
                "it is not a sealed object (no CASCENC1 header): it was not written by an encrypting exporter"
                    .into(),
            ));
        }
        Ok(Opener {
            key: data.object_key(&header[8..HEADER as usize], name),
            index: 0,
            frames: frames(plain),
            plain,
        })
    }

    /// The stored length of frame `index`.
    fn frame_len(&self, index: u64) -> u64 {
        let before = index * FRAME;
        (self.plain - before).min(FRAME) + TAG
    }

    /// Opens `piece`, which holds whole frames from the next one on, in place; returns
    /// the plaintext's length at its start.
    pub fn open(&mut self, piece: &mut [u8]) -> Result<usize, Refused> {
        let (mut read, mut written) = (0usize, 0usize);
        while read < piece.len() {
            if self.index == self.frames {
                return Err(Refused("it runs past its last frame".into()));
            }
            let len = self.frame_len(self.index) as usize;
            if piece.len() - read < len {
                return Err(Refused(format!("frame {} is cut short", self.index)));
            }
            let last = self.index + 1 == self.frames;
            let frame = &mut piece[read..read + len];
            let plain = self
                .key
                .open_in_place(nonce(self.index, last), Aad::empty(), frame)
                .map_err(|_| {
                    Refused(format!(
                        "frame {} does not authenticate under the replica's key: the object was \
                         changed, moved from another name, or sealed under another key",
                        self.index
                    ))
                })?
                .len();
            piece.copy_within(read..read + plain, written);
            read += len;
            written += plain;
            self.index += 1;
        }
        Ok(written)
    }

    /// Whether every frame was opened.
    pub fn done(&self) -> bool {
        self.index == self.frames
    }

    /// The stored byte ranges of the object in pieces of `frames_per_piece` frames, the
    /// header joined to the first: each piece opens on its own, in order.
    pub fn pieces(plain: u64, frames_per_piece: u64) -> Vec<std::ops::Range<u64>> {
        let total = sealed_size(plain);
        let step = frames_per_piece * (FRAME + TAG);
        let mut at = 0;
        let mut out = Vec::new();
        while at < total {
            let end = (if at == 0 { HEADER } else { at } + step).min(total);
            out.push(at..end);
            at = end;
        }
        out
    }
}

/// `plain` sealed whole as object `name` (a manifest's head or chunk).
pub fn seal(data: &DataKey, name: &str, plain: &[u8]) -> Vec<u8> {
    let (mut s, mut out) = Sealer::new(data, name);
    out.reserve(plain.len() + (TAG * frames(plain.len() as u64)) as usize);
    s.push(plain, &mut out);
    s.finish(&mut out);
    out
}

/// Object `name`'s plaintext from all of its stored bytes.
pub fn open(data: &DataKey, name: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>, Refused> {
    let stored = sealed.len() as u64;
    let header = stored.min(HEADER) as usize;
    // The plaintext size the stored size implies: stored = HEADER + plain + TAG × frames.
    let body = stored.saturating_sub(HEADER);
    let whole = body / (FRAME + TAG);
    let rest = body % (FRAME + TAG);
    let plain = whole * FRAME + rest.saturating_sub(TAG);
    if stored < HEADER + TAG || sealed_size(plain) != stored {
        return Err(Refused(format!(
            "{stored} bytes is not the size of any sealed object"
        )));
    }
    let mut o = Opener::new(data, name, &sealed[..header], plain)?;
    let n = o.open(&mut sealed[header..])?;
    sealed.copy_within(header..header + n, 0);
    sealed.truncate(n);
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::new("k".into(), [7; 32])
    }

    #[test]
    fn sizes_round_trip_at_every_edge_of_a_frame() {
        let k = key();
        for len in [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&k, "deltas/1", &plain);
            assert_eq!(sealed.len() as u64, sealed_size(len), "{len}");
            assert_eq!(open(&k, "deltas/1", sealed.clone()).unwrap(), plain);
            // Ranged pieces of two frames open in order to the same bytes.
            let mut o = Opener::new(&k, "deltas/1", &sealed, len).unwrap();
            let mut got = Vec::new();
            for r in Opener::pieces(len, 2) {
                let mut piece = sealed[r.start as usize..r.end as usize].to_vec();
                let skip = if r.start == 0 { HEADER as usize } else { 0 };
                let n = o.open(&mut piece[skip..]).unwrap();
                got.extend_from_slice(&piece[skip..skip + n]);
            }
            assert!(o.done());
            assert_eq!(got, plain, "{len}");
        }
    }

    #[test]
    fn a_changed_byte_another_name_another_key_or_a_cut_is_refused() {
        let k = key();
        let plain = vec![1u8; (2 * FRAME + 10) as usize];
        let sealed = seal(&k, "deltas/1", &plain);
        for at in [0, 9, HEADER as usize, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(open(&k, "deltas/1", bad).is_err(), "byte {at}");
        }
        assert!(open(&k, "deltas/2", sealed.clone()).is_err());
        assert!(open(
            &DataKey::new("o".into(), [8; 32]),
            "deltas/1",
            sealed.clone()
        )
        .is_err());
        // Cut at a frame boundary: the new last frame was not sealed as last.
        let cut = sealed[..(HEADER + FRAME + TAG) as usize].to_vec();
        let e = open(&k, "deltas/1", cut).unwrap_err();
        assert!(e.0.contains("frame 0 does not authenticate"), "{e:?}");
        // Two sealings of the same bytes differ (fresh salts, so fresh keys).
        assert_ne!(seal(&k, "m", b"x"), seal(&k, "m", b"x"));
    }
}
