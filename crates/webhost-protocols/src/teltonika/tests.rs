use super::*;
use chrono::TimeZone;

fn unhex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    s.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Wraps `data` (codec id .. second count) in a preamble, length and CRC.
fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&u32::from(crc16_ibm(data)).to_be_bytes());
    out
}

fn data_of(frame: &[u8]) -> Vec<u8> {
    frame[8..frame.len() - 4].to_vec()
}

fn decode_one(buf: &[u8]) -> AvlPacket {
    match decode_avl(buf).unwrap() {
        Decoded::Frame { value, consumed } => {
            assert_eq!(consumed, buf.len());
            value
        }
        Decoded::NeedMore => panic!("NeedMore for a whole frame"),
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// Codec 8, two records, built by hand (CRC computed separately):
/// record 0: 2024-11-21T12:00:00Z, priority 1, lon 13.4049540 (07FD6F04),
/// lat -33.8688000 (EBD00800), alt -12 (FFF4), angle 270 (010E), 9
/// satellites, 87 km/h, event 239, IO total 2, N1 = 1 (239 → 1), N2 = 1
/// (66 → 0x3039 = 12345), N4 = 0, N8 = 0.
/// record 1: 30 s later, priority 0, same place, everything else 0, no IO.
const CODEC8_TWO: &str = "00000000 00000044 08 02 \
    000001934E97EE00 01 07FD6F04 EBD00800 FFF4 010E 09 0057 EF 02 01 EF01 01 423039 00 00 \
    000001934E986330 00 07FD6F04 EBD00800 0000 0000 00 0000 00 00 00 00 00 00 \
    02 00003C59";

/// Codec 8E with a variable-length IO: 2024-11-21T12:00:00Z, priority 2
/// (panic), lon 25.2796520 (0F115E68), lat 54.6871570 (20989912), alt 112,
/// angle 45, 14 satellites, 0 km/h, event 385 (0181), total 3, N1 = 1
/// (239 → 1), N2 = 0, N4 = 1 (16 → 123456), N8 = 0, NX = 1 (385 → AB CD EF).
const CODEC8E_VAR: &str = "00000000 00000039 8E 01 \
    000001934E97EE00 02 0F115E68 20989912 0070 002D 0E 0000 0181 0003 \
    0001 00EF 01 0000 0001 0010 0001E240 0000 0001 0181 0003 ABCDEF \
    01 00004277";

#[test]
fn crc16_ibm_check_value() {
    // The catalogue check value of CRC-16/ARC (= IBM) over "123456789".
    assert_eq!(crc16_ibm(b"123456789"), 0xBB3D);
    assert_eq!(crc16_ibm(b""), 0);
    assert_eq!(crc16_ibm(&[0x01]), 0xC0C1);
}

#[test]
fn ack_is_big_endian_count() {
    assert_eq!(encode_ack(0), [0, 0, 0, 0]);
    assert_eq!(encode_ack(1), [0, 0, 0, 1]);
    assert_eq!(encode_ack(0x0102_0304), [1, 2, 3, 4]);
    assert_eq!(ACCEPT, 1);
    assert_eq!(REJECT, 0);
}

#[test]
fn imei_handshake() {
    let buf = unhex("000F313233343536373839303132333435");
    assert_eq!(
        decode_imei(&buf),
        Ok(Decoded::Frame {
            value: "123456789012345".into(),
            consumed: 17
        })
    );
    // Bytes after the handshake are left alone.
    let mut more = buf.clone();
    more.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        decode_imei(&more),
        Ok(Decoded::Frame {
            value: "123456789012345".into(),
            consumed: 17
        })
    );
    for end in 0..buf.len() {
        assert_eq!(
            decode_imei(&buf[..end]),
            Ok(Decoded::NeedMore),
            "prefix {end}"
        );
    }
    assert_eq!(encode_imei("123456789012345"), Some(buf));
}

#[test]
fn imei_lengths_one_to_twenty() {
    for len in 1..=MAX_IMEI_LEN {
        let imei = "7".repeat(len);
        let buf = encode_imei(&imei).unwrap();
        assert_eq!(
            decode_imei(&buf),
            Ok(Decoded::Frame {
                value: imei,
                consumed: len + 2
            })
        );
    }
    assert_eq!(encode_imei(""), None);
    assert_eq!(encode_imei(&"1".repeat(21)), None);
    assert_eq!(encode_imei("12345678901234x"), None);
}

#[test]
fn bad_imei_refused() {
    let cases: &[&[u8]] = &[
        b"\x00\x00",                     // length 0
        b"\x00\x15",                     // length 21
        b"\x01",                         // length ≥ 256, known from the first byte
        b"\xFF\xFF",                     // garbage
        b"\x00\x0F12345678901234X",      // not a digit
        b"\x00\x0F1234-",                // not a digit, in a prefix
        b"\x00\x0F\x00\x00\x00\x00\x00", // an AVL packet sent before the handshake
    ];
    for case in cases {
        match decode_imei(case) {
            Err(Error::BadImei(message)) => assert!(!message.is_empty()),
            other => panic!("{case:02X?}: {other:?}"),
        }
    }
    let message = decode_imei(b"\x00\x15").unwrap_err().to_string();
    assert!(message.contains("between 1 and 20"), "{message}");
    // Known from the first byte, and the same error with more bytes.
    assert_eq!(decode_imei(b"\x01"), decode_imei(b"\x01\x05123"));
    let message = decode_imei(b"\x00\x031a").unwrap_err().to_string();
    assert!(message.contains("not an ASCII digit"), "{message}");
}

#[test]
fn codec8_two_records_by_hand() {
    let buf = unhex(CODEC8_TWO);
    let packet = decode_one(&buf);
    assert_eq!(packet.codec, Codec::Codec8);
    assert_eq!(packet.records.len(), 2);

    let r = &packet.records[0];
    assert_eq!(r.time, utc(2024, 11, 21, 12, 0, 0));
    assert_eq!(r.priority, 1);
    assert_eq!(r.lon, 13.404954);
    assert_eq!(r.lat, -33.8688);
    assert_eq!(r.altitude, -12);
    assert_eq!(r.angle, 270);
    assert_eq!(r.satellites, 9);
    assert_eq!(r.speed_kmh, 87);
    assert_eq!(r.event_id, 239);
    assert_eq!(r.io, vec![(239, IoValue::U8(1)), (66, IoValue::U16(12345))]);

    let r = &packet.records[1];
    assert_eq!(r.time, utc(2024, 11, 21, 12, 0, 30));
    assert_eq!(r.priority, 0);
    assert_eq!((r.lat, r.lon), (-33.8688, 13.404954));
    assert_eq!(
        (r.altitude, r.angle, r.satellites, r.speed_kmh),
        (0, 0, 0, 0)
    );
    assert_eq!(r.event_id, 0);
    assert!(r.io.is_empty());

    let fixes = packet.to_fixes("356307042441013");
    assert_eq!(fixes.len(), 2);
    let f = &fixes[0];
    assert_eq!(f.device_id, "356307042441013");
    assert_eq!(f.time, utc(2024, 11, 21, 12, 0, 0));
    assert_eq!((f.lat, f.lon), (-33.8688, 13.404954));
    assert_eq!(f.speed_kmh, Some(87.0));
    assert_eq!(f.heading, Some(270.0));
    assert_eq!(f.altitude, Some(-12.0));
    assert_eq!(f.accuracy, None);
    assert!(f.valid);
    assert_eq!(
        serde_json::Value::Object(f.attributes.clone()),
        serde_json::json!({
            "io239": 1, "io66": 12345, "priority": 1, "satellites": 9, "event_id": 239
        })
    );
    // No satellites: kept, but not a fix.
    assert!(!fixes[1].valid);
    assert_eq!(fixes[1].attributes["satellites"], 0);
}

#[test]
fn codec8e_variable_length_io_by_hand() {
    let buf = unhex(CODEC8E_VAR);
    let packet = decode_one(&buf);
    assert_eq!(packet.codec, Codec::Codec8Extended);
    let [r] = packet.records.as_slice() else {
        panic!("one record expected")
    };
    assert_eq!(r.time, utc(2024, 11, 21, 12, 0, 0));
    assert_eq!(r.priority, 2);
    assert_eq!(r.lon, 25.279652);
    assert_eq!(r.lat, 54.687157);
    assert_eq!(
        (r.altitude, r.angle, r.satellites, r.speed_kmh),
        (112, 45, 14, 0)
    );
    assert_eq!(r.event_id, 385);
    assert_eq!(
        r.io,
        vec![
            (239, IoValue::U8(1)),
            (16, IoValue::U32(123_456)),
            (385, IoValue::Bytes(vec![0xAB, 0xCD, 0xEF])),
        ]
    );
    let fix = r.to_fix("1");
    assert!(fix.valid);
    assert_eq!(fix.attributes["io385"], "abcdef");
    assert_eq!(fix.attributes["io16"], 123_456);
    assert_eq!(fix.attributes["event_id"], 385);
    assert_eq!(fix.attributes["priority"], 2);
}

#[test]
fn encode_reproduces_the_hand_built_frames() {
    for hex in [CODEC8_TWO, CODEC8E_VAR] {
        let buf = unhex(hex);
        assert_eq!(encode_avl(&decode_one(&buf)).unwrap(), buf);
    }
}

#[test]
fn wiki_codec8_examples() {
    // Teltonika's published Codec 8 examples 2 and 3.
    let buf = unhex(
        "000000000000002808010000016B40D9AD80010000000000000000000000000000000103021503010101425E100000010000F22A",
    );
    let packet = decode_one(&buf);
    let [r] = packet.records.as_slice() else {
        panic!()
    };
    assert_eq!(r.time.timestamp_millis(), 0x0000_016B_40D9_AD80);
    assert_eq!(r.time, utc(2019, 6, 10, 10, 5, 36));
    assert_eq!(r.event_id, 1);
    assert_eq!(
        r.io,
        vec![
            (21, IoValue::U8(3)),
            (1, IoValue::U8(1)),
            (66, IoValue::U16(0x5E10))
        ]
    );

    let buf = unhex(
        "000000000000004308020000016B40D57B480100000000000000000000000000000001010101000000000000016B40D5C198010000000000000000000000000000000101010101000000020000252C",
    );
    let packet = decode_one(&buf);
    assert_eq!(packet.records.len(), 2);
    assert_eq!(packet.records[0].time, utc(2019, 6, 10, 10, 1, 1));
    assert_eq!(packet.records[1].time, utc(2019, 6, 10, 10, 1, 19));
    assert_eq!(packet.records[0].io, vec![(1, IoValue::U8(0))]);
    assert_eq!(packet.records[1].io, vec![(1, IoValue::U8(1))]);
    assert!(packet.to_fixes("1").iter().all(|f| !f.valid));
}

#[test]
fn every_prefix_needs_more() {
    for hex in [CODEC8_TWO, CODEC8E_VAR] {
        let buf = unhex(hex);
        for end in 0..buf.len() {
            assert_eq!(
                decode_avl(&buf[..end]),
                Ok(Decoded::NeedMore),
                "prefix {end}"
            );
        }
    }
}

#[test]
fn back_to_back_packets_one_at_a_time() {
    let a = unhex(CODEC8_TWO);
    let b = unhex(CODEC8E_VAR);
    let mut buf = a.clone();
    buf.extend_from_slice(&b);
    let Ok(Decoded::Frame { value, consumed }) = decode_avl(&buf) else {
        panic!()
    };
    assert_eq!(consumed, a.len());
    assert_eq!(value.records.len(), 2);
    let Ok(Decoded::Frame { value, consumed }) = decode_avl(&buf[consumed..]) else {
        panic!()
    };
    assert_eq!(consumed, b.len());
    assert_eq!(value.codec, Codec::Codec8Extended);
}

#[test]
fn every_flipped_byte_is_refused() {
    let buf = unhex(CODEC8_TWO);
    for at in 0..buf.len() {
        for bit in 0..8 {
            let mut bad = buf.clone();
            bad[at] ^= 1 << bit;
            match decode_avl(&bad) {
                Ok(Decoded::Frame { .. }) => panic!("byte {at} bit {bit} decoded"),
                Ok(Decoded::NeedMore) | Err(_) => {}
            }
        }
    }
    // In the data, a flip is caught by the CRC.
    let mut bad = buf.clone();
    bad[20] ^= 0x10;
    assert!(matches!(decode_avl(&bad), Err(Error::BadCrc { .. })));
    // In the CRC field itself, including its upper (zero) bytes.
    let mut bad = buf.clone();
    let n = bad.len();
    bad[n - 4] = 0x01;
    assert_eq!(
        decode_avl(&bad),
        Err(Error::BadCrc {
            expected: 0x3C59,
            actual: 0x0100_3C59
        })
    );
    let message = decode_avl(&bad).unwrap_err().to_string();
    assert!(message.contains("0x3c59"), "{message}");
}

#[test]
fn header_errors_without_waiting() {
    assert_eq!(decode_avl(&[]), Ok(Decoded::NeedMore));
    assert_eq!(decode_avl(&[0, 0, 1]), Err(Error::BadPreamble));
    assert_eq!(decode_avl(b"\x00\x0F12"), Err(Error::BadPreamble));
    // A length known to be too large from its first byte.
    assert_eq!(
        decode_avl(&[0, 0, 0, 0, 0x01]),
        Err(Error::TooLarge {
            len: 0x0100_0000,
            max: MAX_DATA_LENGTH
        })
    );
    assert_eq!(
        decode_avl(&[0, 0, 0, 0, 0x01, 0x02, 0x03, 0x04]),
        Err(Error::TooLarge {
            len: 0x0100_0000,
            max: MAX_DATA_LENGTH
        })
    );
    assert_eq!(
        decode_avl(&[0, 0, 0, 0, 0, 1, 0, 1]),
        Err(Error::TooLarge {
            len: 0x1_0001,
            max: MAX_DATA_LENGTH
        })
    );
    // The largest length allowed waits for its bytes.
    assert_eq!(decode_avl(&[0, 0, 0, 0, 0, 1, 0, 0]), Ok(Decoded::NeedMore));
    assert_eq!(
        decode_avl(&[0, 0, 0, 0, 0, 0, 0, 2]),
        Err(Error::TooShort { len: 2 })
    );
    // An unknown codec is refused from its byte on.
    assert_eq!(
        decode_avl(&[0, 0, 0, 0, 0, 0, 0, 0x40, 0x0C]),
        Err(Error::UnknownCodec(0x0C))
    );
    let message = Error::UnknownCodec(0x10).to_string();
    assert!(message.contains("0x10"), "{message}");
}

#[test]
fn counts_must_agree() {
    let mut data = data_of(&unhex(CODEC8_TWO));
    let last = data.len() - 1;
    data[last] = 3;
    assert_eq!(
        decode_avl(&frame(&data)),
        Err(Error::CountMismatch {
            first: 2,
            second: 3
        })
    );
    // Both counts say 3 but only two records are there.
    data[1] = 3;
    assert!(matches!(
        decode_avl(&frame(&data)),
        Err(Error::Truncated { record: 2, .. })
    ));
    // Both say 1: the second record is left over.
    data[1] = 1;
    data[last] = 1;
    assert!(matches!(
        decode_avl(&frame(&data)),
        Err(Error::TrailingBytes { extra: 30 })
    ));
}

#[test]
fn zero_record_packet_is_empty() {
    let packet = decode_one(&frame(&[0x08, 0, 0]));
    assert!(packet.records.is_empty());
}

#[test]
fn truncated_inside_io() {
    let data = data_of(&unhex(CODEC8E_VAR));
    // Drop the last byte of the variable-length value, keep the counts.
    let mut cut = data[..data.len() - 2].to_vec();
    cut.push(1);
    assert_eq!(
        decode_avl(&frame(&cut)),
        Err(Error::Truncated {
            record: 0,
            field: "variable-length IO value"
        })
    );
    // A variable-length value claiming 65535 bytes.
    let mut long = data.clone();
    let at = long.len() - 6;
    long[at] = 0xFF;
    long[at + 1] = 0xFF;
    assert!(matches!(
        decode_avl(&frame(&long)),
        Err(Error::Truncated { record: 0, .. })
    ));
}

fn record(lat: f64, lon: f64, satellites: u8) -> AvlRecord {
    AvlRecord {
        time: utc(2024, 1, 2, 3, 4, 5),
        priority: 0,
        lon,
        lat,
        altitude: 0,
        angle: 0,
        satellites,
        speed_kmh: 0,
        event_id: 0,
        io: Vec::new(),
    }
}

#[test]
fn coordinates_out_of_range_refuse_the_packet() {
    let good = encode_avl(&AvlPacket {
        codec: Codec::Codec8,
        records: vec![record(90.0, -180.0, 5)],
    })
    .unwrap();
    assert_eq!(decode_one(&good).records[0].lat, 90.0);
    // Latitude 90.0000001: patch the raw value, the encoder refuses it.
    let mut data = data_of(&good);
    data[2 + 8 + 1 + 4..2 + 8 + 1 + 8].copy_from_slice(&900_000_001_i32.to_be_bytes());
    assert!(matches!(
        decode_avl(&frame(&data)),
        Err(Error::BadCoordinates { record: 0, .. })
    ));
    let mut data = data_of(&good);
    data[2 + 8 + 1..2 + 8 + 1 + 4].copy_from_slice(&i32::MIN.to_be_bytes());
    let err = decode_avl(&frame(&data)).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(encode_avl(&AvlPacket {
        codec: Codec::Codec8,
        records: vec![record(91.0, 0.0, 5)],
    })
    .is_err());
}

#[test]
fn timestamp_out_of_range() {
    let mut data = data_of(&unhex(CODEC8_TWO));
    data[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(
        decode_avl(&frame(&data)),
        Err(Error::BadTimestamp {
            record: 0,
            millis: u64::MAX
        })
    );
}

#[test]
fn roundtrip_every_value_kind() {
    let mut r = record(-12.3456789, 179.9999999, 3);
    r.io = vec![
        (1, IoValue::U8(255)),
        (2, IoValue::U16(65535)),
        (3, IoValue::U32(u32::MAX)),
        (4, IoValue::U64(u64::MAX)),
    ];
    let packet = AvlPacket {
        codec: Codec::Codec8,
        records: vec![r.clone(), r.clone()],
    };
    assert_eq!(decode_one(&encode_avl(&packet).unwrap()), packet);

    r.event_id = 1000;
    r.io.push((60_000, IoValue::Bytes(vec![])));
    r.io.push((60_001, IoValue::Bytes(vec![7; 300])));
    let packet = AvlPacket {
        codec: Codec::Codec8Extended,
        records: vec![r.clone()],
    };
    assert_eq!(decode_one(&encode_avl(&packet).unwrap()), packet);
    let fix = r.to_fix("1");
    assert_eq!(fix.attributes["io60000"], "");
    assert_eq!(fix.attributes["io4"], u64::MAX);
    // Codec 8 cannot carry those.
    assert!(encode_avl(&AvlPacket {
        codec: Codec::Codec8,
        records: vec![r],
    })
    .is_err());
}

#[test]
fn session_handshake_then_packets_byte_by_byte() {
    let mut stream = unhex("000F313233343536373839303132333435");
    stream.push(KEEP_ALIVE);
    stream.extend(unhex(CODEC8_TWO));
    stream.push(KEEP_ALIVE);
    stream.extend(unhex(CODEC8E_VAR));

    let mut session = Session::new();
    let mut events = Vec::new();
    for byte in &stream {
        events.extend(session.feed(std::slice::from_ref(byte)));
        assert!(session.buffered() <= MAX_PACKET);
    }
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], Event::Handshake("123456789012345".into()));
    assert!(matches!(&events[1], Event::Packet(p) if p.records.len() == 2));
    assert!(matches!(&events[2], Event::Packet(p) if p.codec == Codec::Codec8Extended));
    assert_eq!(session.imei(), Some("123456789012345"));
    assert_eq!(session.buffered(), 0);
    assert!(!session.is_failed());

    // All at once gives the same events.
    let mut session = Session::new();
    assert_eq!(session.feed(&stream), events);
}

