//! The history of a room kept in a NATS JetStream stream (`chatd
//! --cluster`): the stream is the log, shared by every server, and gives
//! the positions. The room appends here only what came back from the
//! stream, in its order, so appending stores nothing: it was stored before
//! anyone could be sent it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Event, History, NotStored, Replay};
use crate::cluster::{self, Bridge};

#[derive(Debug)]
pub struct Stream {
    bridge: Arc<Bridge>,
    last: AtomicU64,
    last_time: AtomicU64,
    /// The first position kept, as last read from NATS: what to say when
    /// NATS cannot be asked.
    first: AtomicU64,
}

impl Stream {
    /// The stream's history as it is now.
    pub fn open(bridge: Arc<Bridge>) -> anyhow::Result<Stream> {
        let kept = bridge.kept().map_err(|e| anyhow::anyhow!("cannot read the room's stream: {e}"))?;
        Ok(Stream {
            bridge,
            last: AtomicU64::new(kept.last),
            last_time: AtomicU64::new(kept.last_time_ms),
            first: AtomicU64::new(kept.first),
        })
    }

    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }
}

impl History for Stream {
    fn epoch(&self) -> &str {
        self.bridge.epoch()
    }

    fn last_seq(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    fn last_time_ms(&self) -> u64 {
        self.last_time.load(Ordering::SeqCst)
    }

    fn first_kept(&self) -> u64 {
        if let Ok(kept) = self.bridge.kept() {
            self.first.store(kept.first, Ordering::SeqCst);
        }
        self.first.load(Ordering::SeqCst).min(self.last_seq() + 1)
    }

    fn append(&self, seq: u64, time_ms: u64, _: &[u8], _: bool) -> Result<(), NotStored> {
        self.last.store(seq, Ordering::SeqCst);
        self.last_time.store(time_ms, Ordering::SeqCst);
        Ok(())
    }

    fn read(&self, from: u64, to: u64) -> io::Result<Box<dyn Replay>> {
        let chunks = self.bridge.read(from, to).map_err(io::Error::other)?;
        Ok(Box::new(StreamReplay { chunks, left: Default::default() }))
    }
}

/// A replay from the stream: its chunks, handed on `max` events at a time.
#[derive(Debug)]
struct StreamReplay {
    chunks: cluster::Replay,
    left: std::collections::VecDeque<Event>,
}

impl Replay for StreamReplay {
    fn next_chunk(&mut self, out: &mut Vec<Event>, max: usize) -> io::Result<bool> {
        if self.left.is_empty() {
            match self.chunks.next_chunk() {
                Some(Ok(chunk)) => self.left.extend(chunk),
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(false),
            }
        }
        let n = max.max(1).min(self.left.len());
        out.extend(self.left.drain(..n));
        Ok(true)
    }
}
