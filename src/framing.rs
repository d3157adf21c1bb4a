//! The bounded line reader both sides use: bytes in, lines out, with memory
//! bounded whatever the peer sends. A line longer than the limit is reported
//! once and skipped up to its `\n`; a line that is not UTF-8 is reported and
//! skipped; a `\r` before the `\n` is dropped. The server's reader also
//! drops telnet's negotiation (`IAC …`), as IRC servers do: a person on
//! `telnet` who presses Ctrl-C sends `IAC IP IAC DO TIMING-MARK`, and the
//! line after it would otherwise never be UTF-8 again.

use std::io::{self, Read};

/// What the next complete line turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Line(&'a str),
    /// A line longer than the limit; it is being skipped up to its `\n`.
    TooLong,
    /// A line that is not valid UTF-8; it was skipped.
    BadEncoding,
}

/// Splits a byte stream into lines of at most `max_line` bytes, terminator
/// included. With no limit (`usize::MAX`) it never refuses a line, as clients
/// must not cap the server's lines; its memory then grows with the line.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Where the search for `\n` resumes, so a line arriving in many small
    /// reads is scanned once, not once per read.
    scanned: usize,
    max_line: usize,
    discarding: bool,
    /// How much the next read asks for: small for a quiet peer, so an idle
    /// connection holds little memory; doubled each time a read fills it,
    /// so a flood of short lines costs few system calls.
    read_size: usize,
    /// Whether telnet commands are dropped from lines.
    telnet: bool,
}

const FIRST_READ: usize = 512;
const MAX_READ: usize = 64 * 1024;

impl LineReader {
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            max_line,
            discarding: false,
            read_size: FIRST_READ,
            telnet: false,
        }
    }

    /// Drops telnet's commands from every line: for what clients send,
    /// where a byte 255 (telnet's IAC) can never start valid UTF-8 text.
    pub fn ignoring_telnet(mut self) -> LineReader {
        self.telnet = true;
        self
    }

    /// A reader with no line limit, for the server's lines.
    pub fn unlimited() -> LineReader {
        LineReader::new(usize::MAX)
    }

    /// Whether bytes of an unfinished line are held.
    pub fn has_partial(&self) -> bool {
        self.end > self.start || self.discarding
    }

    /// Reads once from `source` into the buffer: `Ok(0)` is end of stream.
    /// Call it only when `next_frame` has returned `None`.
    pub fn read_from<R: Read + ?Sized>(&mut self, source: &mut R) -> io::Result<usize> {
        self.make_room();
        let n = source.read(&mut self.buf[self.end..self.end + self.read_size])?;
        self.end += n;
        if n == self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        }
        Ok(n)
    }

    /// Returns the next complete line, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let newline = self.buf[self.scanned..self.end].iter().position(|&b| b == b'\n');
            let Some(offset) = newline else {
                self.scanned = self.end;
                if self.discarding {
                    self.start = self.end;
                    return None;
                }
                // The `\n` still to come counts towards the limit; one byte
                // more is allowed while it may be the `\r` of a CRLF.
                if self.end - self.start > self.max_line {
                    self.discarding = true;
                    self.start = self.end;
                    self.scanned = self.end;
                    return Some(Frame::TooLong);
                }
                return None;
            };
            let line_end = self.scanned + offset;
            let line_start = self.start;
            self.start = line_end + 1;
            self.scanned = self.start;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            let line_end =
                if self.telnet { line_start + strip_telnet(&mut self.buf[line_start..line_end]) } else { line_end };
            return Some(frame_of(&self.buf[line_start..line_end], self.max_line));
        }
    }

    /// Takes the bytes read past the last line returned: after `STARTTLS`,
    /// they are the start of the client's TLS handshake, not lines.
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..self.end].to_vec();
        self.start = self.end;
        self.scanned = self.end;
        rest
    }

    /// At the end of the stream: the last line if it lacked its `\n`.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        let (start, end) = (self.start, self.end);
        self.start = end;
        self.scanned = end;
        if std::mem::take(&mut self.discarding) || start == end {
            return None;
        }
        let end = if self.telnet { start + strip_telnet(&mut self.buf[start..end]) } else { end };
        Some(frame_of(&self.buf[start..end], self.max_line))
    }

    /// Moves the unfinished line to the front and makes sure a read has room.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.scanned = 0;
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.read_size {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        let want = self.end + self.read_size;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }
}

/// Telnet's Interpret As Command byte, and the commands that take an option
/// byte (WILL, WONT, DO, DONT) or open a subnegotiation (SB … IAC SE).
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;

/// Removes whole telnet commands from `line` in place; returns its new
/// length. Anything else with a byte 255 in it stays, and is then not UTF-8:
/// `IAC IAC` (telnet's escaped 255), a command cut short, or a 255 that
/// starts no command.
fn strip_telnet(line: &mut [u8]) -> usize {
    if !line.contains(&IAC) {
        return line.len();
    }
    let (mut read, mut kept) = (0, 0);
    while read < line.len() {
        let command = match line[read..] {
            [IAC, SB, ..] => line[read + 2..].windows(2).position(|w| w == [IAC, SE]).map(|at| at + 4),
            [IAC, 251..=254, _, ..] => Some(3),
            [IAC, SE..=249, ..] => Some(2),
            [IAC, IAC, ..] => {
                line.copy_within(read..read + 2, kept);
                kept += 2;
                read += 2;
                continue;
            }
            _ => None,
        };
        match command {
            Some(len) => read += len,
            None => {
                line[kept] = line[read];
                kept += 1;
                read += 1;
            }
        }
    }
    kept
}

