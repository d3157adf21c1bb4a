//! Names across the cluster: create-only claims in the names bucket, and the
//! sweep that frees the names of dead servers (see the module above).

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use super::link::Link;
use super::Error;

/// Who holds a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The id of the server its member is on.
    pub server: String,
    /// What that server stored with it.
    pub value: Vec<u8>,
    /// The bucket's revision of this claim: later claims have higher ones.
    pub revision: u64,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Claimed, at this revision of the bucket.
    Claimed(u64),
    Taken(Holder),
}

/// A name changing hands: who holds it now (`None`: nobody), as of which
/// revision of the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name_key: String,
    pub holder: Option<Holder>,
    pub revision: u64,
}

/// A name freed because its server died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    pub name_key: String,
    pub holder: Holder,
}

/// How a name key is kept: NATS keys are ASCII (`[-/_=.a-zA-Z0-9]`), names
/// are not, so in hex.
pub fn key_of(name_key: &str) -> Result<String, Error> {
    if name_key.is_empty() {
        return Err(Error::Failed("an empty name cannot be claimed".into()));
    }
    Ok(name_key.bytes().map(|b| format!("{b:02x}")).collect())
}

fn name_of(key: &str) -> Option<String> {
    let bytes = (0..key.len())
        .step_by(2)
        .map(|i| key.get(i..i + 2).and_then(|hex| u8::from_str_radix(hex, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn stored(server: &str, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(server.len() + 1 + value.len());
    stored.extend_from_slice(server.as_bytes());
    stored.push(b'\n');
    stored.extend_from_slice(value);
    stored
}

fn holder_of(stored: &[u8], revision: u64) -> Holder {
    let split = stored.iter().position(|&b| b == b'\n').unwrap_or(stored.len());
    Holder {
        server: String::from_utf8_lossy(&stored[..split]).into_owned(),
        value: stored.get(split + 1..).unwrap_or_default().to_vec(),
        revision,
    }
}

pub async fn claim(link: &Link, name_key: &str, value: Vec<u8>) -> Result<Claim, Error> {
    let key = key_of(name_key)?;
    let stored = stored(&link.server_id, &value);
    // A name released between a failed create and the read is claimed again.
    for _ in 0..5 {
        match link.names.create(&key, stored.clone().into()).await {
            Ok(revision) => return Ok(Claim::Claimed(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::Failed(format!("cannot claim the name: {e}"))),
        }
        if let Some(holder) = holder(link, name_key).await? {
            return Ok(Claim::Taken(holder));
        }
    }
    Err(Error::Failed("cannot claim the name: it keeps changing hands".into()))
}

/// Who holds the name.
pub async fn holder(link: &Link, name_key: &str) -> Result<Option<Holder>, Error> {
    let key = key_of(name_key)?;
    match link.names.entry(&key).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => Ok(Some(holder_of(&entry.value, entry.revision))),
        Ok(_) => Ok(None),
        Err(e) => Err(Error::Failed(format!("cannot read who holds the name: {e}"))),
    }
}

pub async fn release(link: &Link, name_key: &str) -> Result<bool, Error> {
    match holder(link, name_key).await? {
        Some(holder) if holder.server == link.server_id => {
            let key = key_of(name_key)?;
            match link.names.delete_expect_revision(&key, Some(holder.revision)).await {
                Ok(()) => Ok(true),
                // Changed meanwhile: no longer ours.
                Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(Error::Failed(format!("cannot release the name: {e}"))),
            }
        }
        _ => Ok(false),
    }
}

/// Frees a name if it is still held at `revision`: `false` when it
/// changed hands meanwhile.
pub async fn release_at(link: &Link, name_key: &str, revision: u64) -> Result<bool, Error> {
    let key = key_of(name_key)?;
    match link.names.delete_expect_revision(&key, Some(revision)).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(Error::Failed(format!("cannot release the name: {e}"))),
    }
}

/// Moves a name held at `revision` to this server, with `value`: the
/// revision that says so, or `None` when it changed hands meanwhile.
pub async fn take_over(link: &Link, name_key: &str, revision: u64, value: Vec<u8>) -> Result<Option<u64>, Error> {
    let key = key_of(name_key)?;
    match link.names.update(&key, stored(&link.server_id, &value).into(), revision).await {
        Ok(revision) => Ok(Some(revision)),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(Error::Failed(format!("cannot take the name over: {e}"))),
    }
}

/// Every name held, with its holder, on every server.
pub async fn all(link: &Link) -> Result<Vec<(String, Holder)>, Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Failed(format!("cannot list the names: {e}"));
    let mut keys = link.names.keys().await.map_err(|e| failed(&e))?;
    let mut held = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| failed(&e))?;
        let Some(name_key) = name_of(&key) else { continue };
        match link.names.entry(&key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                held.push((name_key, holder_of(&entry.value, entry.revision)));
            }
            Ok(_) => {}
            Err(e) => return Err(failed(&e)),
        }
    }
    Ok(held)
}

