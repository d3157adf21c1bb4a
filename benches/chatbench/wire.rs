//! The wire protocols the generator speaks, each reduced to what a room
//! needs: join (or subscribe), publish, ping, and the events read back.
//! Parsing works on the bytes as read, by hand, without allocating.
//!
//! Every message carries the same payload whatever the protocol:
//! `<publisher> <seq> <t_ns> xxx…`, 56 bytes, so a chatd delivery line
//! (`MSG p0 <payload>\n`) is 64 bytes.

use memchr::memchr;

pub const PAYLOAD_LEN: usize = 56;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// minichat's line protocol (chatd and the Python baseline).
    Chat,
    /// NATS's text protocol.
    Nats,
    /// Redis's RESP, pub/sub.
    Redis,
    /// Redis's RESP, a stream: `XADD room * m <payload>` to publish; each
    /// subscriber loops on `XREAD COUNT 500 BLOCK 0 STREAMS room <id>`, from
    /// `$` (what comes after it subscribed) and then from the last id it read.
    RedisStreams,
}

/// Entries one `XREAD` returns at most: a reply must fit in the generator's
/// read buffer (an entry is about 100 bytes).
const XREAD_COUNT: &str = "500";

/// What one unit read from a server means to the generator.
#[derive(Debug)]
pub enum Event<'a> {
    /// Joined the room or subscribed (chat's `OK JOIN`, Redis's `subscribe`).
    Ready,
    /// A message's payload.
    Delivery(&'a [u8]),
    /// The answer to our ping (NATS's first `PONG` also means subscribed).
    Pong,
    /// chat: someone left; the rest of the `LEFT` line.
    Left(&'a [u8]),
    /// An error or goodbye line, for the notes.
    Error(&'a [u8]),
    /// NATS's keepalive: answer `PONG`.
    ServerPing,
    /// A Redis stream subscriber read up to this entry id: ask for more.
    Resume(&'a [u8]),
    Other,
}

impl Proto {
    /// What a connection sends first. A subscriber joins and listens; a
    /// publisher joins too on chat (everyone is a member there), connects on
    /// NATS, and pings on Redis (a subscribed Redis connection may not publish).
    pub fn greeting(self, subscriber: bool, name: &str) -> Vec<u8> {
        let text = match (self, subscriber) {
            (Proto::Chat, _) => format!("JOIN {name}\n"),
            (Proto::Nats, true) => format!("{}SUB room 1\r\nPING\r\n", nats_connect(name)),
            (Proto::Nats, false) => format!("{}PING\r\n", nats_connect(name)),
            (Proto::Redis, true) => "*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nroom\r\n".to_owned(),
            (Proto::Redis | Proto::RedisStreams, false) => "*1\r\n$4\r\nPING\r\n".to_owned(),
            // The PONG says it is ready: Redis handles both commands of one
            // read before it replies, so XREAD is waiting by then.
            (Proto::RedisStreams, true) => {
                let mut out = b"*1\r\n$4\r\nPING\r\n".to_vec();
                Proto::RedisStreams.resume(&mut out, b"$");
                return out;
            }
        };
        text.into_bytes()
    }

    /// A Redis stream subscriber's next read, for the entries after `id`.
    pub fn resume(self, out: &mut Vec<u8>, id: &[u8]) {
        debug_assert_eq!(self, Proto::RedisStreams);
        write_command(out, &[b"XREAD", b"COUNT", XREAD_COUNT.as_bytes(), b"BLOCK", b"0", b"STREAMS", b"room", id]);
    }

    /// Whether a subscriber answers a ping while it listens. A Redis stream
    /// subscriber is blocked in `XREAD`, and would answer only after its
    /// next delivery: the generator counts its deliveries instead.
    pub fn pings_subscribers(self) -> bool {
        self != Proto::RedisStreams
    }

    pub fn ping(self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self {
            Proto::Chat => b"PING b\n",
            Proto::Nats => b"PING\r\n",
            Proto::Redis | Proto::RedisStreams => b"*1\r\n$4\r\nPING\r\n",
        });
    }

    /// Appends one message from `publisher`, sent at `t_ns`.
    pub fn publish(self, out: &mut Vec<u8>, publisher: usize, seq: u64, t_ns: u64) {
        out.extend_from_slice(match self {
            Proto::Chat => b"MSG ",
            Proto::Nats => b"PUB room 56\r\n",
            Proto::Redis => b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$56\r\n",
            Proto::RedisStreams => b"*5\r\n$4\r\nXADD\r\n$4\r\nroom\r\n$1\r\n*\r\n$1\r\nm\r\n$56\r\n",
        });
        write_payload(out, publisher, seq, t_ns);
        out.extend_from_slice(if self == Proto::Chat { b"\n" } else { b"\r\n" });
    }

    /// Hands each complete unit in `buf` to `f`; returns the bytes used (the
    /// rest is an incomplete unit, to be completed by the next read).
    pub fn parse(self, buf: &[u8], f: &mut impl FnMut(Event<'_>)) -> Result<usize, String> {
        match self {
            Proto::Chat => Ok(parse_chat(buf, f)),
            Proto::Nats => parse_nats(buf, f),
            Proto::Redis => parse_redis(buf, f),
            Proto::RedisStreams => parse_redis_streams(buf, f),
        }
    }
}

/// A RESP command: an array of bulk strings.
fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    write_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        write_decimal(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn nats_connect(name: &str) -> String {
    format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"{name}\"}}\r\n")
}

fn write_payload(out: &mut Vec<u8>, publisher: usize, seq: u64, t_ns: u64) {
    let start = out.len();
    for n in [publisher as u64, seq, t_ns] {
        write_decimal(out, n);
        out.push(b' ');
    }
    assert!(out.len() - start <= PAYLOAD_LEN, "payload fields too long");
    out.resize(start + PAYLOAD_LEN, b'x');
}

fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A payload's publisher, sequence number and send time.
pub fn parse_payload(payload: &[u8]) -> Option<(usize, u64, u64)> {
    let mut fields = payload.splitn(4, |&b| b == b' ');
    let publisher = parse_decimal(fields.next()?)?;
    let seq = parse_decimal(fields.next()?)?;
    let t_ns = parse_decimal(fields.next()?)?;
    Some((publisher as usize, seq, t_ns))
}

pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + (d - b'0') as u64))
}

