//! Teltonika Codec 8 and Codec 8 Extended over TCP (SPEC §5), sans-IO.
//!
//! # Framing
//!
//! A connection starts with the **IMEI handshake**: a 2-byte big-endian
//! length, then the IMEI in ASCII (15 digits in practice; 1..=20 accepted).
//! The server answers one byte, [`ACCEPT`] (`01`) for a registered device or
//! [`REJECT`] (`00`), then closes the connection after a reject.
//!
//! Then **AVL packets**, all integers big-endian:
//!
//! ```text
//! 00 00 00 00   preamble
//! LL LL LL LL   data length: codec id .. second record count
//! CC            codec id: 08 = Codec 8, 8E = Codec 8 Extended
//! NN            record count
//! …             NN records
//! NN            record count again
//! 00 00 RR RR   CRC-16/IBM (poly 0xA001 reflected, init 0) over codec id .. second count
//! ```
//!
//! A record: timestamp u64 (ms since the epoch, UTC), priority u8 (0 low,
//! 1 high, 2 panic), longitude i32 and latitude i32 (degrees × 10^7, two's
//! complement), altitude i16 (m), angle u16 (degrees from north), satellites
//! u8, speed u16 (**km/h**), then the IO block. Codec 8: event IO id u8, IO
//! total u8, then four groups of 1-, 2-, 4- and 8-byte values, each a u8
//! count followed by that many (u8 id, value). Codec 8 Extended: the same
//! with u16 ids and counts, plus a fifth group of variable-length values
//! (u16 count, then u16 id, u16 length, bytes). The IO total is not checked
//! (Traccar does not either); the group counts are what frames the data.
//!
//! The server **acknowledges** a packet, once its records are durably
//! stored, with the number of records accepted as a u32 ([`encode_ack`]); a
//! wrong count makes the device resend. A record with 0 satellites has no
//! GPS fix: it is acknowledged and kept, with [`Fix::valid`] false.
//!
//! Some firmware sends a single `FF` byte between frames as a keep-alive;
//! [`Session`] skips it.
//!
//! # Bounds
//!
//! The data length field bounds a frame; a length over [`MAX_DATA_LENGTH`]
//! is refused as soon as its bytes arrive, so a garbage length never makes
//! the server buffer. [`Decoded::NeedMore`] is returned only for a buffer
//! that is a prefix of a frame that could still be valid. A frame with a
//! wrong CRC is an error and is never decoded into records; so is a frame
//! whose record counts disagree, whose records do not exactly fill it, or
//! whose coordinates are out of range.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::Fix;

/// Handshake answer for a registered device.
pub const ACCEPT: u8 = 0x01;
/// Handshake answer for an unknown device.
pub const REJECT: u8 = 0x00;
/// Largest data length (codec id .. second record count) accepted. Devices
/// send at most a few kilobytes; this leaves room for Codec 8E's
/// variable-length IO.
pub const MAX_DATA_LENGTH: u32 = 64 * 1024;
/// Largest whole frame: header, data and CRC.
pub const MAX_PACKET: usize = HEADER_LEN + MAX_DATA_LENGTH as usize + CRC_LEN;
/// Longest IMEI accepted in the handshake.
pub const MAX_IMEI_LEN: usize = 20;
/// Keep-alive byte some firmware sends between frames.
pub const KEEP_ALIVE: u8 = 0xFF;

const HEADER_LEN: usize = 8;
const CRC_LEN: usize = 4;
/// Codec id and the two record counts.
const MIN_DATA_LEN: u32 = 3;

/// The result of decoding from the start of a buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded<T> {
    /// The buffer is a valid prefix: read more bytes and call again.
    NeedMore,
    /// One frame decoded from the first `consumed` bytes.
    Frame { value: T, consumed: usize },
}

/// The codecs this module decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Codec 8 (`0x08`): u8 IO ids and counts.
    Codec8,
    /// Codec 8 Extended (`0x8E`): u16 IO ids and counts, variable-length IO.
    Codec8Extended,
}

