//! The bytes of a snapshot: the JSON of [`Applied`] with the format it is written in,
//! `{format, last_applied, membership, state}`, written and read in one pass, from memory
//! ([`encode_snapshot`], [`decode_snapshot`]) or streamed ([`encode_snapshot_to`],
//! [`decode_snapshot_from`]). One implementation of the format serves both.
//!
//! A shoal refuses a snapshot of a newer format than it reads, saying so, rather than
//! misreading it; snapshots written before formats were numbered are format 1.

use std::fmt;
use std::io::{Read, Seek, Write};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::state_machine::Applied;

/// The snapshot format this shoal writes, and the newest it reads. Bump it when a
/// snapshot this version writes could be misread by an older one (a field whose absence
/// an older version would take for something else), and keep a golden snapshot of every
/// format in `controller/tests/fixtures/state/` (`tests/state_formats.rs` loads them).
///
/// - 1: the state before formats were numbered, and every state without the below.
/// - 2: a state with a chosen address pool (`ClusterState::pool`), which format 1
///   readers would ignore and then give out addresses of the default pool.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// What is written: `format` first, so a reader can refuse a newer snapshot before it
/// reads (and perhaps fails on) the rest.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    #[serde(flatten)]
    applied: &'a Applied,
}

/// The oldest format that holds what `applied` stores (so an older shoal reads it unless
/// that would misread it).
fn format_of(applied: &Applied) -> u32 {
    if applied.state.pool.is_some() {
        2
    } else {
        1
    }
}

/// The bytes of a snapshot of `applied` ([`encode_snapshot_to`] into memory).
pub fn encode_snapshot(applied: &Applied) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    encode_snapshot_to(&mut bytes, applied)?;
    Ok(bytes)
}

/// Writes a snapshot of `applied` to `writer`, in the oldest format that holds what it
/// stores. `writer` should be buffered (a `BufWriter` on a file): serde_json writes in
/// small pieces.
pub fn encode_snapshot_to(writer: impl Write, applied: &Applied) -> Result<(), String> {
    let out = SnapshotOut {
        format: format_of(applied),
        applied,
    };
    serde_json::to_writer(writer, &out).map_err(|e| format!("encode snapshot: {e}"))
}

/// The state in snapshot bytes, or why it cannot be read: a newer format than this
/// shoal reads, or bytes that do not parse.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Applied, String> {
    read_once(&mut serde_json::Deserializer::from_slice(bytes))
        .map_err(|failed| failed.explain(|| serde_json::from_slice::<FormatOnly>(bytes)))
}

/// [`decode_snapshot`] of what `reader` holds from its current position on, read in one
/// pass; `reader` should be buffered (a `BufReader` on a file). It needs no memory for
/// the bytes but takes about three times as long as [`decode_snapshot`] on them
/// (serde_json reads a reader byte by byte), so the state machine reads files whole. Only when the snapshot
/// does not parse, and before failing it said no format, is it read again from its start,
/// for the format alone: a newer snapshot is refused as such even if its format comes
/// after what this shoal cannot parse.
pub fn decode_snapshot_from<R: Read + Seek>(mut reader: R) -> Result<Applied, String> {
    let start = reader
        .stream_position()
        .map_err(|e| format!("it cannot be read: {e}"))?;
    let read = read_once(&mut serde_json::Deserializer::from_reader(&mut reader));
    read.map_err(|failed| {
        failed.explain(|| {
            reader
                .seek(std::io::SeekFrom::Start(start))
                .map_err(serde_json::Error::io)?;
            serde_json::from_reader::<_, FormatOnly>(&mut reader)
        })
    })
}

/// Only the format of a snapshot (the rest skipped).
#[derive(Deserialize)]
struct FormatOnly {
    #[serde(default)]
    format: Option<u32>,
}

/// A first pass that failed: the format it saw before failing, if any, and why.
struct Failed {
    format: Option<u32>,
    error: serde_json::Error,
}

impl Failed {
    /// What to tell: a newer format if the snapshot has one (`format_only` reads it when
    /// the first pass failed before seeing it), else why its data does not parse.
    fn explain(self, format_only: impl FnOnce() -> serde_json::Result<FormatOnly>) -> String {
        let format = match self.format {
            Some(format) => format,
            None => match format_only() {
                Ok(only) => only.format.unwrap_or(1),
                Err(e) => return format!("it does not parse: {e}"),
            },
        };
        if format > SNAPSHOT_FORMAT {
            return newer(format);
        }
        format!("its data does not parse: {}", self.error)
    }
}

fn newer(format: u32) -> String {
    format!(
        "it was written by a newer shoal (state format {format}; this shoal reads formats up to {SNAPSHOT_FORMAT}): run a shoal at least as new as the one that wrote it"
    )
}

/// Reads a snapshot in one pass, refusing a newer format as soon as it is seen.
fn read_once<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
) -> Result<Applied, Failed> {
    let mut format = None;
    SnapshotIn {
        format: &mut format,
    }
    .deserialize(&mut *de)
    .and_then(|applied| de.end().map(|()| applied))
    .map_err(|error| Failed { format, error })
}

/// `Applied` read field by field, with `format` noted (in `format`) when it is seen and a
/// newer one refused there, before the state it announces is read. (Not `Applied` through
/// `#[serde(flatten)]`: a flattened struct is read from buffered content, where maps keyed
/// by numbers, the membership's nodes, fail; and the whole state would be buffered.)
struct SnapshotIn<'a> {
    format: &'a mut Option<u32>,
}

impl<'de> DeserializeSeed<'de> for SnapshotIn<'_> {
    type Value = Applied;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Applied, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SnapshotIn<'_> {
    type Value = Applied;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a shoal snapshot (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Applied, A::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            Format,
            LastApplied,
            Membership,
            State,
            #[serde(other)]
            Other,
        }
        let (mut last_applied, mut membership, mut state) = (None, None, None);
        while let Some(field) = map.next_key()? {
            match field {
                Field::Format => {
                    let format = map.next_value::<Option<u32>>()?.unwrap_or(1);
                    *self.format = Some(format);
                    if format > SNAPSHOT_FORMAT {
                        return Err(de::Error::custom("a newer format"));
                    }
                }
                Field::LastApplied => last_applied = map.next_value()?,
                Field::Membership => membership = Some(map.next_value()?),
                Field::State => state = Some(map.next_value()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // Every field of `Applied` (a field added there fails to compile here).
        Ok(Applied {
            last_applied,
            membership: membership.ok_or_else(|| de::Error::missing_field("membership"))?,
            state: state.ok_or_else(|| de::Error::missing_field("state"))?,
        })
    }
}
