//! The encoders: zstd (`zstd`, the C library), brotli (`brotli`, pure Rust)
//! and gzip (`flate2` on zlib-ng), streaming or all at once, at the levels of
//! [`Level`].

use std::io::{self, Write};

use bytes::Bytes;

use crate::config::Algorithm;

/// How hard to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Per request: zstd 3, brotli 5, gzip 6 (README, Compression: brotli 5
    /// costs what 4 does on a 17 KB JSON answer and sends 11 % fewer bytes).
    Fast,
    /// Once per cached file: zstd 19, brotli 11, gzip 9.
    Best,
}

impl Level {
    fn zstd(self) -> i32 {
        match self {
            Level::Fast => 3,
            Level::Best => 19,
        }
    }

    fn brotli(self) -> u32 {
        match self {
            Level::Fast => 5,
            Level::Best => 11,
        }
    }

    /// log2 of brotli's window: 1 MiB per request, 4 MiB once per file.
    fn brotli_window(self) -> u32 {
        match self {
            Level::Fast => 20,
            Level::Best => 22,
        }
    }

    fn gzip(self) -> u32 {
        match self {
            Level::Fast => 6,
            Level::Best => 9,
        }
    }
}

/// Bytes brotli's writer buffers before it hands them to the encoder.
const BROTLI_BUFFER: usize = 4096;

enum Inner {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Finished,
}

/// One answer being compressed as it streams.
pub struct Encoder {
    inner: Inner,
    algorithm: Algorithm,
    /// Flush after every piece, so that nothing waits for the next one
    /// (answers of unknown length may be streams).
    flush_each: bool,
    bytes_in: u64,
    bytes_out: u64,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("algorithm", &self.algorithm)
            .field("flush_each", &self.flush_each)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// A new stream; `flush_each`: every call to [`encode`](Self::encode)
    /// returns all it was given, compressed.
    pub fn new(algorithm: Algorithm, level: Level, flush_each: bool) -> io::Result<Encoder> {
        let inner = match algorithm {
            Algorithm::Zstd => {
                Inner::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level.zstd())?)
            }
            Algorithm::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level.brotli(),
                level.brotli_window(),
            ))),
            Algorithm::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.gzip()),
            )),
        };
        Ok(Encoder {
            inner,
            algorithm,
            flush_each,
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Bytes given so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Compressed bytes returned so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Compresses the next piece; with `end`, finishes the stream. Returns
    /// the compressed bytes ready so far (possibly none before the end).
    pub fn encode(&mut self, input: &[u8], end: bool) -> io::Result<Bytes> {
        self.bytes_in += input.len() as u64;
        let flush = self.flush_each && !end;
        let out = match &mut self.inner {
            Inner::Zstd(e) => {
                e.write_all(input)?;
                if end {
                    e.do_finish()?;
                } else if flush {
                    e.flush()?;
                }
                std::mem::take(e.get_mut())
            }
            Inner::Brotli(e) => {
                e.write_all(input)?;
                if flush {
                    e.flush()?;
                }
                std::mem::take(e.get_mut())
            }
            Inner::Gzip(e) => {
                e.write_all(input)?;
                if end {
                    e.try_finish()?;
                } else if flush {
                    e.flush()?;
                }
                std::mem::take(e.get_mut())
            }
            Inner::Finished => {
                return Err(io::Error::other("compressing after the end of the answer"));
            }
        };
        let out = if end {
            match std::mem::replace(&mut self.inner, Inner::Finished) {
                // Brotli's writer finishes its stream when it gives up its output.
                Inner::Brotli(e) => {
                    let mut out = out;
                    out.extend_from_slice(&e.into_inner());
                    out
                }
                _ => out,
            }
        } else {
            out
        };
        self.bytes_out += out.len() as u64;
        Ok(Bytes::from(out))
    }
}

/// `data` compressed whole with `algorithm` at `level`.
pub fn compress(algorithm: Algorithm, level: Level, data: &[u8]) -> io::Result<Bytes> {
    match algorithm {
        // One call with the size known: zstd records it in the frame.
        Algorithm::Zstd => zstd::bulk::compress(data, level.zstd()).map(Bytes::from),
        _ => Encoder::new(algorithm, level, false)?.encode(data, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match algorithm {
            Algorithm::Zstd => {
                out = zstd::stream::decode_all(data).unwrap();
            }
            Algorithm::Brotli => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Algorithm::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn sample() -> Vec<u8> {
        (0..4000)
            .map(|i| format!("{{\"id\":{i},\"name\":\"item {}\"}},", i % 37))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn streams_decode_to_the_input() {
        let data = sample();
        for algorithm in Algorithm::ALL {
            for flush_each in [false, true] {
                let mut e = Encoder::new(algorithm, Level::Fast, flush_each).unwrap();
                let mut out = Vec::new();
                for piece in data.chunks(7000) {
                    let chunk = e.encode(piece, false).unwrap();
                    if flush_each {
                        assert!(!chunk.is_empty(), "{algorithm:?} flushed nothing");
                    }
                    out.extend_from_slice(&chunk);
                }
                out.extend_from_slice(&e.encode(b"", true).unwrap());
                assert_eq!(decode(algorithm, &out), data, "{algorithm:?} {flush_each}");
                assert_eq!(e.bytes_in(), data.len() as u64);
                assert_eq!(e.bytes_out(), out.len() as u64);
                assert!(out.len() < data.len() / 4, "{algorithm:?}: {}", out.len());
                assert!(e.encode(b"x", true).is_err());
            }
        }
    }

    #[test]
    fn a_flushed_piece_decodes_before_the_end() {
        // What a streaming client sees: every piece so far, before the end.
        let mut e = Encoder::new(Algorithm::Gzip, Level::Fast, true).unwrap();
        let first = e.encode(b"data: one\n\n", false).unwrap();
        let mut seen = Vec::new();
        let mut d = flate2::write::GzDecoder::new(&mut seen);
        d.write_all(&first).unwrap();
        d.flush().unwrap();
        drop(d);
        assert_eq!(seen, b"data: one\n\n");
    }

    #[test]
    fn whole_and_empty() {
        let data = sample();
        for algorithm in Algorithm::ALL {
            for level in [Level::Fast, Level::Best] {
                let out = compress(algorithm, level, &data).unwrap();
                assert_eq!(decode(algorithm, &out), data, "{algorithm:?} {level:?}");
            }
            let empty = compress(algorithm, Level::Fast, b"").unwrap();
            assert!(decode(algorithm, &empty).is_empty());
        }
    }
}
