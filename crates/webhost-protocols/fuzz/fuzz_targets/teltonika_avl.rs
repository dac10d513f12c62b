//! `decode_avl` and `decode_imei` on arbitrary bytes, and `decode_avl` on
//! the input wrapped as a frame with a correct length and CRC (so the
//! fuzzer reaches the record parser instead of stopping at the checksum).
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhost_protocols::teltonika::{self, crc16_ibm, Decoded, MAX_PACKET};

fn check(buf: &[u8]) {
    let Ok(Decoded::Frame { value, consumed }) = teltonika::decode_avl(buf) else {
        return;
    };
    assert!(consumed <= buf.len() && consumed <= MAX_PACKET);
    // No strict prefix of a frame decodes.
    assert!(!matches!(
        teltonika::decode_avl(&buf[..consumed - 1]),
        Ok(Decoded::Frame { .. })
    ));
    for fix in value.to_fixes("1") {
        assert!((-90.0..=90.0).contains(&fix.lat) && (-180.0..=180.0).contains(&fix.lon));
        assert_eq!(fix.valid, fix.attributes["satellites"] != 0);
    }
    // What decodes re-encodes to the same packet (Codec 8 cannot state an
    // IO total over 255; the decoder does not check the total).
    match teltonika::encode_avl(&value) {
        Ok(bytes) => assert_eq!(
            teltonika::decode_avl(&bytes),
            Ok(Decoded::Frame {
                value,
                consumed: bytes.len()
            })
        ),
        Err(teltonika::EncodeError::Record { reason, .. }) if reason.contains("over 255 IO") => {}
        Err(e) => panic!("decoded packet does not re-encode: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Frame { value, consumed }) = teltonika::decode_imei(data) {
        assert!(consumed <= data.len());
        assert!(!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()));
    }
    check(data);

    let Ok(len) = u32::try_from(data.len()) else {
        return;
    };
    let mut framed = vec![0, 0, 0, 0];
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(data);
    framed.extend_from_slice(&u32::from(crc16_ibm(data)).to_be_bytes());
    check(&framed);
});
