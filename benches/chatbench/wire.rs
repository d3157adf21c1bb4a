//! The three wire protocols the generator speaks, each reduced to what a
//! room needs: join (or subscribe), publish, ping, and the events read back.
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
}

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
            (Proto::Redis, false) => "*1\r\n$4\r\nPING\r\n".to_owned(),
        };
        text.into_bytes()
    }

    pub fn ping(self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self {
            Proto::Chat => b"PING b\n",
            Proto::Nats => b"PING\r\n",
            Proto::Redis => b"*1\r\n$4\r\nPING\r\n",
        });
    }

    /// Appends one message from `publisher`, sent at `t_ns`.
    pub fn publish(self, out: &mut Vec<u8>, publisher: usize, seq: u64, t_ns: u64) {
        out.extend_from_slice(match self {
            Proto::Chat => b"MSG ",
            Proto::Nats => b"PUB room 56\r\n",
            Proto::Redis => b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$56\r\n",
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
        }
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
