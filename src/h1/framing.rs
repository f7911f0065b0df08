//! HTTP/1.1 message framing for the fast path (RFC 9112 §6): where a body
//! ends, found without copying or re-encoding it.
//!
//! A body is relayed as the bytes that arrived. [`Framing::take`] says how
//! many of the bytes at hand belong to the current message; whatever follows
//! is the next message (a pipelined request) or, from an upstream, a
//! protocol error. Chunked bodies are scanned by a strict state machine
//! ([`Chunks`]): hex sizes of at most 15 digits, optional extensions, CRLF
//! line ends only (a bare LF is an error), and a trailer section that ends at
//! an empty line. A malformed chunk stops the relay, and the connection it
//! came from is never reused, so a body cannot smuggle a second message.

/// How one message's body is delimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body, or the body has been relayed in full.
    Done,
    /// `Content-Length`: this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunks),
    /// No length: the body runs until the sender closes (responses only).
    UntilClose,
}

/// A chunked body that breaks RFC 9112 §7.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

impl Framing {
    /// How many bytes at the start of `input` belong to this body; updates
    /// the state so that [`Framing::is_done`] tells whether the body ended.
    pub fn take(&mut self, input: &[u8]) -> Result<usize, BadChunk> {
        match self {
            Framing::Done => Ok(0),
            Framing::Length(left) => {
                let n = (*left).min(input.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = Framing::Done;
                }
                Ok(n as usize)
            }
            Framing::Chunked(c) => {
                let n = c.scan(input)?;
                if c.is_done() {
                    *self = Framing::Done;
                }
                Ok(n)
            }
            Framing::UntilClose => Ok(input.len()),
        }
    }

    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        *self == Framing::Done
    }

    /// [`Framing::take`] for a request body, whose trailer section is
    /// dropped (a trailer field could carry a credential nobody judged):
    /// only `input[..keep]` is sent on, followed by `end` when the body
    /// ended with its trailers dropped.
    pub fn take_request(&mut self, input: &[u8]) -> Result<Taken, BadChunk> {
        let Framing::Chunked(c) = self else {
            let n = self.take(input)?;
            return Ok(Taken {
                consumed: n,
                keep: n,
                end: b"",
            });
        };
        let was_dropping = c.in_trailers;
        let n = c.scan(input)?;
        let keep = match (was_dropping, c.trailers_from.take()) {
            (true, _) => 0,
            (false, Some(at)) => at,
            (false, None) => n,
        };
        let end: &'static [u8] = if c.in_trailers && c.is_done() {
            b"\r\n"
        } else {
            b""
        };
        if c.is_done() {
            *self = Framing::Done;
        }
        Ok(Taken {
            consumed: n,
            keep,
            end,
        })
    }
}

/// What [`Framing::take_request`] took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// Bytes of `input` that belong to the body.
    pub consumed: usize,
    /// Of those, how many (from the start) are sent on.
    pub keep: usize,
    /// Sent after them: the empty line that ends a body whose trailers
    /// were dropped.
    pub end: &'static [u8],
}

/// Where a chunked-body scan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size { digits: u8 },
    /// Spaces or tabs after the size, before `;` or CR.
    SizeWs,
    /// Inside a chunk extension, until CR.
    Ext,
    /// CR seen at the end of the size line; LF next.
    SizeLf,
    /// Chunk data; this many bytes left.
    Data(u64),
    /// CR after the data next.
    DataCr,
    /// LF after the data next.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line, until CR.
    Trailer,
    /// LF ending a trailer line next.
    TrailerLf,
    /// LF ending the message next.
    EndLf,
    /// The body ended.
    Done,
}

/// A strict scanner of a chunked body (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunks {
    state: State,
    size: u64,
    /// A trailer field has been seen (what follows is trailer section).
    in_trailers: bool,
    /// Where in the last scanned input the first trailer field began.
    trailers_from: Option<usize>,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks {
            state: State::Size { digits: 0 },
            size: 0,
            in_trailers: false,
            trailers_from: None,
        }
    }
}

impl Chunks {
    /// Whether the terminating empty line has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `input`, returning how many bytes belong to the body (all of
    /// them unless the body ends inside `input`).
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Size { digits } => match hex(b) {
                    Some(v) if digits < 15 => {
                        self.size = self.size << 4 | u64::from(v);
                        State::Size { digits: digits + 1 }
                    }
                    _ if digits == 0 => return Err(BadChunk),
                    _ => self.after_size(b)?,
                },
                State::SizeWs => self.after_size(b)?,
                State::Ext => match b {
                    b'\r' => State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Ext,
                    _ => return Err(BadChunk),
                },
                State::SizeLf => match b {
                    b'\n' if self.size == 0 => State::TrailerStart,
                    b'\n' => State::Data(self.size),
                    _ => return Err(BadChunk),
                },
                State::Data(left) => {
                    let n = left.min((input.len() - i) as u64);
                    i += n as usize;
                    self.state = if n == left {
                        State::DataCr
                    } else {
                        State::Data(left - n)
                    };
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(BadChunk),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.size = 0;
                        State::Size { digits: 0 }
                    }
                    _ => return Err(BadChunk),
                },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\t' | b' ' => return Err(BadChunk), // obsolete line folding
                    0x21..=0x7e => {
                        if !self.in_trailers {
                            self.in_trailers = true;
                            self.trailers_from = Some(i);
                        }
                        State::Trailer
                    }
                    _ => return Err(BadChunk),
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Trailer,
                    _ => return Err(BadChunk),
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(BadChunk),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    _ => return Err(BadChunk),
                },
                State::Done => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }

    fn after_size(&self, b: u8) -> Result<State, BadChunk> {
        match b {
            b' ' | b'\t' => Ok(State::SizeWs),
            b';' => Ok(State::Ext),
            b'\r' => Ok(State::SizeLf),
            _ => Err(BadChunk),
        }
    }
}