impl Codec {
    /// The codec id byte on the wire.
    pub const fn id(self) -> u8 {
        match self {
            Codec::Codec8 => 0x08,
            Codec::Codec8Extended => 0x8E,
        }
    }

    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            0x08 => Some(Codec::Codec8),
            0x8E => Some(Codec::Codec8Extended),
            _ => None,
        }
    }
}

/// One decoded AVL packet.
#[derive(Clone, Debug, PartialEq)]
pub struct AvlPacket {
    pub codec: Codec,
    pub records: Vec<AvlRecord>,
}

impl AvlPacket {
    /// Every record as a [`Fix`] of device `imei`.
    pub fn to_fixes(&self, imei: &str) -> Vec<Fix> {
        self.records.iter().map(|r| r.to_fix(imei)).collect()
    }
}

/// One AVL record, in the units of the wire (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct AvlRecord {
    pub time: DateTime<Utc>,
    /// 0 low, 1 high, 2 panic.
    pub priority: u8,
    /// Degrees.
    pub lon: f64,
    /// Degrees.
    pub lat: f64,
    /// Metres.
    pub altitude: i16,
    /// Degrees clockwise from north.
    pub angle: u16,
    /// 0 means no GPS fix.
    pub satellites: u8,
    pub speed_kmh: u16,
    /// The IO id that triggered the record, 0 for a periodic one.
    pub event_id: u16,
    /// IO elements in wire order (by value size, then as sent).
    pub io: Vec<(u16, IoValue)>,
}

/// An IO element's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoValue {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    /// Codec 8 Extended's variable-length group.
    Bytes(Vec<u8>),
}

impl IoValue {
    /// Numbers as JSON numbers, bytes as a lowercase hex string.
    pub fn to_json(&self) -> Value {
        match self {
            IoValue::U8(v) => Value::from(*v),
            IoValue::U16(v) => Value::from(*v),
            IoValue::U32(v) => Value::from(*v),
            IoValue::U64(v) => Value::from(*v),
            IoValue::Bytes(bytes) => Value::String(hex(bytes)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    out
}

impl AvlRecord {
    /// The record as a [`Fix`]: valid only with satellites; IO elements as
    /// attributes `io<id>`, plus `priority`, `satellites` and `event_id`.
    pub fn to_fix(&self, imei: &str) -> Fix {
        let mut attributes = Map::new();
        for (id, value) in &self.io {
            attributes.insert(format!("io{id}"), value.to_json());
        }
        attributes.insert("priority".into(), Value::from(self.priority));
        attributes.insert("satellites".into(), Value::from(self.satellites));
        attributes.insert("event_id".into(), Value::from(self.event_id));
        Fix {
            device_id: imei.to_owned(),
            time: self.time,
            lat: self.lat,
            lon: self.lon,
            speed_kmh: Some(f64::from(self.speed_kmh)),
            heading: Some(f64::from(self.angle)),
            altitude: Some(f64::from(self.altitude)),
            accuracy: None,
            valid: self.satellites > 0,
            attributes,
        }
    }
}

/// Why bytes from a device were refused. After any of these the stream
/// cannot be trusted: close the connection (the device reconnects and
/// resends what was not acknowledged).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("bad preamble: an AVL packet starts with 4 zero bytes")]
    BadPreamble,
    #[error("AVL data length of at least {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("AVL data length {len} is too short: codec id and two record counts take 3 bytes")]
    TooShort { len: u32 },
    #[error(
        "CRC mismatch: the data's CRC-16/IBM is {expected:#06x}, the packet carries \
         {actual:#010x}"
    )]
    BadCrc { expected: u32, actual: u32 },
    #[error(
        "unknown codec 0x{0:02X}: only Codec 8 (0x08) and Codec 8 Extended (0x8E) are decoded"
    )]
    UnknownCodec(u8),
    #[error("record counts disagree: {first} before the records, {second} after")]
    CountMismatch { first: u8, second: u8 },
    #[error("record {record} is truncated: its {field} runs past the data length")]
    Truncated { record: usize, field: &'static str },
    #[error("{extra} unexpected bytes after the last record: the data length does not match the records")]
    TrailingBytes { extra: usize },
    #[error("record {record} has coordinates out of range: lat {lat}, lon {lon}")]
    BadCoordinates { record: usize, lat: f64, lon: f64 },
    #[error("record {record} has an out-of-range timestamp: {millis} ms")]
    BadTimestamp { record: usize, millis: u64 },
    #[error("bad IMEI handshake: {0}")]
    BadImei(String),
}