fn parse_chat(buf: &[u8], f: &mut impl FnMut(Event<'_>)) -> usize {
    let mut pos = 0;
    while let Some(len) = memchr(b'\n', &buf[pos..]) {
        let line = &buf[pos..pos + len];
        pos += len + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        f(chat_event(line));
    }
    pos
}

fn chat_event(line: &[u8]) -> Event<'_> {
    if let Some(rest) = line.strip_prefix(b"MSG ") {
        // `MSG <from> <text>`: the text is our payload.
        return match memchr(b' ', rest) {
            Some(space) => Event::Delivery(&rest[space + 1..]),
            None => Event::Other,
        };
    }
    if line.starts_with(b"OK JOIN") {
        Event::Ready
    } else if line.starts_with(b"PONG") {
        Event::Pong
    } else if let Some(rest) = line.strip_prefix(b"LEFT ") {
        Event::Left(rest)
    } else if line.starts_with(b"ERR ") || line.starts_with(b"BYE ") {
        Event::Error(line)
    } else {
        Event::Other
    }
}

fn parse_nats(buf: &[u8], f: &mut impl FnMut(Event<'_>)) -> Result<usize, String> {
    let mut pos = 0;
    while let Some(len) = memchr(b'\n', &buf[pos..]) {
        let header = &buf[pos..pos + len];
        let header = header.strip_suffix(b"\r").unwrap_or(header);
        let body = pos + len + 1;
        if header.starts_with(b"MSG ") {
            // `MSG <subject> <sid> [reply-to] <bytes>`, then the payload and CRLF.
            let size = header.rsplit(|&b| b == b' ').next().and_then(parse_decimal);
            let size = size.ok_or_else(|| format!("odd NATS header {:?}", String::from_utf8_lossy(header)))? as usize;
            if buf.len() < body + size + 2 {
                break;
            }
            f(Event::Delivery(&buf[body..body + size]));
            pos = body + size + 2;
            continue;
        }
        pos = body;
        f(match header {
            b"PING" => Event::ServerPing,
            b"PONG" => Event::Pong,
            h if h.starts_with(b"-ERR") => Event::Error(h),
            _ => Event::Other, // INFO, +OK
        });
    }
    Ok(pos)
}

fn parse_redis(buf: &[u8], f: &mut impl FnMut(Event<'_>)) -> Result<usize, String> {
    let mut pos = 0;
    while pos < buf.len() {
        match resp_value(&buf[pos..])? {
            Some((event, used)) => {
                f(event);
                pos += used;
            }
            None => break,
        }
    }
    Ok(pos)
}

/// One RESP reply at the start of `buf`, or `None` if it is incomplete. Only
/// the shapes pub/sub produces: simple strings, errors, integers, and arrays
/// of bulk strings and integers (`message`, `subscribe`, `pong`).
fn resp_value(buf: &[u8]) -> Result<Option<(Event<'_>, usize)>, String> {
    let Some(len) = memchr(b'\n', buf) else { return Ok(None) };
    let line = &buf[1..len.saturating_sub(1)];
    let mut pos = len + 1;
    match buf[0] {
        b'+' if line == b"PONG" => Ok(Some((Event::Pong, pos))),
        b'+' | b':' => Ok(Some((Event::Other, pos))),
        b'-' => Ok(Some((Event::Error(line), pos))),
        b'*' => {
            let count = parse_decimal(line).ok_or("odd RESP array")?;
            let mut items: [&[u8]; 3] = [b""; 3];
            for i in 0..count as usize {
                let Some(item_len) = memchr(b'\n', &buf[pos..]) else { return Ok(None) };
                let head = &buf[pos..pos + item_len.saturating_sub(1)];
                pos += item_len + 1;
                let item = match head.first() {
                    Some(b'$') => {
                        let size = parse_decimal(&head[1..]).ok_or("odd RESP bulk string")? as usize;
                        if buf.len() < pos + size + 2 {
                            return Ok(None);
                        }
                        pos += size + 2;
                        &buf[pos - size - 2..pos - 2]
                    }
                    Some(b':') => &head[1..],
                    _ => return Err(format!("unexpected RESP item {:?}", String::from_utf8_lossy(head))),
                };
                if i < items.len() {
                    items[i] = item;
                }
            }
            let event = match items[0] {
                b"message" => Event::Delivery(items[2]),
                b"subscribe" => Event::Ready,
                b"pong" => Event::Pong,
                _ => Event::Other,
            };
            Ok(Some((event, pos)))
        }
        other => Err(format!("unexpected RESP type byte {other:#x}")),
    }
}

/// Replies on a Redis stream connection: `+PONG`, an `XADD`'s entry id (a
/// bulk string), errors, and `XREAD`'s nested arrays, whose entries are
/// handed on only once the whole reply is in.
fn parse_redis_streams(buf: &[u8], f: &mut impl FnMut(Event<'_>)) -> Result<usize, String> {
    let mut pos = 0;
    while pos < buf.len() {
        let Some(end) = resp_skip(buf, pos)? else { break };
        let value = &buf[pos..end];
        match value[0] {
            b'+' if value.starts_with(b"+PONG\r\n") => f(Event::Pong),
            b'-' => f(Event::Error(&value[1..value.len() - 2])),
            b'*' => xread_reply(value, f)?,
            _ => f(Event::Other),
        }
        pos = end;
    }
    Ok(pos)
}

/// The end of the RESP value at `pos`, or `None` if it is incomplete.
fn resp_skip(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let Some((kind, n, mut next)) = resp_header(buf, pos)? else { return Ok(None) };
    match kind {
        b'$' if n >= 0 => {
            let end = next + n as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' if n >= 0 => {
            for _ in 0..n {
                match resp_skip(buf, next)? {
                    Some(end) => next = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(next))
        }
        _ => Ok(Some(next)),
    }
}

/// A RESP header line at `pos`: its type byte, its number (a length or a
/// count; 0 for the types without one), and where the line ends.
fn resp_header(buf: &[u8], pos: usize) -> Result<Option<(u8, i64, usize)>, String> {
    let Some(len) = memchr(b'\n', &buf[pos..]) else { return Ok(None) };
    let line = &buf[pos + 1..pos + len.saturating_sub(1)];
    let kind = buf[pos];
    let n = match kind {
        b'*' | b'$' if line == b"-1" => -1,
        b'*' | b'$' => parse_decimal(line).ok_or("odd RESP length")? as i64,
        b'+' | b'-' | b':' => 0,
        other => return Err(format!("unexpected RESP type byte {other:#x}")),
    };
    Ok(Some((kind, n, pos + len + 1)))
}

/// An `XREAD` reply, complete: `[[stream, [[id, [field, value]], …]]]`.
/// Each entry's value is a delivery; then the read goes on from the last id.
fn xread_reply(reply: &[u8], f: &mut impl FnMut(Event<'_>)) -> Result<(), String> {
    let mut at = 0;
    let array = |at: &mut usize| -> Result<i64, String> {
        let (kind, n, next) = resp_header(reply, *at)?.ok_or("short XREAD reply")?;
        if kind != b'*' {
            return Err(format!("XREAD reply: expected an array, found {:?}", kind as char));
        }
        *at = next;
        Ok(n)
    };
    let bulk = |at: &mut usize| -> Result<&[u8], String> {
        let (kind, n, next) = resp_header(reply, *at)?.ok_or("short XREAD reply")?;
        if kind != b'$' || n < 0 {
            return Err("XREAD reply: expected a bulk string".into());
        }
        *at = next + n as usize + 2;
        Ok(&reply[next..next + n as usize])
    };
    let mut last = None;
    for _ in 0..array(&mut at)?.max(0) {
        array(&mut at)?;
        bulk(&mut at)?; // the stream's name
        for _ in 0..array(&mut at)?.max(0) {
            array(&mut at)?;
            last = Some(bulk(&mut at)?);
            for i in 0..array(&mut at)?.max(0) {
                let item = bulk(&mut at)?;
                if i % 2 == 1 {
                    f(Event::Delivery(item));
                }
            }
        }
    }
    match last {
        Some(id) => f(Event::Resume(id)),
        None => return Err("XREAD returned no entry".into()),
    }
    Ok(())
}