/// Sends every change of hands to `sink`, from now on, until its receiver
/// is gone; a watch lost with the connection is made again from the next
/// revision wanted.
pub async fn watch_changes(link: Arc<Link>, sink: mpsc::Sender<Change>) {
    let mut next: Option<u64> = None;
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let watch = match next {
            Some(revision) => link.names.watch_all_from_revision(revision).await,
            None => link.names.watch_all().await,
        };
        if let Ok(mut watch) = watch {
            while let Some(Ok(entry)) = watch.next().await {
                backoff = std::time::Duration::from_millis(100);
                next = Some(entry.revision + 1);
                let Some(name_key) = name_of(&entry.key) else { continue };
                let holder = (entry.operation == kv::Operation::Put).then(|| holder_of(&entry.value, entry.revision));
                if sink.send(Change { name_key, holder, revision: entry.revision }).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    }
}

/// Scans the names every heartbeat period and frees those of dead servers.
pub async fn watch_dead(link: Arc<Link>, sink: mpsc::Sender<Freed>) {
    // The servers seen without a heartbeat, since when.
    let mut suspects: HashMap<String, Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(link.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Ok(Err(())) =
            tokio::time::timeout(super::link::REQUEST_TIMEOUT, sweep(&link, &mut suspects, &sink)).await
        {
            return;
        }
    }
}

/// One scan; `Err` once the sink is gone.
async fn sweep(link: &Link, suspects: &mut HashMap<String, Instant>, sink: &mpsc::Sender<Freed>) -> Result<(), ()> {
    let Ok(names) = all(link).await else { return Ok(()) };
    let mut held: HashMap<String, Vec<(String, Holder)>> = HashMap::new();
    for (name_key, holder) in names {
        if holder.server != link.server_id {
            held.entry(holder.server.clone()).or_default().push((name_key, holder));
        }
    }
    let now = Instant::now();
    let last_beat = *link.last_beat.lock().unwrap_or_else(PoisonError::into_inner);
    suspects.retain(|server, _| held.contains_key(server));
    for (server, names) in held {
        let alive =
            matches!(link.servers.entry(&server).await, Ok(Some(entry)) if entry.operation == kv::Operation::Put);
        if alive {
            suspects.remove(&server);
            continue;
        }
        let since = *suspects.entry(server).or_insert(now);
        let dead = now.duration_since(since) >= link.period && last_beat.is_some_and(|beat| beat > since);
        if !dead {
            continue;
        }
        for (name_key, holder) in names {
            let Ok(key) = key_of(&name_key) else { continue };
            // Only one of the servers sweeping at once deletes it.
            if link.names.delete_expect_revision(&key, Some(holder.revision)).await.is_ok() {
                sink.send(Freed { name_key, holder }).map_err(|_| ())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_keys_are_kept_in_hex_and_read_back() {
        for name in ["ana", "josé", "李", "a.b-c_d"] {
            let key = key_of(name).unwrap();
            assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
            assert_eq!(name_of(&key).as_deref(), Some(name));
        }
        assert!(key_of("").is_err());
        assert_eq!(name_of("zz"), None);
    }

    #[test]
    fn holders_are_stored_with_their_server() {
        let holder = holder_of(&stored("srv1", b"token\nmore"), 7);
        assert_eq!(holder, Holder { server: "srv1".into(), value: b"token\nmore".to_vec(), revision: 7 });
        assert_eq!(holder_of(b"srv2", 1), Holder { server: "srv2".into(), value: Vec::new(), revision: 1 });
    }
}