/// CRC-16/IBM (also known as CRC-16/ARC): polynomial 0x8005 reflected
/// (0xA001), initial value 0, no final XOR.
pub fn crc16_ibm(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The acknowledgement of a packet: `accepted` records stored.
pub fn encode_ack(accepted: u32) -> [u8; 4] {
    accepted.to_be_bytes()
}

/// Decodes the IMEI handshake from the start of `buf`.
pub fn decode_imei(buf: &[u8]) -> Result<Decoded<String>, Error> {
    // Checked byte by byte, in order, so the error does not depend on how
    // the bytes were split into reads.
    match buf.first() {
        None => return Ok(Decoded::NeedMore),
        Some(0) => {}
        Some(&high) => {
            return Err(Error::BadImei(format!(
                "the length's high byte is 0x{high:02X}: expected a 2-byte length of 1 to \
                 {MAX_IMEI_LEN}, then the IMEI in ASCII"
            )))
        }
    }
    let Some(&low) = buf.get(1) else {
        return Ok(Decoded::NeedMore);
    };
    let len = usize::from(low);
    if len == 0 || len > MAX_IMEI_LEN {
        return Err(Error::BadImei(format!(
            "IMEI length {len} is not between 1 and {MAX_IMEI_LEN}"
        )));
    }
    let rest = buf.get(2..).unwrap_or_default();
    let digits = rest.get(..len).unwrap_or(rest);
    if let Some(at) = digits.iter().position(|b| !b.is_ascii_digit()) {
        let byte = digits.get(at).copied().unwrap_or_default();
        return Err(Error::BadImei(format!(
            "byte {at} of the IMEI is 0x{byte:02X}, not an ASCII digit"
        )));
    }
    if digits.len() < len {
        return Ok(Decoded::NeedMore);
    }
    let imei = digits.iter().map(|&b| char::from(b)).collect();
    Ok(Decoded::Frame {
        value: imei,
        consumed: 2 + len,
    })
}

/// The IMEI handshake for `imei` (for tests and simulators); `None` unless
/// it is 1..=20 ASCII digits.
pub fn encode_imei(imei: &str) -> Option<Vec<u8>> {
    if imei.is_empty() || imei.len() > MAX_IMEI_LEN || !imei.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len = u16::try_from(imei.len()).ok()?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(imei.as_bytes());
    Some(out)
}

/// Decodes one AVL packet from the start of `buf`.
pub fn decode_avl(buf: &[u8]) -> Result<Decoded<AvlPacket>, Error> {
    let preamble = buf.get(..4).unwrap_or(buf);
    if preamble.iter().any(|&b| b != 0) {
        return Err(Error::BadPreamble);
    }
    let length_bytes = buf.get(4..).unwrap_or_default();
    let length_bytes = length_bytes.get(..4).unwrap_or(length_bytes);
    // Byte by byte, the bytes not read yet taken as zeros give a lower
    // bound: enough to refuse a garbage length without waiting, and the
    // same error however the bytes were split into reads.
    let mut len: u32 = 0;
    for (i, &byte) in length_bytes.iter().enumerate() {
        len |= u32::from(byte) << (8 * (3 - i));
        if len > MAX_DATA_LENGTH {
            return Err(Error::TooLarge {
                len,
                max: MAX_DATA_LENGTH,
            });
        }
    }
    if length_bytes.len() < 4 {
        return Ok(Decoded::NeedMore);
    }
    if len < MIN_DATA_LEN {
        return Err(Error::TooShort { len });
    }
    if let Some(&id) = buf.get(HEADER_LEN) {
        if Codec::from_id(id).is_none() {
            return Err(Error::UnknownCodec(id));
        }
    }
    // In range: len is at most MAX_DATA_LENGTH.
    let data_len = len as usize;
    let total = HEADER_LEN + data_len + CRC_LEN;
    let Some(frame) = buf.get(..total) else {
        return Ok(Decoded::NeedMore);
    };
    let data = frame
        .get(HEADER_LEN..HEADER_LEN + data_len)
        .unwrap_or_default();
    let crc = frame
        .last_chunk::<4>()
        .map(|c| u32::from_be_bytes(*c))
        .unwrap_or_default();
    let expected = u32::from(crc16_ibm(data));
    if crc != expected {
        return Err(Error::BadCrc {
            expected,
            actual: crc,
        });
    }
    let packet = decode_data(data)?;
    Ok(Decoded::Frame {
        value: packet,
        consumed: total,
    })
}

/// Decodes codec id .. second record count, CRC already checked.
fn decode_data(data: &[u8]) -> Result<AvlPacket, Error> {
    let truncated = Error::Truncated {
        record: 0,
        field: "record count",
    };
    let Some((&second, rest)) = data.split_last() else {
        return Err(truncated);
    };
    let Some((&[id, first], records)) = rest.split_first_chunk::<2>() else {
        return Err(truncated);
    };
    let codec = Codec::from_id(id).ok_or(Error::UnknownCodec(id))?;
    if first != second {
        return Err(Error::CountMismatch { first, second });
    }
    let mut reader = Reader(records);
    let mut decoded = Vec::with_capacity(usize::from(first));
    for index in 0..usize::from(first) {
        decoded.push(decode_record(&mut reader, codec, index)?);
    }
    if !reader.0.is_empty() {
        return Err(Error::TrailingBytes {
            extra: reader.0.len(),
        });
    }
    Ok(AvlPacket {
        codec,
        records: decoded,
    })
}

/// Bounds-checked big-endian reads; `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }
}

