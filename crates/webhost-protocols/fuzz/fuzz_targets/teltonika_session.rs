//! A `Session` fed the input in arbitrary pieces: the first bytes choose the
//! piece sizes, the rest is the stream (after a valid handshake half of the
//! time, so AVL decoding is reached). Whatever the split, the events are
//! those of feeding the stream at once, and the buffer stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhost_protocols::teltonika::{Session, MAX_PACKET};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (sizes, body) = data.split_at(data.len().min(usize::from(mode & 0x0F)));
    let mut stream = Vec::with_capacity(body.len() + 17);
    if mode & 0x80 != 0 {
        stream.extend_from_slice(b"\x00\x0F123456789012345");
    }
    stream.extend_from_slice(body);

    let whole = Session::new().feed(&stream);

    let mut session = Session::new();
    let mut events = Vec::new();
    let mut rest = stream.as_slice();
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1);
        let (chunk, tail) = rest.split_at(usize::from(size).clamp(1, rest.len()));
        events.extend(session.feed(chunk));
        assert!(session.buffered() <= MAX_PACKET);
        rest = tail;
        i += 1;
    }
    assert_eq!(events, whole);
});