/// A hex digit's value (std's `to_digit`, as `credentials::params` reads them).
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A `Content-Length` value: 1 to 18 ASCII digits (no sign, no spaces
/// inside; surrounding spaces trimmed). `None` otherwise.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let v = trim(value);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a `Transfer-Encoding` value is exactly `chunked` (the only coding
/// the fast path relays; anything else goes to hyper or is refused).
pub fn is_chunked(value: &[u8]) -> bool {
    trim(value).eq_ignore_ascii_case(b"chunked")
}

/// The comma-separated tokens of a list header (`Connection`), trimmed,
/// empties skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// `value` without leading and trailing spaces and tabs.
pub fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut c = Chunks::default();
        let n = c.scan(input)?;
        Ok((n, c.is_done()))
    }

    /// Feeds `input` to a request body `split` bytes at a time; returns
    /// what would be sent on and what was left over.
    fn relay_request(input: &[u8], split: usize) -> (Vec<u8>, usize) {
        let mut f = Framing::Chunked(Chunks::default());
        let mut sent = Vec::new();
        let mut at = 0;
        while !f.is_done() && at < input.len() {
            let end = (at + split).min(input.len());
            let t = f.take_request(&input[at..end]).unwrap();
            sent.extend_from_slice(&input[at..at + t.keep]);
            sent.extend_from_slice(t.end);
            at += t.consumed;
        }
        (sent, input.len() - at)
    }

    #[test]
    fn request_trailers_are_dropped_however_the_bytes_arrive() {
        let body = b"5\r\nhello\r\n0\r\nAuthorization: Bearer t\r\nX-B: 2\r\n\r\nNEXT";
        for split in [1, 2, 3, 7, 16, body.len()] {
            let (sent, left) = relay_request(body, split);
            assert_eq!(sent, b"5\r\nhello\r\n0\r\n\r\n", "split {split}");
            assert_eq!(left, 4, "split {split}");
        }
        // Without trailers, every byte goes on.
        let plain = b"3\r\nabc\r\n0\r\n\r\n";
        for split in [1, 5, plain.len()] {
            assert_eq!(relay_request(plain, split).0, plain.to_vec());
        }
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(scan_all(body), Ok((body.len() - 16, true)));
        let with_trailer = b"1\r\na\r\n0\r\nx-t: 1\r\n\r\nrest";
        assert_eq!(scan_all(with_trailer), Ok((with_trailer.len() - 4, true)));
        assert_eq!(
            scan_all(b"A \t;x\r\n0123456789\r\n0\r\n\r\n"),
            Ok((24, true))
        );
    }

    #[test]
    fn chunked_bodies_scan_the_same_byte_by_byte() {
        let body = b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nt: v\r\n\r\n";
        let mut c = Chunks::default();
        for (i, b) in body.iter().enumerate() {
            assert_eq!(c.scan(std::slice::from_ref(b)), Ok(1), "byte {i}");
        }
        assert!(c.is_done());
        assert_eq!(c.scan(b"more"), Ok(0));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"-1\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n x: folded\r\n\r\n",
            b"0\r\n\rX",
            b"5;\x01\r\n",
        ] {
            assert_eq!(
                scan_all(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lengths_count_down_and_stop_at_the_message_end() {
        let mut f = Framing::Length(5);
        assert_eq!(f.take(b"abc"), Ok(3));
        assert!(!f.is_done());
        assert_eq!(f.take(b"defgh"), Ok(2));
        assert!(f.is_done());
        assert_eq!(f.take(b"x"), Ok(0));
        let mut f = Framing::UntilClose;
        assert_eq!(f.take(b"abc"), Ok(3));
    }

    #[test]
    fn header_values_are_read_strictly() {
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"+42"), None);
        assert_eq!(content_length(b"4 2"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"1234567890123456789"), None);
        assert!(is_chunked(b" Chunked"));
        assert!(!is_chunked(b"gzip, chunked"));
        let t: Vec<_> = tokens(b"keep-alive, , X-Hop ").collect();
        assert_eq!(t, [&b"keep-alive"[..], b"X-Hop"]);
    }
}