fn decode_record(r: &mut Reader<'_>, codec: Codec, record: usize) -> Result<AvlRecord, Error> {
    let cut = |field| Error::Truncated { record, field };
    let millis = r.u64().ok_or(cut("timestamp"))?;
    let time = i64::try_from(millis)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or(Error::BadTimestamp { record, millis })?;
    let priority = r.u8().ok_or(cut("priority"))?;
    let lon = r.i32().ok_or(cut("longitude"))?;
    let lat = r.i32().ok_or(cut("latitude"))?;
    let altitude = r.i16().ok_or(cut("altitude"))?;
    let angle = r.u16().ok_or(cut("angle"))?;
    let satellites = r.u8().ok_or(cut("satellites"))?;
    let speed_kmh = r.u16().ok_or(cut("speed"))?;
    let lat = f64::from(lat) / 1e7;
    let lon = f64::from(lon) / 1e7;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(Error::BadCoordinates { record, lat, lon });
    }

    let mut io = Vec::new();
    let event_id = match codec {
        Codec::Codec8 => {
            let event_id = r.u8().ok_or(cut("event IO id"))?;
            let _total = r.u8().ok_or(cut("IO total"))?;
            for size in [1, 2, 4, 8] {
                let count = r.u8().ok_or(cut("IO group count"))?;
                for _ in 0..count {
                    let id = r.u8().ok_or(cut("IO id"))?;
                    let value = read_value(r, size).ok_or(cut("IO value"))?;
                    io.push((u16::from(id), value));
                }
            }
            u16::from(event_id)
        }
        Codec::Codec8Extended => {
            let event_id = r.u16().ok_or(cut("event IO id"))?;
            let _total = r.u16().ok_or(cut("IO total"))?;
            for size in [1, 2, 4, 8] {
                let count = r.u16().ok_or(cut("IO group count"))?;
                for _ in 0..count {
                    let id = r.u16().ok_or(cut("IO id"))?;
                    let value = read_value(r, size).ok_or(cut("IO value"))?;
                    io.push((id, value));
                }
            }
            let count = r.u16().ok_or(cut("variable-length IO count"))?;
            for _ in 0..count {
                let id = r.u16().ok_or(cut("IO id"))?;
                let len = r.u16().ok_or(cut("variable-length IO length"))?;
                let bytes = r
                    .take(usize::from(len))
                    .ok_or(cut("variable-length IO value"))?;
                io.push((id, IoValue::Bytes(bytes.to_vec())));
            }
            event_id
        }
    };

    Ok(AvlRecord {
        time,
        priority,
        lon,
        lat,
        altitude,
        angle,
        satellites,
        speed_kmh,
        event_id,
        io,
    })
}

