//! Tunnel header: parse never panics; parse -> emit -> parse is stable.
#![no_main]

use homeaddr_proto::wire::{TunnelFrame, TunnelHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = TunnelFrame::new_checked(data) else {
        assert!(TunnelHeader::parse(data).is_err());
        return;
    };
    let header = frame.header().expect("a checked frame has a valid header");
    let _ = (frame.version(), frame.flags(), frame.member_id());
    assert_eq!(TunnelHeader::parse(data), Ok(header));

    // Re-emit the header over the same frame: same header, same payload.
    let mut copy = data.to_vec();
    header.emit(&mut copy).expect("the frame holds a header");
    let again = TunnelFrame::new_checked(&copy[..]).expect("emitted frame parses");
    assert_eq!(again.header(), Ok(header));
    assert_eq!(again.payload(), frame.payload());
    assert_eq!(TunnelHeader::parse(&header.to_bytes()), Ok(header));
});
