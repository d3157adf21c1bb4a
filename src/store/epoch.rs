//! The history's name: 16 random letters and digits in `DIR/epoch`, made
//! when the directory has no history. A client that kept a seq from an
//! earlier history sees another epoch and knows the seq means nothing here.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context};

const LEN: usize = 16;
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The epoch `dir` holds.
pub(crate) fn read(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("epoch");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "{} holds a history but cannot read {}; restore that file, or remove {0} to start a new history",
            dir.display(),
            path.display()
        )
    })?;
    let epoch = text.trim_end_matches('\n');
    if epoch.len() != LEN || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!(
            "{} does not hold an epoch ({LEN} letters and digits); restore it, or remove {} to start a new history",
            path.display(),
            dir.display()
        );
    }
    Ok(epoch.to_owned())
}

/// Makes a new epoch for `dir` and writes it there, durably: replaced
/// whole (through a rename), so a crash leaves the old one or the new one.
pub(crate) fn make(dir: &Path) -> anyhow::Result<String> {
    let epoch = random_name().context("reading /dev/urandom")?;
    let tmp = dir.join("epoch.tmp");
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(format!("{epoch}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, dir.join("epoch")))
        .with_context(|| format!("writing {}", tmp.display()))?;
    Ok(epoch)
}

fn random_name() -> std::io::Result<String> {
    let mut urandom = File::open("/dev/urandom")?;
    let mut name = String::with_capacity(LEN);
    let mut bytes = [0u8; 32];
    while name.len() < LEN {
        urandom.read_exact(&mut bytes)?;
        // 248 is the largest multiple of 62 a byte holds: a byte at or past
        // it is skipped, so that every character is as likely.
        let fair = bytes.iter().filter(|&&b| b < 248);
        name.extend(fair.map(|&b| char::from(ALPHABET[usize::from(b % 62)])).take(LEN - name.len()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sixteen_letters_and_digits_and_differ() {
        let (a, b) = (random_name().unwrap(), random_name().unwrap());
        assert!(a.len() == LEN && a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
