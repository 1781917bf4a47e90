//! The seal+open cases the `crypto` and `seal_open_ratio` benchmarks run: raw ring
//! `LessSafeKey` next to the keyring, with the same fresh random nonce, allocation and AAD.

use std::hint::black_box;

use ring::aead::{self, AES_256_GCM, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use xrole_crypto::{Aad, Keyring};

pub struct SealOpen {
    keyring: Keyring,
    aad: Aad,
    raw: LessSafeKey,
    rng: SystemRandom,
    plaintext: Vec<u8>,
}

impl SealOpen {
    /// A fresh keyring and raw key, and a plaintext of `size` bytes.
    pub fn new(size: usize) -> Self {
        SealOpen {
            keyring: Keyring::generate().unwrap(),
            aad: Aad::new(
                "aws_links",
                "external_id",
                "0190c7a4-7e1b-7cc2-8f4e-6f1d2c3b4a59",
                "0190c7a4-8000-7abc-9def-0123456789ab",
            ),
            raw: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap()),
            rng: SystemRandom::new(),
            plaintext: vec![0x5au8; size],
        }
    }

    /// Baseline: ring alone, with the same fresh random nonce, allocation and AAD. It
    /// decrypts its own buffer in place and frees it without clearing it.
    pub fn ring_less_safe_key(&self) {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).unwrap();
        let mut buf = Vec::with_capacity(self.plaintext.len() + 16);
        buf.extend_from_slice(black_box(&self.plaintext));
        self.raw
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(self.aad.as_bytes()),
                &mut buf,
            )
            .unwrap();
        let mut ct = black_box(buf);
        let pt = self
            .raw
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(self.aad.as_bytes()),
                &mut ct,
            )
            .unwrap();
        black_box(pt.len());
    }

    /// `Keyring::seal`, then `Keyring::open` of the borrowed blob (a copy is decrypted).
    pub fn xrole_keyring(&self) {
        let blob = self
            .keyring
            .seal(black_box(&self.plaintext), &self.aad)
            .unwrap();
        let opened = self.keyring.open(black_box(&blob), &self.aad).unwrap();
        black_box(opened.expose_secret().len());
    }

    /// `Keyring::seal`, then `Keyring::open_owned` of the blob (decrypted in place).
    pub fn xrole_keyring_owned(&self) {
        let blob = self
            .keyring
            .seal(black_box(&self.plaintext), &self.aad)
            .unwrap();
        let opened = self.keyring.open_owned(black_box(blob), &self.aad).unwrap();
        black_box(opened.expose_secret().len());
    }
}
