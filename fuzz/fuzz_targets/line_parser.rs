//! Arbitrary bytes through the bounded line reader, cut into arbitrary pieces,
//! and every line through every parser of the protocol.
//!
//! The input's first byte chooses how the stream is cut into reads; its
//! second, from 0xF0 up, repeats the rest 2, 4, … 2048 times (1 below 0xF0;
//! 1 MiB at most), so that a stream of a megabyte (a line without end, a flood of lines) is
//! one mutation away.
//!
//! What must hold, whatever the bytes:
//! - nothing panics;
//! - the reader yields exactly the frames a plain split on `\n` predicts,
//!   however the stream was cut: a line of at most 4095 bytes (a `\r` before
//!   the `\n` dropped), `TooLong` once for a longer one, `BadEncoding` for one
//!   that is not UTF-8, and a last line without `\n` at the end;
//! - the memory the reader holds stays under a bound however long the input
//!   (a counting allocator measures it: the buffer is private);
//! - a parsed `Request` prints back as one line that parses to the same
//!   request; a parsed `ServerLine` prints back to a line that parses to the
//!   same value; a parsed `Name` is its own normal form;
//! - every text the server would send back about the line (a refusal) and
//!   every line made printable holds no control character: a hostile line
//!   cannot smuggle a terminal escape or a second line through them.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;
use minichat::framing::{Frame, LineReader};
use minichat::name::{self, Name};
use minichat::protocol::{check_outgoing, check_text, ErrorCode, Printable, Refusal, Replay, Request, ServerLine};

/// chatd's default line limit, terminator included.
const MAX_LINE: usize = 4096;

/// What the reader may hold at any time. It needs a line's worth plus two
/// reads of at most 64 KiB; the bound leaves room for `Vec`'s doubling, and
/// is far below the 1 MiB streams the fuzzer makes, so a buffer that
/// grows with the input is caught.
const READER_MEMORY: usize = 320 * 1024;

/// The longest stream, repetitions included.
const MAX_STREAM: usize = 1 << 20;

/// Counts the bytes allocated and not yet freed, so that the reader's memory
/// can be measured from outside.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Relaxed)
}

/// A frame as predicted from the whole stream.
#[derive(Debug, PartialEq)]
enum Want<'a> {
    Line(&'a str),
    TooLong,
    BadEncoding,
}

/// The frames a stream must yield: split on `\n`, the last piece counting
/// only if it is not empty.
fn predict(stream: &[u8]) -> Vec<Want<'_>> {
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|last| last.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|raw| {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.len() >= MAX_LINE {
                Want::TooLong
            } else {
                std::str::from_utf8(line).map_or(Want::BadEncoding, Want::Line)
            }
        })
        .collect()
}

/// How the stream is cut into the reads the reader sees.
struct Cut {
    how: How,
    pieces: usize,
}

enum How {
    Whole,
    Fixed(usize),
    /// Sizes from a small generator, from 1 byte to 16 KiB.
    Varying(u32),
    ByteByByte,
}

/// Pieces cut as chosen; the rest of a long stream goes 64 KiB at a time,
/// so that a megabyte in one-byte reads does not slow the fuzzer down.
const MAX_PIECES: usize = 16 << 10;

impl Cut {
    fn choose(byte: u8) -> Cut {
        let how = match byte % 4 {
            0 => How::Whole,
            1 => How::Fixed(1 + usize::from(byte >> 2) * 67),
            2 => How::Varying(u32::from(byte).wrapping_mul(0x9E37_79B9) | 1),
            _ => How::ByteByByte,
        };
        Cut { how, pieces: 0 }
    }

    fn next_len(&mut self, left: usize) -> usize {
        self.pieces += 1;
        let len = match &mut self.how {
            _ if self.pieces > MAX_PIECES => 64 << 10,
            How::Whole => left,
            How::Fixed(n) => *n,
            How::Varying(state) => {
                *state ^= *state << 13;
                *state ^= *state >> 17;
                *state ^= *state << 5;
                let bits = *state % 15;
                1 + (*state >> 4) as usize % (1 << bits)
            }
            How::ByteByByte => 1,
        };
        len.clamp(1, left.max(1))
    }
}

/// The stream an input stands for: the bytes after the two header bytes,
/// repeated as the second one says.
fn stream_of(repeat: u8, unit: &[u8]) -> Vec<u8> {
    let times = if repeat >= 0xF0 { 1 << (repeat - 0xF0).min(11) } else { 1 };
    let mut stream = unit.repeat(times);
    stream.truncate(MAX_STREAM);
    stream
}