#[test]
fn session_stops_at_the_first_error() {
    let mut session = Session::new();
    let events = session.feed(&unhex("000F313233343536373839303132333435"));
    assert_eq!(events, vec![Event::Handshake("123456789012345".into())]);
    let mut bad = unhex(CODEC8_TWO);
    bad[30] ^= 1;
    let events = session.feed(&bad);
    assert!(matches!(
        events.as_slice(),
        [Event::Error(Error::BadCrc { .. })]
    ));
    assert!(session.is_failed());
    assert_eq!(session.feed(&unhex(CODEC8_TWO)), vec![]);
    assert_eq!(session.buffered(), 0);

    let mut session = Session::new();
    let events = session.feed(b"\x00\x02ab");
    assert!(matches!(
        events.as_slice(),
        [Event::Error(Error::BadImei(_))]
    ));
    assert_eq!(session.imei(), None);
}

#[test]
fn session_never_buffers_a_garbage_length() {
    let mut session = Session::new();
    session.feed(&unhex("000F313233343536373839303132333435"));
    let events = session.feed(&[0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF]);
    assert!(matches!(
        events.as_slice(),
        [Event::Error(Error::TooLarge { .. })]
    ));
    assert_eq!(session.buffered(), 0);
}

/// Deterministic pseudo-random inputs (xorshift64*, fixed seed): random
/// bytes, mutated valid frames and random chunkings. Never a panic; a
/// `Frame` never claims more bytes than it was given, its prefixes never
/// decode, and decoding what it decoded re-encodes losslessly.
#[test]
fn robustness_against_random_and_mutated_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let seeds = [unhex(CODEC8_TWO), unhex(CODEC8E_VAR)];
    let iterations = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    for i in 0..iterations {
        let input = if i % 4 == 0 {
            let len = rng.below(96);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Give random bytes a chance to pass the first checks.
            if rng.below(2) == 0 {
                v.splice(0..0, [0, 0, 0, 0, 0, 0, 0, rng.next() as u8, 0x8E]);
            }
            v
        } else {
            let mut v = seeds[i % 2].clone();
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut v);
            }
            // Half of the time keep the CRC right, to reach the record parser.
            if rng.below(2) == 0 && v.len() >= 12 {
                let data = v[8..v.len() - 4].to_vec();
                v = frame(&data);
            }
            v
        };
        check_avl(&input);
        let _ = decode_imei(&input);
        // Fed in random pieces, a session finds exactly what it finds in
        // the whole stream.
        let mut stream = b"\x00\x011".to_vec();
        if rng.below(2) == 0 {
            stream.push(KEEP_ALIVE);
        }
        stream.extend_from_slice(&input);
        let whole = Session::new().feed(&stream);
        let mut session = Session::new();
        let mut events = Vec::new();
        let mut rest = stream.as_slice();
        while !rest.is_empty() {
            let n = rng.below(rest.len() as u64 + 1) as usize;
            let (chunk, tail) = rest.split_at(n.max(1));
            events.extend(session.feed(chunk));
            assert!(session.buffered() <= MAX_PACKET);
            rest = tail;
        }
        assert_eq!(events, whole);
    }
}

fn check_avl(input: &[u8]) {
    if let Ok(Decoded::Frame { value, consumed }) = decode_avl(input) {
        assert!(consumed <= input.len() && consumed <= MAX_PACKET);
        assert!(!matches!(
            decode_avl(&input[..consumed - 1]),
            Ok(Decoded::Frame { .. })
        ));
        match encode_avl(&value) {
            Ok(encoded) => assert_eq!(decode_one(&encoded), value),
            // Codec 8 cannot state an IO total over 255 (the decoder does not
            // check the total; the groups can hold up to 4 × 255).
            Err(EncodeError::Record { reason, .. }) if reason.contains("over 255 IO") => {}
            Err(e) => panic!("a decoded packet does not re-encode: {e}"),
        }
    }
}

fn mutate(rng: &mut XorShift, v: &mut Vec<u8>) {
    if v.is_empty() {
        v.push(rng.next() as u8);
        return;
    }
    let at = rng.below(v.len() as u64) as usize;
    match rng.below(5) {
        0 => v[at] ^= 1 << rng.below(8),
        1 => v[at] = rng.next() as u8,
        2 => {
            v.insert(at, rng.next() as u8);
        }
        3 => {
            v.remove(at);
        }
        _ => v.truncate(at),
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}
