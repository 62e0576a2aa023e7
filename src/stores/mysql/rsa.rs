//! `caching_sha2_password`'s full exchange without TLS: the password
//! (NUL-terminated, XORed with the login's nonce) encrypted with the
//! server's RSA public key, OAEP with SHA-1, as MySQL 8 expects. The
//! arithmetic and padding are `mysql_common`'s; the key is parsed and
//! checked here, because its own PEM/DER parser panics on a malformed key,
//! which a hostile server may well send.

use mysql_common::crypto::rsa::{GetRandom, Pkcs1OaepPadding, PublicKey};
use mysql_common::num_bigint::BigUint;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;

use super::error::Error;

/// The DER of the rsaEncryption OID, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// Modulus sizes accepted, in bits: nothing weaker than MySQL ever made,
/// nothing so large that one login costs real CPU.
const MODULUS_BITS: std::ops::RangeInclusive<u64> = 1024..=16384;
/// OAEP with SHA-1 takes 2 × 20 + 2 bytes of each block.
const OAEP_OVERHEAD: usize = 42;

/// The encrypted password for a server whose public key is `pem` (a
/// `-----BEGIN PUBLIC KEY-----` block).
pub fn encrypt_password(pem: &[u8], password: &str, nonce: &[u8]) -> Result<Vec<u8>, Error> {
    let key = public_key(pem).ok_or_else(|| {
        Error::protocol("the server's RSA public key is not one the canary takes")
    })?;
    if nonce.is_empty() {
        return Err(Error::protocol("an empty nonce"));
    }
    let mut data = password.as_bytes().to_vec();
    data.push(0);
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    if data.len() + OAEP_OVERHEAD > key.num_octets() {
        return Err(Error::Auth(
            "the password is too long for the server's RSA key".into(),
        ));
    }
    Ok(key.encrypt_block(&data, Pkcs1OaepPadding::new(GetRandom)))
}

/// The modulus and exponent of an RSA `SubjectPublicKeyInfo`, if sane.
fn public_key(pem: &[u8]) -> Option<PublicKey> {
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem).ok()?;
    let (spki, _) = der(spki.as_ref(), 0x30)?;
    let (algorithm, rest) = der(spki, 0x30)?;
    let (oid, _) = der(algorithm, 0x06)?;
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (bits, _) = der(rest, 0x03)?;
    let (0, key) = bits.split_first()? else {
        return None;
    };
    let (key, _) = der(key, 0x30)?;
    let (modulus, rest) = der(key, 0x02)?;
    let (exponent, _) = der(rest, 0x02)?;
    let modulus = BigUint::from_bytes_be(modulus);
    let exponent = BigUint::from_bytes_be(exponent);
    let sane = MODULUS_BITS.contains(&modulus.bits())
        && modulus.bit(0)
        && exponent >= BigUint::from(3u8)
        && exponent.bits() <= 64;
    sane.then(|| PublicKey::new(modulus, exponent))
}

/// The contents of the DER element of `tag` at the start of `input`, and
/// what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes.iter().fold(0usize, |a, &b| a << 8 | usize::from(b));
        (len, rest)
    };
    rest.split_at_checked(len)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// A 2048-bit RSA key made with the real `openssl`: `key.pem` (private)
    /// in `dir`, and the public key's PEM.
    pub fn make_key(dir: &Path) -> Vec<u8> {
        for args in [
            "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem",
            "pkey -in key.pem -pubout -out pub.pem",
        ] {
            let out = Command::new("openssl")
                .current_dir(dir)
                .args(args.split(' '))
                .output()
                .expect("openssl is needed: apt-get install -y openssl");
            assert!(out.status.success(), "openssl {args}: {out:?}");
        }
        std::fs::read(dir.join("pub.pem")).unwrap()
    }

    /// Decrypts an OAEP (SHA-1) block with `dir/key.pem`, as the server would.
    pub fn decrypt(dir: &Path, block: &[u8]) -> Vec<u8> {
        std::fs::write(dir.join("block"), block).unwrap();
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(["pkeyutl", "-decrypt", "-inkey", "key.pem", "-pkeyopt"])
            .args(["rsa_padding_mode:oaep", "-in", "block"])
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl pkeyutl: {out:?}");
        out.stdout
    }

    #[test]
    fn the_server_can_decrypt_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let pem = make_key(dir.path());
        let nonce = b"0123456789abcdefghij";
        let block = encrypt_password(&pem, "s3cret", nonce).unwrap();
        let plain: Vec<u8> = decrypt(dir.path(), &block)
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ nonce[i % nonce.len()])
            .collect();
        assert_eq!(plain, b"s3cret\0");
    }

    #[test]
    fn malformed_keys_are_refused_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let pem = make_key(dir.path());
        let der = SubjectPublicKeyInfoDer::from_pem_slice(&pem).unwrap();
        let b64 = |der: &[u8]| {
            use base64::Engine;
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
        };
        // Every truncation and a flipped byte at every offset.
        for cut in 0..der.len() {
            let _ = encrypt_password(b64(&der[..cut]).as_bytes(), "pw", b"n");
            let mut bad = der.to_vec();
            bad[cut] ^= 0xFF;
            let _ = encrypt_password(b64(&bad).as_bytes(), "pw", b"n");
        }
        for garbage in [
            &b""[..],
            b"-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(matches!(
                encrypt_password(garbage, "pw", b"n"),
                Err(Error::Protocol(_))
            ));
        }
        let long = "x".repeat(300);
        assert!(matches!(
            encrypt_password(&pem, &long, b"n"),
            Err(Error::Auth(_))
        ));
    }
}
