//! Mobility Header: the view and the typed parse never panic; a parsed
//! message re-emits to bytes that parse to the same message.
#![no_main]

use homeaddr_proto::wire::{MobilityHeader, MobilityMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = MobilityHeader::new_checked(data) {
        let _ = (view.mh_type(), view.checksum(), view.message_data());
        for option in view.options() {
            let _ = option.and_then(|raw| raw.to_option());
        }
        if let Some(range) = view.authenticator_range() {
            assert!(range.end <= view.header_len());
        }
    }

    let Ok(msg) = MobilityMessage::parse(data) else {
        return;
    };
    let bytes = msg.to_bytes();
    assert_eq!(bytes.len(), msg.buffer_len());
    assert_eq!(bytes.len() % 8, 0);
    let again = MobilityMessage::parse(&bytes).expect("an emitted message parses");
    assert_eq!(again, msg);
    assert_eq!(again.to_bytes(), bytes, "emission is canonical");
    let view = MobilityHeader::new_checked(&bytes[..]).expect("an emitted message is valid");
    assert_eq!(view.authenticator_range(), msg.authenticator_range());
});