fn read_value(r: &mut Reader<'_>, size: usize) -> Option<IoValue> {
    Some(match size {
        1 => IoValue::U8(r.u8()?),
        2 => IoValue::U16(r.u16()?),
        4 => IoValue::U32(r.u32()?),
        _ => IoValue::U64(r.u64()?),
    })
}

/// Why a packet cannot be encoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} records do not fit in one packet (at most 255)")]
    TooManyRecords(usize),
    #[error("record {record}: {reason}")]
    Record { record: usize, reason: &'static str },
    #[error("the data is {len} bytes, over the maximum of {MAX_DATA_LENGTH}")]
    TooLarge { len: usize },
}

/// Encodes an AVL packet as a device would send it (for tests, fuzzing and
/// simulators). IO elements are grouped by value size, keeping their order;
/// so `decode_avl(encode_avl(p))` gives `p` back for any packet whose IO
/// elements are already in that order (every decoded packet is).
pub fn encode_avl(packet: &AvlPacket) -> Result<Vec<u8>, EncodeError> {
    let count = u8::try_from(packet.records.len())
        .map_err(|_| EncodeError::TooManyRecords(packet.records.len()))?;
    let mut data = vec![packet.codec.id(), count];
    for (index, record) in packet.records.iter().enumerate() {
        encode_record(&mut data, packet.codec, record).map_err(|reason| EncodeError::Record {
            record: index,
            reason,
        })?;
    }
    data.push(count);
    let len = u32::try_from(data.len())
        .ok()
        .filter(|len| *len <= MAX_DATA_LENGTH)
        .ok_or(EncodeError::TooLarge { len: data.len() })?;
    let mut out = Vec::with_capacity(HEADER_LEN + data.len() + CRC_LEN);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&u32::from(crc16_ibm(&data)).to_be_bytes());
    Ok(out)
}

fn encode_record(out: &mut Vec<u8>, codec: Codec, r: &AvlRecord) -> Result<(), &'static str> {
    let coordinate = |v: f64, limit: f64| {
        let scaled = (v * 1e7).round();
        (v.is_finite() && (-limit..=limit).contains(&v)).then_some(scaled as i32)
    };
    let lat = coordinate(r.lat, 90.0).ok_or("latitude out of range")?;
    let lon = coordinate(r.lon, 180.0).ok_or("longitude out of range")?;
    let millis = u64::try_from(r.time.timestamp_millis()).map_err(|_| "time before 1970")?;
    out.extend_from_slice(&millis.to_be_bytes());
    out.push(r.priority);
    out.extend_from_slice(&lon.to_be_bytes());
    out.extend_from_slice(&lat.to_be_bytes());
    out.extend_from_slice(&r.altitude.to_be_bytes());
    out.extend_from_slice(&r.angle.to_be_bytes());
    out.push(r.satellites);
    out.extend_from_slice(&r.speed_kmh.to_be_bytes());

    let group = |size: usize| {
        r.io.iter().filter(move |(_, v)| match v {
            IoValue::U8(_) => size == 1,
            IoValue::U16(_) => size == 2,
            IoValue::U32(_) => size == 4,
            IoValue::U64(_) => size == 8,
            IoValue::Bytes(_) => size == 0,
        })
    };
    let value_bytes = |v: &IoValue| -> Vec<u8> {
        match v {
            IoValue::U8(v) => vec![*v],
            IoValue::U16(v) => v.to_be_bytes().to_vec(),
            IoValue::U32(v) => v.to_be_bytes().to_vec(),
            IoValue::U64(v) => v.to_be_bytes().to_vec(),
            IoValue::Bytes(b) => b.clone(),
        }
    };
    match codec {
        Codec::Codec8 => {
            if group(0).next().is_some() {
                return Err("Codec 8 has no variable-length IO");
            }
            out.push(u8::try_from(r.event_id).map_err(|_| "event id over 255 in Codec 8")?);
            out.push(u8::try_from(r.io.len()).map_err(|_| "over 255 IO elements in Codec 8")?);
            for size in [1, 2, 4, 8] {
                let count = group(size).count();
                out.push(u8::try_from(count).map_err(|_| "over 255 IO elements in a group")?);
                for (id, value) in group(size) {
                    out.push(u8::try_from(*id).map_err(|_| "IO id over 255 in Codec 8")?);
                    out.extend_from_slice(&value_bytes(value));
                }
            }
        }
        Codec::Codec8Extended => {
            out.extend_from_slice(&r.event_id.to_be_bytes());
            let total = u16::try_from(r.io.len()).map_err(|_| "over 65535 IO elements")?;
            out.extend_from_slice(&total.to_be_bytes());
            for size in [1, 2, 4, 8, 0] {
                let count = u16::try_from(group(size).count())
                    .map_err(|_| "over 65535 IO elements in a group")?;
                out.extend_from_slice(&count.to_be_bytes());
                for (id, value) in group(size) {
                    out.extend_from_slice(&id.to_be_bytes());
                    let bytes = value_bytes(value);
                    if size == 0 {
                        let len = u16::try_from(bytes.len())
                            .map_err(|_| "variable-length IO value over 65535 bytes")?;
                        out.extend_from_slice(&len.to_be_bytes());
                    }
                    out.extend_from_slice(&bytes);
                }
            }
        }
    }
    Ok(())
}

