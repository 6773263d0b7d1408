//! A recording file of any content: the reader returns an error naming the offset, never
//! panics, and every item it yields goes through the event decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netlat::record::{Reader, Record};
use netlat_core::event;

fuzz_target!(|data: &[u8]| {
    let Ok((_header, mut reader)) = Reader::new(data, "fuzz") else {
        return;
    };
    while let Ok(Some(rec)) = reader.next_record() {
        if let Record::Item(bytes) = rec {
            let _ = event::decode(&bytes);
        }
    }
    let _ = reader.offset();
});