fuzz_target!(|data: &[u8]| {
    let [first, repeat, unit @ ..] = data else { return };
    let stream = &stream_of(*repeat, unit)[..];
    let mut cut = Cut::choose(*first);
    let want = predict(stream);
    // The parsers get every distinct line once (a repeated stream holds the
    // same lines many times); the reader must then yield exactly these lines.
    let distinct: HashSet<&str> =
        want.iter().filter_map(|w| if let Want::Line(l) = w { Some(*l) } else { None }).collect();
    distinct.into_iter().for_each(check_line);
    let mut seen = 0;
    let mut reader = LineReader::new(MAX_LINE);
    let baseline = live();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, after) = rest.split_at(cut.next_len(rest.len()));
        rest = after;
        let mut src = piece;
        loop {
            let n = reader.read_from(&mut src).expect("reading from a slice cannot fail");
            let held = live().saturating_sub(baseline);
            assert!(
                held <= READER_MEMORY,
                "the reader holds {held} bytes after {} of input",
                stream.len() - rest.len()
            );
            while let Some(frame) = reader.next_frame() {
                check_frame(frame, &want, &mut seen);
            }
            if n == 0 {
                break;
            }
        }
    }
    let unfinished = stream.split(|&b| b == b'\n').next_back().is_some_and(|last| !last.is_empty());
    assert_eq!(reader.has_partial(), unfinished, "has_partial at the end of the stream");
    if let Some(frame) = reader.finish() {
        check_frame(frame, &want, &mut seen);
    }
    assert!(reader.finish().is_none(), "finish yielded a second last line");
    assert!(!reader.has_partial(), "a partial line after finish");
    assert_eq!(seen, want.len(), "the reader yielded {seen} frames, the stream holds {}", want.len());
});

fn check_frame(frame: Frame<'_>, want: &[Want<'_>], seen: &mut usize) {
    let got = match frame {
        Frame::Line(line) => {
            assert!(line.len() < MAX_LINE, "a line of {} bytes passed the {MAX_LINE}-byte limit", line.len());
            assert!(!line.contains('\n'), "a line holds a newline: {line:?}");
            Want::Line(line)
        }
        Frame::TooLong => Want::TooLong,
        Frame::BadEncoding => Want::BadEncoding,
    };
    let expected = want.get(*seen);
    assert!(expected == Some(&got), "frame {seen}: got {got:?}, the stream holds {expected:?}", seen = *seen);
    *seen += 1;
}

/// Whether a text sent to a client or shown on a terminal is safe: no
/// control character but tab.
fn assert_printable(what: &str, text: &str) {
    let bad = text.chars().find(|&c| c.is_control() && c != '\t');
    assert!(bad.is_none(), "{what} holds the control character {bad:?}: {text:?}");
}

fn check_refusal(what: &str, refusal: &Refusal) {
    assert_printable(what, &refusal.text);
    let line = ServerLine::Err(refusal.clone()).to_string();
    assert_eq!(ServerLine::parse(&line).as_ref(), Ok(&ServerLine::Err(refusal.clone())), "ERR line {line:?}");
}

fn check_line(line: &str) {
    assert_printable("Printable", &Printable(line).to_string());

    match Request::parse(line) {
        Ok(request) => {
            let text = request.to_string();
            assert!(!text.contains('\n'), "{request:?} prints as {text:?}");
            assert_eq!(Request::parse(&text), Ok(request), "{line:?} parsed to {request:?}, printed as {text:?}");
            match request {
                Request::Join(join) => check_name(join.name),
                Request::Msg(body) => assert_eq!(check_text(body), Ok(()), "MSG accepted {body:?}"),
                Request::Pass(password) => assert!(!password.is_empty(), "PASS accepted no password"),
                Request::Exit | Request::Names | Request::Ping(_) | Request::Tags | Request::StartTls => {}
            }
            // A join with options prints its option words in capitals.
            let exact = match request {
                Request::Join(join) if join.replay == Replay::Nothing && join.token.is_none() => Some(join.name),
                Request::Msg(arg) | Request::Ping(Some(arg)) | Request::Pass(arg) => Some(arg),
                _ => None,
            };
            if let (Some(arg), true) = (exact, line.contains(' ')) {
                // The verb's case aside, a line with an argument is what its
                // request prints.
                let verb = text.len() - arg.len();
                assert!(line.len() == text.len() && line[verb..] == text[verb..], "{line:?} prints as {text:?}");
                assert!(line[..verb].eq_ignore_ascii_case(&text[..verb]), "{line:?} prints as {text:?}");
            }
        }
        Err(refusal) => {
            let expected = [ErrorCode::Empty, ErrorCode::BadText, ErrorCode::UnknownCommand, ErrorCode::BadOption];
            assert!(expected.contains(&refusal.code), "{line:?} refused as {refusal}");
            check_refusal("a refusal", &refusal);
        }
    }

    match check_outgoing(line) {
        Ok(()) => assert!(Request::parse(&format!("MSG {line}")).is_ok(), "check_outgoing accepts {line:?}"),
        Err(refusal) => check_refusal("check_outgoing's refusal", &refusal),
    }

    match ServerLine::parse(line) {
        Ok(parsed) => {
            let text = parsed.to_string();
            assert_eq!(
                ServerLine::parse(&text).as_ref(),
                Ok(&parsed),
                "{line:?} parsed to {parsed:?}, printed as {text:?}"
            );
        }
        Err(malformed) => {
            assert_eq!(malformed.0, line);
            assert_printable("MalformedLine", &malformed.to_string());
        }
    }

    check_name(line);
}

fn check_name(raw: &str) {
    match Name::parse(raw) {
        Ok(name) => {
            let shown = name.as_str();
            let chars = shown.chars().count();
            assert!((1..=name::MAX_CHARS).contains(&chars), "name {shown:?} has {chars} characters");
            assert!(shown.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c)), "name {shown:?}");
            assert_eq!(name.to_string(), shown);
            assert!(!name.key().is_empty(), "name {shown:?} has an empty key");
            assert_eq!(Name::parse(shown).as_ref(), Ok(&name), "{raw:?} is stored as {shown:?}");
        }
        Err(e) => check_refusal("a name's refusal", &e.into()),
    }
}