fn frame_of(mut line: &[u8], max_line: usize) -> Frame<'_> {
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    if line.len() >= max_line {
        return Frame::TooLong;
    }
    match std::str::from_utf8(line) {
        Ok(text) => Frame::Line(text),
        Err(_) => Frame::BadEncoding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes and collects what comes out.
    fn frames(max_line: usize, input: &[u8], chunk: usize) -> Vec<String> {
        let mut reader = LineReader::new(max_line);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut src = piece;
            while reader.read_from(&mut src).unwrap() > 0 {}
            while let Some(frame) = reader.next_frame() {
                out.push(match frame {
                    Frame::Line(line) => format!("line {line}"),
                    Frame::TooLong => "too long".to_owned(),
                    Frame::BadEncoding => "bad encoding".to_owned(),
                });
            }
        }
        out
    }

    #[test]
    fn splits_lines_whatever_the_chunking() {
        let input = b"JOIN Ana\r\nMSG hola\n\nMSG \xc3\xb1\n";
        for chunk in [1, 2, 3, 7, 100] {
            assert_eq!(
                frames(64, input, chunk),
                ["line JOIN Ana", "line MSG hola", "line ", "line MSG ñ"],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn the_limit_counts_the_terminator() {
        let ok = format!("{}\n", "a".repeat(9));
        let long = format!("{}\n", "b".repeat(10));
        assert_eq!(frames(10, ok.as_bytes(), 4), [format!("line {}", "a".repeat(9))]);
        assert_eq!(frames(10, long.as_bytes(), 4), ["too long"]);
        assert_eq!(frames(10, long.as_bytes(), 100), ["too long"]);
        let crlf = format!("{}\r\n", "c".repeat(9));
        assert_eq!(frames(10, crlf.as_bytes(), 1), [format!("line {}", "c".repeat(9))]);
    }

    #[test]
    fn a_long_line_is_reported_once_and_skipped_to_its_newline() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nMSG after\n");
        for chunk in [1000, 4096, 65536] {
            assert_eq!(frames(4096, &input, chunk), ["too long", "line MSG after"]);
        }
    }

    #[test]
    fn memory_stays_bounded_on_a_line_without_end() {
        let mut reader = LineReader::new(4096);
        let mut src: &[u8] = &vec![b'x'; 8 << 20];
        let mut reported = 0;
        while reader.read_from(&mut src).unwrap() > 0 {
            while let Some(frame) = reader.next_frame() {
                assert_eq!(frame, Frame::TooLong);
                reported += 1;
            }
        }
        assert_eq!(reported, 1);
        assert!(reader.buf.len() <= 4096 + 2 * MAX_READ, "buffer grew to {}", reader.buf.len());
    }

    #[test]
    fn a_quiet_peer_costs_a_small_buffer() {
        let mut reader = LineReader::new(4096);
        let mut src: &[u8] = b"JOIN Ana\n";
        reader.read_from(&mut src).unwrap();
        assert_eq!(reader.next_frame(), Some(Frame::Line("JOIN Ana")));
        assert!(reader.buf.len() <= FIRST_READ, "buffer is {} bytes", reader.buf.len());
    }

    #[test]
    fn invalid_utf8_is_reported_and_the_stream_goes_on() {
        assert_eq!(frames(64, b"MSG \xff\xfe\nMSG ok\n", 3), ["bad encoding", "line MSG ok"]);
        assert_eq!(frames(64, b"\xc3\nMSG ok\n", 1), ["bad encoding", "line MSG ok"]);
    }

    #[test]
    fn telnet_commands_are_dropped_where_asked() {
        // Ctrl-C in telnet: IAC IP, IAC DO TIMING-MARK; then a line typed.
        let ctrl_c = b"\xff\xf4\xff\xfd\x06MSG hola\r\n";
        let negotiation = b"\xff\xfb\x18\xff\xfa\x18\x00xterm\xff\xf0JOIN Ana\n";
        let mut reader = LineReader::new(64).ignoring_telnet();
        let lines: [&[u8]; 5] = [ctrl_c, negotiation, b"MSG \xff\xff\n", b"MSG \xff\xfe\n", b"MSG tail\xff\xf1"];
        let mut src: &[u8] = &lines.concat();
        while reader.read_from(&mut src).unwrap() > 0 {}
        assert_eq!(reader.next_frame(), Some(Frame::Line("MSG hola")));
        assert_eq!(reader.next_frame(), Some(Frame::Line("JOIN Ana")));
        assert_eq!(reader.next_frame(), Some(Frame::BadEncoding), "IAC IAC is a byte 255");
        assert_eq!(reader.next_frame(), Some(Frame::BadEncoding), "a command cut short stays");
        assert_eq!(reader.next_frame(), None);
        assert_eq!(reader.finish(), Some(Frame::Line("MSG tail")), "IAC NOP");
        assert_eq!(frames(64, ctrl_c, 1), ["bad encoding"], "only where asked");
    }

    #[test]
    fn finish_yields_a_last_line_without_newline() {
        let mut reader = LineReader::new(64);
        let mut src: &[u8] = b"MSG one\nMSG two";
        reader.read_from(&mut src).unwrap();
        assert_eq!(reader.next_frame(), Some(Frame::Line("MSG one")));
        assert_eq!(reader.next_frame(), None);
        assert_eq!(reader.finish(), Some(Frame::Line("MSG two")));
        assert_eq!(reader.finish(), None);
    }

    #[test]
    fn unlimited_reader_takes_long_server_lines() {
        let line = format!("NAMES {}\n", "n ".repeat(10_000));
        assert_eq!(frames(usize::MAX, line.as_bytes(), 5000).len(), 1);
    }
}