/// What a [`Session`] found in the bytes fed to it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The device introduced itself: answer [`ACCEPT`] or [`REJECT`] (and
    /// close the connection after a reject).
    Handshake(String),
    /// A packet whose CRC checked: store its records, then send
    /// [`encode_ack`] with the number stored.
    Packet(AvlPacket),
    /// The stream is broken: close the connection. The session ignores
    /// anything fed after it.
    Error(Error),
}

/// One device connection as a state machine: first the IMEI handshake,
/// then AVL packets, over bytes in whatever pieces TCP delivers them.
///
/// The buffer never holds more than one incomplete frame (at most
/// [`MAX_PACKET`] bytes) between calls to [`Session::feed`].
#[derive(Clone, Debug, Default)]
pub struct Session {
    imei: Option<String>,
    buffer: Vec<u8>,
    failed: bool,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// The IMEI, once the handshake is done.
    pub fn imei(&self) -> Option<&str> {
        self.imei.as_deref()
    }

    /// True after an [`Event::Error`]: the connection should be closed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes waiting for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the next bytes read from the connection; returns what they
    /// completed, in order. After the handshake event, the server must
    /// answer (and stop on a reject) before acting on later events.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if self.failed {
            return events;
        }
        self.buffer.extend_from_slice(bytes);
        let mut pos = 0;
        loop {
            let rest = self.buffer.get(pos..).unwrap_or_default();
            match rest.first() {
                None => break,
                Some(&KEEP_ALIVE) => {
                    pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            let step = match self.imei {
                None => decode_imei(rest).map(|d| match d {
                    Decoded::NeedMore => None,
                    Decoded::Frame { value, consumed } => Some((Event::Handshake(value), consumed)),
                }),
                Some(_) => decode_avl(rest).map(|d| match d {
                    Decoded::NeedMore => None,
                    Decoded::Frame { value, consumed } => Some((Event::Packet(value), consumed)),
                }),
            };
            match step {
                Ok(None) => break,
                Ok(Some((event, consumed))) => {
                    if let Event::Handshake(imei) = &event {
                        self.imei = Some(imei.clone());
                    }
                    pos += consumed;
                    events.push(event);
                }
                Err(error) => {
                    self.failed = true;
                    self.buffer = Vec::new();
                    events.push(Event::Error(error));
                    return events;
                }
            }
        }
        self.buffer.drain(..pos.min(self.buffer.len()));
        events
    }
}

#[cfg(test)]
mod tests;
